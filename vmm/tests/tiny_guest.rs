//! End-to-end tests of the `ironpod-vmm` binary with tiny hand-made guests (a few bytes of
//! 32-bit code in an ELF with a PVH note). They need /dev/kvm but no Linux-capable KVM, so
//! they run directly on every machine with KVM, including software-nested ones.
//! Configuration errors are tested without KVM.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ironpod_vmm::tiny_guest::{out_char, pvh_elf, reset};

struct Guest {
    dir: tempfile::TempDir,
}

impl Guest {
    fn new(code: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kernel"), pvh_elf(code)).unwrap();
        Guest { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, extra: serde_json::Value) -> (Output, String) {
        let mut cfg = serde_json::json!({
            "vcpus": 1,
            "memory_mib": 64,
            "kernel": self.path("kernel"),
            "serial": self.path("console.log"),
        });
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let cfg_path = self.path("vm.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let out = vmm(&cfg_path);
        let console = std::fs::read_to_string(self.path("console.log")).unwrap_or_default();
        (out, console)
    }
}

fn vmm(cfg: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironpod-vmm")).arg("--config").arg(cfg).output().unwrap()
}

/// These tests need KVM; without it they fail and say so (never skip silently).
fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("these tests need /dev/kvm (read/write): {e}");
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn serial_output_and_reset_exit_zero() {
    require_kvm();
    let mut code = Vec::new();
    for c in b"hello from the guest\n" {
        code.extend(out_char(*c));
    }
    code.extend(reset());
    let g = Guest::new(&code);
    let (out, console) = g.run(serde_json::json!({}));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(console, "hello from the guest\n");
}

#[test]
fn triple_fault_is_a_failure_with_reason() {
    require_kvm();
    // ud2 with an empty IDT: #UD -> #GP -> #DF -> shutdown.
    let g = Guest::new(&[0x0f, 0x0b]);
    let (out, _) = g.run(serde_json::json!({}));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("triple fault"), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "one-line reason: {}", stderr(&out));
}

#[test]
fn virtio_mmio_registers_visible_to_guest() {
    require_kvm();
    let mut code = vec![0xa1, 0x00, 0x00, 0x00, 0xd0]; // mov eax,[0xd0000000]
    code.extend([0x3d, 0x76, 0x69, 0x72, 0x74]); // cmp eax,"virt"
    code.extend([0x75, 0x07]); // jne +7
    code.extend(out_char(b'V'));
    code.extend([0xa1, 0x08, 0x00, 0x00, 0xd0]); // mov eax,[0xd0000008] (device id)
    code.extend([0x83, 0xf8, 0x02]); // cmp eax,2 (block)
    code.extend([0x75, 0x07]);
    code.extend(out_char(b'B'));
    code.extend([0xa1, 0x00, 0x10, 0x00, 0xd0]); // second window: another block device
    code.extend([0x3d, 0x76, 0x69, 0x72, 0x74]);
    code.extend([0x75, 0x07]);
    code.extend(out_char(b'2'));
    code.extend(out_char(b'\n'));
    code.extend(reset());
    let g = Guest::new(&code);
    std::fs::write(g.path("disk0"), vec![0u8; 4096]).unwrap();
    std::fs::write(g.path("disk1"), vec![0u8; 4096]).unwrap();
    let (out, console) = g.run(serde_json::json!({
        "disks": [{"path": g.path("disk0"), "read_only": true}, {"path": g.path("disk1")}]
    }));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(console, "VB2\n");
}

#[test]
fn smp_guest_starts() {
    require_kvm();
    // The boot CPU prints and resets; the other vCPUs wait for a SIPI that never comes.
    let mut code = out_char(b'S');
    code.extend(reset());
    let g = Guest::new(&code);
    let (out, console) = g.run(serde_json::json!({"vcpus": 4}));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(console, "S");
}

#[test]
fn bad_configs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing", String::new(), "cannot read config file"),
        ("garbage", "{not json".into(), "invalid config"),
        ("empty", "{}".into(), "invalid config"),
        ("zero vcpus", r#"{"kernel":"/k","vcpus":0}"#.into(), "vcpus"),
        ("absurd memory", r#"{"kernel":"/k","memory_mib":1000000000000}"#.into(), "memory_mib"),
        ("negative memory", r#"{"kernel":"/k","memory_mib":-1}"#.into(), "invalid config"),
        ("unknown field", r#"{"kernel":"/k","bogus":true}"#.into(), "bogus"),
    ];
    for (name, text, expect) in cases {
        let p = dir.path().join(format!("{}.json", name.replace(' ', "_")));
        if name != "missing" {
            std::fs::write(&p, text).unwrap();
        }
        let out = vmm(&p);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{name}: {}", stderr(&out));
    }
}

#[test]
fn missing_files_and_host_limits_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, pvh_elf(&reset())).unwrap();
    let cases = vec![
        ("missing kernel", serde_json::json!({"kernel": dir.path().join("nope")}), "nope"),
        (
            "missing initrd",
            serde_json::json!({"kernel": kernel, "initrd": dir.path().join("no-initrd")}),
            "no-initrd",
        ),
        (
            "more memory than the host",
            serde_json::json!({"kernel": kernel, "memory_mib": 900_000}),
            "host has only",
        ),
        (
            "missing disk",
            serde_json::json!({"kernel": kernel, "disks": [{"path": dir.path().join("no-disk")}]}),
            "no-disk",
        ),
        ("kernel that is not a kernel", serde_json::json!({"kernel": dir.path()}), "kernel"),
    ];
    for (name, cfg, expect) in cases {
        let p = dir.path().join("vm.json");
        std::fs::write(&p, cfg.to_string()).unwrap();
        let out = vmm(&p);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{name}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{name}: {}", stderr(&out));
    }
}
