//! Snapshot and restore of a running VM through the control API, with a tiny guest that
//! counts in memory and writes each count's low byte and a newline to its console: the
//! restored VM goes on from the count the snapshot holds, in a new VMM process, while the
//! memory file stays as written. Refusals: not paused, damaged state, another machine shape.
//! Needs /dev/kvm, not a Linux-capable one.

mod common;

use common::{grows, kernel, request, Vmm};

/// ```text
///     mov dx, 0x3f8
/// l:  inc dword [0x5000]
///     mov al, [0x5000]
///     out dx, al
///     mov al, 10
///     out dx, al
///     jmp l
/// ```
fn counting_guest() -> Vec<u8> {
    vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xff, 0x05, 0x00, 0x50, 0x00, 0x00, // inc dword [0x5000]
        0xa0, 0x00, 0x50, 0x00, 0x00, // mov al, [0x5000]
        0xee, // out dx, al
        0xb0, 0x0a, // mov al, 10
        0xee, // out dx, al
        0xeb, 0xef, // jmp l
    ]
}

fn sha(p: &std::path::Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

#[test]
fn a_restored_vm_goes_on_where_the_snapshot_left_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (c1, sock) = (d.join("c1.log"), d.join("api1.sock"));
    let (state, mem) = (d.join("snap.state"), d.join("snap.mem"));
    let k = kernel(d, &counting_guest());
    let vm1 = Vmm::start(
        d,
        "vm1",
        &serde_json::json!({
            "memory_mib": 64, "kernel": k, "serial": c1, "api_socket": sock, "spare_disks": 1,
        }),
    );
    grows(&c1, 1000);
    let snap = format!(r#"{{"snapshot":{{"state":{state:?},"memory":{mem:?}}}}}"#);
    assert_eq!(request(&sock, &snap)["error"]["message"], "the VM must be paused first");
    assert_eq!(request(&sock, r#""pause""#), serde_json::json!("paused"));
    assert_eq!(request(&sock, &snap), serde_json::json!("snapshotted"));
    let again = request(&sock, &snap)["error"]["message"].as_str().unwrap().to_string();
    assert!(again.contains("exists"), "existing files are not overwritten: {again}");
    let rel = r#"{"snapshot":{"state":"s","memory":"m"}}"#;
    assert_eq!(request(&sock, rel)["error"]["message"], "snapshot paths must be absolute");
    let err = vm1.stop();
    let before = std::fs::read(&c1).unwrap();
    assert!(before.len() > 1000, "{err}");
    // The count the snapshot holds: the last byte written before it (a line may have been
    // cut between the count and its newline).
    let cut = before.last() != Some(&b'\n');
    let last = if cut { before[before.len() - 1] } else { before[before.len() - 2] };
    let mem_sha = sha(&mem);

    // A new VMM, other host-side paths, the same machine.
    let c2 = d.join("c2.log");
    let restore = serde_json::json!({
        "memory_mib": 64, "serial": c2, "spare_disks": 1, "api_socket": d.join("api2.sock"),
        "restore": { "state": state, "memory": mem },
    });
    let vm2 = Vmm::start(d, "vm2", &restore);
    grows(&c2, 64);
    let err = vm2.stop();
    let after = std::fs::read(&c2).unwrap();
    let mut expected = Vec::new();
    if cut {
        expected.push(b'\n');
    }
    for i in 1..=20u8 {
        expected.extend_from_slice(&[last.wrapping_add(i), b'\n']);
    }
    assert_eq!(&after[..expected.len()], &expected[..], "{err}");
    assert_eq!(sha(&mem), mem_sha, "the restored VM's writes never reach the memory file");

    // Refusals, each with its reason and exit status 1.
    let refused = |name: &str, cfg: serde_json::Value, why: &str| {
        let (code, stderr) = Vmm::start(d, name, &cfg).finish();
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(stderr.contains(why), "{name}: {stderr}");
    };
    let mut bigger = restore.clone();
    bigger["memory_mib"] = 128.into();
    bigger["api_socket"] = serde_json::Value::Null;
    refused("bigger", bigger, "memory_mib 64, this configuration 128");
    let damaged = d.join("damaged.state");
    let mut bytes = std::fs::read(&state).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x20;
    std::fs::write(&damaged, bytes).unwrap();
    let mut bad = restore.clone();
    bad["restore"]["state"] = damaged.to_string_lossy().into();
    bad["api_socket"] = serde_json::Value::Null;
    refused("damaged", bad, "checksum mismatch");
    let mut wrong_mem = restore;
    wrong_mem["restore"]["memory"] = k.to_string_lossy().into();
    wrong_mem["api_socket"] = serde_json::Value::Null;
    refused("wrong-memory", wrong_mem, "not an ironpod memory file");
}
