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

/// `ironpod kill`.
pub fn kill(root: &Path, a: KillArgs) -> Result<i32, Failure> {
    let sig = parse_signal(&a.signal).map_err(Failure::Usage)?;
    let mut code = 0;
    for c in &a.containers {
        match find(root, c).and_then(|r| lifecycle::kill(root, &r, sig).map_err(rt)) {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
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
            if lifecycle::is_live(&r) {
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

/// `ironpod rename`.
pub fn rename(root: &Path, container: &str, name: &str) -> Result<i32, Failure> {
    let r = find(root, container)?;
    lifecycle::rename(root, &r, name).map_err(|e| Failure::Runtime(e.to_string()))?;
    Ok(0)
}

/// `ironpod start`: each container's pod boots in the background.
pub fn start(root: &Path, containers: &[String]) -> Result<i32, Failure> {
    let mut code = 0;
    for c in containers {
        let done = find(root, c).and_then(|r| {
            if lifecycle::is_live(&r) {
                return Ok(()); // running already, as Docker
            }
            lifecycle::start(root, &r, false).map_err(rt)
        });
        match done {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `ironpod restart`.
pub fn restart(root: &Path, a: StopArgs) -> Result<i32, Failure> {
    let mut code = 0;
    for c in &a.containers {
        let done = find(root, c)
            .and_then(|r| lifecycle::restart(root, &r, Duration::from_secs(a.time)).map_err(rt));
        match done {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}
