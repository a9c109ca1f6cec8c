//! `ironpod events`: the state root's event log, as `docker events` shows it — what happened
//! since `--since`, then what happens, until `--until` or Ctrl-C.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ironpod_events::{Event, Filter, Follower};

use crate::Failure;

/// Arguments of `ironpod events`.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Show events since this time (unix seconds, RFC 3339, or a duration back: 10m, 1h30m).
    #[arg(long)]
    since: Option<String>,
    /// Stop at this time (same forms); without it, follow until interrupted.
    #[arg(long)]
    until: Option<String>,
    /// Only events matching KEY=VALUE (container, event, image, label, network, type,
    /// volume); repeatable.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// One JSON object per event (Docker's API message) instead of text.
    #[arg(long)]
    json: bool,
}

fn nanos(v: Option<&str>) -> Result<Option<i64>, Failure> {
    let now = ironpod_events::now_nanos() as f64 / 1e9;
    match v {
        None => Ok(None),
        Some(s) => {
            let secs = match ironpod_images::time::parse_rfc3339(s) {
                Some(t) => t as f64,
                None => ironpod_events::parse_time(s, now).map_err(Failure::Usage)?,
            };
            Ok(Some((secs * 1e9) as i64))
        }
    }
}

/// Docker CLI's line: `TIME TYPE ACTION ID (k=v, …)`.
fn text(e: &Event) -> String {
    let secs = (e.time_nano / 1_000_000_000) as u64;
    let stamp = ironpod_images::time::format_rfc3339(secs);
    let stamp = format!("{}.{:09}Z", stamp.trim_end_matches('Z'), e.time_nano % 1_000_000_000);
    let attrs: Vec<String> = e.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{stamp} {} {} {} ({})", e.kind, e.action, e.id, attrs.join(", "))
}

/// Runs `ironpod events`.
pub fn events(root: &Path, a: EventsArgs) -> Result<i32, Failure> {
    let filter = Filter::parse_args(&a.filter).map_err(|e| Failure::Usage(e.to_string()))?;
    let (since, until) = (nanos(a.since.as_deref())?, nanos(a.until.as_deref())?);
    let start = ironpod_events::now_nanos();
    let mut follower = Follower::new(root);
    let show = |e: &Event| -> Result<(), Failure> {
        let line = if a.json {
            serde_json::json!({
                "Type": e.kind, "Action": e.action, "Actor": {"ID": e.id, "Attributes": e.attributes},
                "scope": "local", "time": e.time_nano / 1_000_000_000, "timeNano": e.time_nano,
            })
            .to_string()
        } else {
            text(e)
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the command quietly.
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|_| Failure::Runtime(String::new()))
    };
    let mut run = || -> Result<(), Failure> {
        if let Some(s) = since {
            let past = ironpod_events::read(root, Some(s), Some(until.unwrap_or(start).min(start)))
                .map_err(|e| Failure::Runtime(format!("event log: {e}")))?;
            for e in past.iter().filter(|e| e.time_nano < start && filter.matches(e)) {
                show(e)?;
            }
        }
        loop {
            if until.is_some_and(|u| ironpod_events::now_nanos() > u) {
                return Ok(());
            }
            for e in follower.poll() {
                if filter.matches(&e) && until.is_none_or(|u| e.time_nano <= u) {
                    show(&e)?;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    match run() {
        Err(Failure::Runtime(m)) if m.is_empty() => Ok(0),
        r => r.map(|()| 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_text() {
        let mut e =
            Event::now("container", "start", "abc").with("name", "web").with("image", "demo");
        e.time_nano = 1_700_000_000_000_000_042;
        assert_eq!(
            text(&e),
            "2023-11-14T22:13:20.000000042Z container start abc (image=demo, name=web)"
        );
    }
}
