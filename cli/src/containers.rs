//! Container commands that list and read: ps, logs; and what the other container commands
//! share (finding a container, its agent, times and states as text).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironpod_pods::agent_client::AgentClient;
use ironpod_pods::logs;
use ironpod_pods::{paths, pod};
use ironpod_state::{status, Record, State};

use crate::Failure;

pub(crate) fn rt(e: impl std::fmt::Display) -> Failure {
    Failure::Runtime(e.to_string())
}

/// Finds a container and brings its state up to date.
pub fn find(root: &Path, key: &str) -> Result<Record, Failure> {
    let state = State::open(root).map_err(rt)?;
    let rec = state.find(key).map_err(rt)?;
    pod::reconcile(&state, rec).map_err(rt)
}

pub(crate) fn is_running(r: &Record) -> bool {
    r.status == status::RUNNING
}

/// A session with a running container's agent.
pub fn agent(r: &Record) -> Result<AgentClient, Failure> {
    let uds =
        r.vsock.as_deref().filter(|_| is_running(r)).ok_or_else(|| {
            Failure::Runtime(format!("container {} is not running", short(&r.id)))
        })?;
    AgentClient::open(Path::new(uds), Duration::from_secs(30)).map_err(rt)
}

/// The first 12 characters of an id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]Z` to seconds since the epoch.
pub fn parse_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil (inverse of the formatter in ironpod_images::time).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok()
}

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

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn ago(t: Option<&str>) -> String {
    t.and_then(parse_time).map(|t| human(now().saturating_sub(t))).unwrap_or_else(|| "?".into())
}

/// Docker's STATUS column.
pub fn status_text(r: &Record) -> String {
    match r.status.as_str() {
        status::RUNNING => format!("Up {}", ago(r.started_at.as_deref())),
        status::EXITED => {
            format!("Exited ({}) {} ago", r.exit_code.unwrap_or(-1), ago(r.finished_at.as_deref()))
        }
        _ => "Created".into(),
    }
}

fn command_of(r: &Record) -> String {
    let spec: serde_json::Value = serde_json::from_str(&r.spec).unwrap_or_default();
    let args: Vec<String> = spec["process"]["args"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    args.join(" ")
}

/// Arguments of `ironpod ps`.
#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// JSON lines.
    #[arg(long)]
    json: bool,
}

/// `ironpod ps`.
pub fn ps(root: &Path, a: PsArgs) -> Result<i32, Failure> {
    let state = State::open(root).map_err(rt)?;
    let mut rows = Vec::new();
    for r in state.list().map_err(rt)? {
        let r = pod::reconcile(&state, r).map_err(rt)?;
        if a.all || is_running(&r) {
            rows.push(r);
        }
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in rows {
            let _ = writeln!(out, "{}", short(&r.id));
        }
        return Ok(0);
    }
    if a.json {
        for r in rows {
            let v = serde_json::json!({
                "Id": r.id, "Names": r.name, "Image": r.image, "Command": command_of(&r),
                "Created": r.created, "State": r.status, "Status": status_text(&r),
                "ExitCode": r.exit_code, "Error": r.error,
            });
            let _ = writeln!(out, "{v}");
        }
        return Ok(0);
    }
    let _ = writeln!(
        out,
        "{:<14}{:<20}{:<24}{:<20}{:<28}NAMES",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
    );
    for r in rows {
        let mut cmd = format!("\"{}\"", command_of(&r));
        if cmd.chars().count() > 22 {
            cmd = format!("{}…\"", cmd.chars().take(20).collect::<String>());
        }
        let _ = writeln!(
            out,
            "{:<14}{:<20}{:<24}{:<20}{:<28}{}",
            short(&r.id),
            r.image,
            cmd,
            format!("{} ago", ago(Some(&r.created))),
            status_text(&r),
            r.name
        );
    }
    Ok(0)
}

/// Arguments of `ironpod logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Keep following the output.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Container.
    container: String,
}

fn emit(entries: &[logs::Entry], timestamps: bool) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = match e.stream {
            logs::Stream::Stdout => &mut out,
            logs::Stream::Stderr => &mut err,
        };
        if timestamps {
            let _ = write!(w, "{} ", e.time);
        }
        let _ = w.write_all(&e.output());
    }
    let _ = out.flush();
}

/// `ironpod logs`.
pub fn logs_cmd(root: &Path, a: LogsArgs) -> Result<i32, Failure> {
    let rec = find(root, &a.container)?;
    let path = paths::log_path(root, &rec.id);
    let tail = if a.tail == "all" {
        None
    } else {
        Some(
            a.tail
                .parse::<usize>()
                .map_err(|_| Failure::Usage(format!("invalid --tail value {:?}", a.tail)))?,
        )
    };
    let (data, mut follower) =
        logs::Follower::read_all(&path).map_err(|e| rt(format!("{}: {e}", path.display())))?;
    let entries = logs::read_entries(&data[..]).map_err(rt)?;
    let shown = match tail {
        Some(n) => logs::tail(&entries, n),
        None => &entries[..],
    };
    emit(shown, a.timestamps);
    if !a.follow {
        return Ok(0);
    }
    loop {
        let running = {
            let r = find(root, &rec.id)?;
            is_running(&r) || (r.status == status::CREATED && r.monitor_pid.is_some())
        };
        let data = follower.poll().map_err(|e| rt(format!("{}: {e}", path.display())))?;
        emit(&logs::read_entries(&data[..]).map_err(rt)?, a.timestamps);
        if !running {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        let t = ironpod_images::time::format_rfc3339(1_700_000_000);
        assert_eq!(parse_time(&t), Some(1_700_000_000));
        assert_eq!(parse_time("2026-11-25T02:03:04.123456789Z").map(|s| s % 60), Some(4));
        assert_eq!(parse_time("junk"), None);
        assert_eq!(human(0), "Less than a second");
        assert_eq!(human(5), "5 seconds");
        assert_eq!(human(90), "About a minute");
        assert_eq!(human(7200), "2 hours");
    }
}
