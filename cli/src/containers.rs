//! Container commands that list and read: ps, logs; and what the other container commands
//! share (finding a container, its agent, times and states as text).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironpod_pods::agent_client::AgentClient;
use ironpod_pods::logs;
use ironpod_pods::{paths, pod};
use ironpod_state::{describe, status, Record, State};

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
    ironpod_pods::lifecycle::agent(r).map_err(rt)
}

/// The first 12 characters of an id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Docker's STATUS column.
pub fn status_text(r: &Record) -> String {
    describe::status_text(r, now())
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
                "Id": r.id, "Names": r.name, "Image": r.image, "Command": describe::command_line(&r),
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
        let mut cmd = format!("\"{}\"", describe::command_line(&r));
        if cmd.chars().count() > 22 {
            cmd = format!("{}…\"", cmd.chars().take(20).collect::<String>());
        }
        let _ = writeln!(
            out,
            "{:<14}{:<20}{:<24}{:<20}{:<28}{}",
            short(&r.id),
            r.image,
            cmd,
            format!("{} ago", describe::ago(Some(&r.created), now())),
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
