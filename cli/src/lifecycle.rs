//! Container commands that end containers: kill, stop, rm, wait.

use std::path::Path;
use std::time::Duration;

use ironpod_images::ImageStore;
use ironpod_pods::{lifecycle, pod};
use ironpod_state::Record;

use crate::containers::{find, rt};
use crate::Failure;

pub use ironpod_pods::lifecycle::parse_signal;

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

/// Does `work` for each container named, as Docker's commands do: what it returns is
/// printed (the name, for most), a failure is reported and the rest still go; 1 if any
/// failed.
fn each(containers: &[String], mut work: impl FnMut(&str) -> Result<String, Failure>) -> i32 {
    let mut code = 0;
    for c in containers {
        match work(c) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    code
}

/// `ironpod kill`.
pub fn kill(root: &Path, a: KillArgs) -> Result<i32, Failure> {
    let sig = parse_signal(&a.signal).map_err(Failure::Usage)?;
    Ok(each(&a.containers, |c| {
        find(root, c).and_then(|r| lifecycle::kill(root, &r, sig).map_err(rt))?;
        Ok(c.to_string())
    }))
}

/// Stops a running container: its stop signal, then SIGKILL after `timeout`.
pub fn stop_one(root: &Path, r: &Record, timeout: Duration) -> Result<(), Failure> {
    lifecycle::stop(root, r, timeout).map_err(rt)
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
    Ok(each(&a.containers, |c| {
        find(root, c).and_then(|r| stop_one(root, &r, Duration::from_secs(a.time)))?;
        Ok(c.to_string())
    }))
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
    Ok(each(&a.containers, |c| {
        let r = find(root, c)?;
        if lifecycle::is_live(&r) {
            if !a.force {
                return Err(rt(format!(
                    "cannot remove container {c}: it is running; stop it first or use --force"
                )));
            }
            stop_one(root, &r, Duration::ZERO)?;
        }
        let store = ImageStore::open(root).map_err(rt)?;
        pod::remove(root, &store, &r.id).map_err(rt)?;
        Ok(c.to_string())
    }))
}

/// `ironpod wait`.
pub fn wait(root: &Path, containers: &[String]) -> Result<i32, Failure> {
    Ok(each(containers, |c| {
        let r = find(root, c).and_then(|r| pod::wait_exited(root, &r.id, None).map_err(rt))?;
        Ok(r.exit_code.unwrap_or(-1).to_string())
    }))
}

/// `ironpod rename`.
pub fn rename(root: &Path, container: &str, name: &str) -> Result<i32, Failure> {
    let r = find(root, container)?;
    lifecycle::rename(root, &r, name).map_err(|e| Failure::Runtime(e.to_string()))?;
    Ok(0)
}

/// `ironpod start`: each container's pod boots in the background.
pub fn start(root: &Path, containers: &[String]) -> Result<i32, Failure> {
    Ok(each(containers, |c| {
        let r = find(root, c)?;
        // Running already: nothing to do, as Docker.
        if !lifecycle::is_live(&r) {
            lifecycle::start(root, &r, false).map_err(rt)?;
        }
        Ok(c.to_string())
    }))
}

/// `ironpod restart`.
pub fn restart(root: &Path, a: StopArgs) -> Result<i32, Failure> {
    Ok(each(&a.containers, |c| {
        let r = find(root, c)?;
        lifecycle::restart(root, &r, Duration::from_secs(a.time)).map_err(rt)?;
        Ok(c.to_string())
    }))
}
