//! A hostile guest against a VMM started as ironpod starts them (jailed, seccomp filters on,
//! in its own host cgroup): see [`guest`] for what the guest does to its block, network,
//! balloon and vsock devices. It is a hand-made guest, not Linux, so this runs on the host
//! (any KVM) and the attacker owns its "kernel" outright. Needs root, /dev/kvm, `ip` and
//! the static `ironpod-vmm` (`cargo xtask test` builds it); without them it fails and says
//! why.
//!
//! The VMM must come through: the guest runs to its end and resets (exit 0), never a panic,
//! a seccomp kill or a hang; the VMM's own memory stays bounded while the guest floods
//! vsock; its log stays short; the read-only disk is unchanged and no disk grows; nothing is
//! left on the host afterwards.

#[path = "hostile/guest.rs"]
mod guest;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironpod_pods::vm::{RunningVm, VmSpec};
use ironpod_vmm::config::{DiskConfig, NetConfig};
use ironpod_vmm::tiny_guest::{pvh_elf, LOAD_ADDR};

/// The VMM's own memory (anonymous: guest memory is a shared memfd here) may not pass this
/// while the guest floods.
const OWN_MEMORY_BOUND_KIB: u64 = 48 << 10;

fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("this test needs /dev/kvm (read/write): {e}");
    }
}

/// A network namespace with one tap device for the guest's card, removed when dropped.
struct TapNs {
    name: String,
    path: PathBuf,
}

impl TapNs {
    fn new(tap: &str) -> TapNs {
        let name = format!("ironpod-hostile-{}", std::process::id());
        let path = ironpod_net::netns::create(&name).expect("a network namespace");
        for args in [
            vec!["-n", &name, "tuntap", "add", "dev", tap, "mode", "tap"],
            vec!["-n", &name, "link", "set", tap, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        TapNs { name, path }
    }
}

impl Drop for TapNs {
    fn drop(&mut self) {
        let _ = ironpod_net::netns::remove(&self.name);
    }
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Listens on the guest's host port in the VM's directory (as the VMM's user may connect)
/// and keeps every connection without reading: the guest's stream meets a host that does
/// not drain it.
fn listen(vm: &RunningVm) -> (Arc<AtomicUsize>, Arc<AtomicBool>) {
    let path = vm.dir().join(format!("v.sock_{}", guest::HOST_PORT));
    let listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (count, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let (c, s) = (count.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        while !s.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    c.fetch_add(1, Ordering::Relaxed);
                    kept.push(stream);
                    kept.truncate(64);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (count, stop)
}

#[test]
fn a_hostile_guest_gets_nothing_from_its_devices() {
    require_kvm();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let code = guest::program(LOAD_ADDR as u64).expect("assemble the guest");
    std::fs::write(dir.join("kernel"), pvh_elf(&code)).unwrap();
    std::fs::write(dir.join("initrd"), b"not used by this guest").unwrap();
    let noise: Vec<u8> =
        (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("rw.img"), &noise).unwrap();
    std::fs::write(dir.join("ro.img"), &noise).unwrap();
    let files_before: Vec<_> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();

    let tap = TapNs::new("hostile0");
    let mut spec =
        VmSpec::with_defaults_or(Some(dir.join("kernel")), Some(dir.join("initrd"))).unwrap();
    spec.memory_mib = 64;
    spec.shared_memory = true;
    spec.free_page_reporting = true;
    spec.spare_disks = 1;
    spec.disks = vec![
        DiskConfig { path: dir.join("rw.img"), read_only: false },
        DiskConfig { path: dir.join("ro.img"), read_only: true },
    ];
    spec.netns = Some(tap.path.clone());
    spec.net = vec![NetConfig {
        tap: "hostile0".into(),
        netns: Some(tap.path.clone()),
        mac: None,
        mtu: 1500,
    }];
    let mut vm = RunningVm::start(&spec).unwrap_or_else(|e| panic!("start a jailed VMM: {e}"));
    let (pid, vm_dir) = (vm.pid(), vm.dir().to_path_buf());
    let cgroup = format!("vm-{}", vm_dir.file_name().unwrap().to_string_lossy());
    let (connections, stop) = listen(&vm);
    // The start signal: once the guest's vsock is set up (it says `R`), the host connects
    // to it (the request fills an rx buffer; the guest says `C`), again while it has not.
    let console = vm_dir.join("console.log");
    let said = || std::fs::read_to_string(&console).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut signals = Vec::new();
    while !said().contains('C') && vm.try_exit().is_none() && Instant::now() < deadline {
        if said().contains('R') {
            let mut s = UnixStream::connect(vm.vsock_path()).unwrap();
            s.write_all(b"CONNECT 5000\n").unwrap();
            signals.push(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let (mut peak_own, mut status) = (0, None);
    while started.elapsed() < Duration::from_secs(240) {
        if let Some(s) = vm.try_exit() {
            status = Some(s);
            break;
        }
        if let Some(kib) = status_kib(pid, "RssAnon") {
            peak_own = peak_own.max(kib);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let said = said();
    let log = vm.vmm_log();
    stop.store(true, Ordering::Relaxed);
    let Some(status) = status else {
        vm.kill();
        panic!("the VMM did not end in 240 s (guest said {said:?}); its log: {log}");
    };
    eprintln!(
        "hostile guest: {said:?} in {:.1} s; VMM own memory peak {peak_own} KiB; {} host \
         connections; VMM log {} bytes",
        started.elapsed().as_secs_f64(),
        connections.load(Ordering::Relaxed),
        log.len()
    );
    assert!(!log.contains("panicked"), "the VMM panicked: {log}");
    assert_eq!(
        status.code(),
        Some(0),
        "the VMM ended with {} (guest said {said:?}): {log}",
        vm.end_reason(status)
    );
    assert!(said.starts_with("HRC"), "the host's connection never reached the guest: {said:?}");
    assert!(said.ends_with("F23done\n"), "the guest did not get through: {said:?}");
    assert!(connections.load(Ordering::Relaxed) >= 1, "the guest's stream never reached the host");
    assert!(
        peak_own <= OWN_MEMORY_BOUND_KIB,
        "the VMM's own memory reached {peak_own} KiB while the guest flooded"
    );
    assert!(log.len() < 16 << 10, "the guest made the VMM log {} bytes: {log}", log.len());

    // The host is as it was: the read-only disk unchanged, no disk grown, no file made.
    assert!(std::fs::read(dir.join("ro.img")).unwrap() == noise, "the read-only disk changed");
    for d in ["rw.img", "ro.img"] {
        assert_eq!(std::fs::metadata(dir.join(d)).unwrap().len(), 1 << 20, "{d} grew");
    }
    let files_after: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files_after.len(), files_before.len(), "{files_after:?}");
    drop(vm);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the VMM is gone");
    assert!(!vm_dir.exists(), "{} left", vm_dir.display());
    assert_eq!(ironpod_pods::cgroup::PodCgroup::usage_of(&cgroup), None, "cgroup {cgroup} left");
}
