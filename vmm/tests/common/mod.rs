//! Helpers of the tests that drive a running `ironpod-vmm` through its control API.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running VMM, killed when dropped.
pub struct Vmm {
    /// The process.
    pub child: Child,
}

impl Vmm {
    /// Starts `ironpod-vmm` with the configuration `cfg` (written to `dir/NAME.json`) and
    /// waits for its API socket when the configuration has one.
    pub fn start(dir: &Path, name: &str, cfg: &serde_json::Value) -> Self {
        require_kvm();
        let cfg_path = dir.join(format!("{name}.json"));
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let vmm = Vmm {
            child: Command::new(env!("CARGO_BIN_EXE_ironpod-vmm"))
                .arg("--config")
                .arg(&cfg_path)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        };
        if let Some(sock) = cfg["api_socket"].as_str() {
            let start = Instant::now();
            while !Path::new(sock).exists() {
                assert!(start.elapsed() < Duration::from_secs(10), "no API socket");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        vmm
    }

    /// Ends the VMM with SIGTERM (it flushes its console) and returns its stderr.
    pub fn stop(self) -> String {
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.finish().1
    }

    /// Waits for the VMM to end: its exit status and stderr.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let code = self.child.wait().ok().and_then(|s| s.code());
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (code, err)
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// These tests need KVM; without it they fail and say so (never skip silently).
pub fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("this test needs /dev/kvm (read/write): {e}");
    }
}

/// A tiny guest's kernel file in `dir`.
pub fn kernel(dir: &Path, code: &[u8]) -> PathBuf {
    let k = dir.join("kernel");
    std::fs::write(&k, ironpod_vmm::tiny_guest::pvh_elf(code)).unwrap();
    k
}

/// One request on the control socket; the reply.
pub fn request(sock: &Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap()
}

/// A file's size (0 when it does not exist).
pub fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Waits until the file grew past `from`; panics after 10 s.
pub fn grows(console: &Path, from: u64) -> u64 {
    let start = Instant::now();
    loop {
        let now = size(console);
        if now > from {
            return now;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the console stayed at {from} bytes");
        std::thread::sleep(Duration::from_millis(10));
    }
}
