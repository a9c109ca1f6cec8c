//! Pausing and resuming a running VM through the control API, with a tiny guest that writes
//! lines to its console as fast as it can: paused, the console stops growing; resumed, it
//! grows again. Needs /dev/kvm, not a Linux-capable one.

mod common;

use std::time::Duration;

use common::{grows, kernel, request, size, Vmm};

/// `mov dx,0x3f8; l: mov al,'\n'; out dx,al; jmp l` — a newline at a time, forever.
fn chatty_guest() -> Vec<u8> {
    vec![0x66, 0xba, 0xf8, 0x03, 0xb0, b'\n', 0xee, 0xeb, 0xfb]
}

#[test]
fn pause_stops_the_guest_and_resume_lets_it_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (console, sock) = (dir.path().join("console.log"), dir.path().join("api.sock"));
    let cfg = serde_json::json!({
        "vcpus": 2, "memory_mib": 64, "kernel": kernel(dir.path(), &chatty_guest()),
        "serial": console, "api_socket": sock,
    });
    let _vmm = Vmm::start(dir.path(), "vm", &cfg);
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
