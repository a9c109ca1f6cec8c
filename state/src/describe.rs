//! A record described the way Docker's front ends show it: the STATUS text ("Up 5 seconds",
//! "Exited (0) 2 minutes ago"), human durations and the container's command line.

use ironpod_images::time::parse_rfc3339;

use crate::{status, Record};

/// Docker's human durations: "Less than a second", "5 seconds", "About a minute", …
pub fn human(d: u64) -> String {
    match d {
        0 => "Less than a second".into(),
        1..=59 => format!("{d} second{}", if d == 1 { "" } else { "s" }),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", d / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", d / 3600),
        _ => format!("{} days", d / 86_400),
    }
}

/// How long before `now` (seconds since the epoch) an RFC 3339 time was, in Docker's words.
pub fn ago(t: Option<&str>, now: u64) -> String {
    t.and_then(parse_rfc3339).map(|t| human(now.saturating_sub(t))).unwrap_or_else(|| "?".into())
}

/// Docker's STATUS text of a container at `now` (seconds since the epoch).
pub fn status_text(r: &Record, now: u64) -> String {
    match r.status.as_str() {
        status::RUNNING => {
            let up = format!("Up {}", ago(r.started_at.as_deref(), now));
            // Docker's suffix: "(healthy)", "(unhealthy)", "(health: starting)".
            let health: Option<serde_json::Value> =
                r.health.as_deref().and_then(|h| serde_json::from_str(h).ok());
            match health.as_ref().and_then(|h| h["Status"].as_str()) {
                Some("starting") => format!("{up} (health: starting)"),
                Some(s) if !s.is_empty() => format!("{up} ({s})"),
                _ => up,
            }
        }
        status::EXITED if r.restart.restarting => format!(
            "Restarting ({}) {} ago",
            r.exit_code.unwrap_or(-1),
            ago(r.finished_at.as_deref(), now)
        ),
        status::EXITED => format!(
            "Exited ({}) {} ago",
            r.exit_code.unwrap_or(-1),
            ago(r.finished_at.as_deref(), now)
        ),
        _ => "Created".into(),
    }
}

/// The container's command line (its OCI spec's process arguments), joined by spaces.
pub fn command_line(r: &Record) -> String {
    let spec: serde_json::Value = serde_json::from_str(&r.spec).unwrap_or_default();
    let args: Vec<&str> = spec["process"]["args"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    args.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human(0), "Less than a second");
        assert_eq!(human(1), "1 second");
        assert_eq!(human(5), "5 seconds");
        assert_eq!(human(90), "About a minute");
        assert_eq!(human(600), "10 minutes");
        assert_eq!(human(7200), "2 hours");
        assert_eq!(human(3 * 86_400), "3 days");
        assert_eq!(ago(Some("1970-01-01T00:00:10Z"), 70), "About a minute");
        assert_eq!(ago(Some("junk"), 70), "?");
    }

    #[test]
    fn status_and_command() {
        let spec = r#"{"process":{"args":["sh","-c","exit 3"]}}"#.to_string();
        let mut r = Record::new("a", "n", "demo", "sha256:x", "{}".into(), spec);
        assert_eq!(status_text(&r, 0), "Created");
        assert_eq!(command_line(&r), "sh -c exit 3");
        r.status = status::RUNNING.into();
        r.started_at = Some("1970-01-01T00:00:00Z".into());
        assert_eq!(status_text(&r, 5), "Up 5 seconds");
        r.status = status::EXITED.into();
        r.exit_code = Some(3);
        r.finished_at = Some("1970-01-01T00:00:00Z".into());
        assert_eq!(status_text(&r, 7200), "Exited (3) 2 hours ago");
        r.spec = "not json".into();
        assert_eq!(command_line(&r), "");
    }
}
