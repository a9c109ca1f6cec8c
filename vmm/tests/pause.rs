//! Pausing and resuming a running VM through the control API, with a tiny guest that writes
//! lines to its console as fast as it can: paused, the console stops growing; resumed, it
//! grows again. Needs /dev/kvm, not a Linux-capable one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `mov dx,0x3f8; l: mov al,'\n'; out dx,al; jmp l` — a newline at a time, forever.
fn chatty_guest() -> Vec<u8> {
    vec![0x66, 0xba, 0xf8, 0x03, 0xb0, b'\n', 0xee, 0xeb, 0xfb]
}

struct Vmm {
    child: Child,
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(sock: &Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap()
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Waits until the console grew past `from`; panics after 10 s.
fn grows(console: &Path, from: u64) -> u64 {
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

#[test]
fn pause_stops_the_guest_and_resume_lets_it_go_on() {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("this test needs /dev/kvm (read/write): {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, ironpod_vmm::tiny_guest::pvh_elf(&chatty_guest())).unwrap();
    let (console, sock) = (dir.path().join("console.log"), dir.path().join("api.sock"));
    let cfg = serde_json::json!({
        "vcpus": 2, "memory_mib": 64, "kernel": kernel, "serial": console, "api_socket": sock,
    });
    let cfg_path = dir.path().join("vm.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let _vmm = Vmm {
        child: Command::new(env!("CARGO_BIN_EXE_ironpod-vmm"))
            .arg("--config")
            .arg(&cfg_path)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    };
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "no API socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let running = grows(&console, 0);

    assert_eq!(request(&sock, r#""resume""#)["error"]["message"], "the VM is not paused");
    assert_eq!(request(&sock, r#""pause""#), serde_json::json!("paused"));
    // Whatever was in flight has landed; from now on nothing more comes.
    std::thread::sleep(Duration::from_millis(50));
    let paused = size(&console);
    assert!(paused >= running);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(size(&console), paused, "a paused guest wrote to its console");
    assert_eq!(request(&sock, r#""pause""#)["error"]["message"], "the VM is paused already");
    // The API still answers while paused.
    assert!(request(&sock, r#""list_disks""#).get("disks").is_some());

    assert_eq!(request(&sock, r#""resume""#), serde_json::json!("resumed"));
    grows(&console, paused);
    // And again: a second pause works the same.
    assert_eq!(request(&sock, r#""pause""#), serde_json::json!("paused"));
    std::thread::sleep(Duration::from_millis(50));
    let again = size(&console);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(size(&console), again);
    assert_eq!(request(&sock, r#""resume""#), serde_json::json!("resumed"));
    grows(&console, again);
}
