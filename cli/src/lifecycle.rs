//! Container commands that end containers: kill, stop, rm, wait.

use std::path::Path;
use std::time::Duration;

use ironpod_images::ImageStore;
use ironpod_pods::pod;
use ironpod_protocol::ProcessRef;
use ironpod_state::{status, Record};

use crate::containers::{agent, find, is_running, rt, short};
use crate::Failure;

/// Parses a signal name or number (`TERM`, `SIGTERM`, `15`).
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(format!("invalid signal {s:?}")) };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(format!("invalid signal {s:?}")),
    };
    Ok(n)
}

/// Arguments of `ironpod kill`.
#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// Signal (name or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `ironpod kill`.
pub fn kill(root: &Path, a: KillArgs) -> Result<i32, Failure> {
    let sig = parse_signal(&a.signal).map_err(Failure::Usage)?;
    let mut code = 0;
    for c in &a.containers {
        match find(root, c)
            .and_then(|r| agent(&r)?.signal(&ProcessRef::init(&r.id), sig, false).map_err(rt))
        {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn stop_signal(root: &Path, r: &Record) -> i32 {
    let Ok(store) = ImageStore::open(root) else { return libc::SIGTERM };
    let Ok(d) = pod::image_digest(r) else { return libc::SIGTERM };
    store
        .config_of(&d)
        .ok()
        .and_then(|c| c.config().clone())
        .and_then(|c| c.stop_signal().clone())
        .and_then(|s| parse_signal(&s).ok())
        .unwrap_or(libc::SIGTERM)
}

/// Stops a running container: its stop signal, then SIGKILL after `timeout`.
pub fn stop_one(root: &Path, r: &Record, timeout: Duration) -> Result<(), Failure> {
    if !is_running(r) {
        return Ok(());
    }
    let mut a = agent(r)?;
    let init = ProcessRef::init(&r.id);
    let _ = a.signal(&init, stop_signal(root, r), false);
    let after = pod::wait_exited(root, &r.id, Some(timeout)).map_err(rt)?;
    if is_running(&after) {
        let _ = a.signal(&init, libc::SIGKILL, true);
        let after = pod::wait_exited(root, &r.id, Some(Duration::from_secs(30))).map_err(rt)?;
        if is_running(&after) {
            return Err(rt(format!("container {} did not stop", short(&r.id))));
        }
    }
    Ok(())
}

/// Arguments of `ironpod stop`.
#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `ironpod stop`.
pub fn stop(root: &Path, a: StopArgs) -> Result<i32, Failure> {
    let mut code = 0;
    for c in &a.containers {
        match find(root, c).and_then(|r| stop_one(root, &r, Duration::from_secs(a.time))) {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Arguments of `ironpod rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    force: bool,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `ironpod rm`.
pub fn rm(root: &Path, a: RmArgs) -> Result<i32, Failure> {
    let mut code = 0;
    for c in &a.containers {
        let result = find(root, c).and_then(|r| {
            let live = is_running(&r) || (r.status == status::CREATED && r.monitor_pid.is_some());
            if live {
                if !a.force {
                    return Err(rt(format!(
                        "cannot remove container {c}: it is running; stop it first or use --force"
                    )));
                }
                stop_one(root, &r, Duration::ZERO)?;
            }
            let store = ImageStore::open(root).map_err(rt)?;
            pod::remove(root, &store, &r.id).map_err(rt)
        });
        match result {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `ironpod wait`.
pub fn wait(root: &Path, containers: &[String]) -> Result<i32, Failure> {
    let mut code = 0;
    for c in containers {
        match find(root, c).and_then(|r| pod::wait_exited(root, &r.id, None).map_err(rt)) {
            Ok(r) => println!("{}", r.exit_code.unwrap_or(-1)),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert_eq!(parse_signal("10"), Ok(10));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("NOPE").is_err());
    }
}
