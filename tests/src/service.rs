//! `ironpod system service` (the Docker API and the controllers) on a test root, listening
//! on a private socket in it; killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, TestRoot};

/// A running service.
pub struct Service {
    child: Child,
    /// Its Docker API socket (`docker.sock` in the root).
    pub socket: PathBuf,
}

impl Service {
    /// Starts the service; returns once it accepts connections.
    pub fn start(root: &TestRoot) -> Service {
        Self::start_with(root, &[])
    }

    /// As [`Service::start`], with more arguments for `system service`.
    pub fn start_with(root: &TestRoot, extra: &[&str]) -> Service {
        let socket = root.path().join("docker.sock");
        let child = Command::new(bin("ironpod"))
            .env("IRONPOD_ROOT", root.path())
            // The controllers' warnings show in the test's output.
            .env("RUST_LOG", "warn")
            .args(["system", "service", "--socket"])
            .arg(format!("unix://{}", socket.display()))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ironpod system service");
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "the service did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Service { child, socket }
    }

    /// Kills the service with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
