//! The jail of every VMM, on the host: a tiny hand-made guest (no Linux, so any KVM runs
//! it) in a VMM started as ironpod starts them, then the VMM process looked at from outside.
//! Needs root, /dev/kvm and the static `ironpod-vmm` (`cargo xtask test` builds it); without
//! them the tests fail and say why.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironpod_pods::vm::{RunningVm, VmSpec};
use ironpod_vmm::tiny_guest::{halt, out_char, pvh_elf};

fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("this test needs /dev/kvm (read/write): {e}");
    }
}

fn spec(dir: &Path) -> VmSpec {
    let mut code = out_char(b'J');
    code.extend(halt());
    let (kernel, initrd) = (dir.join("kernel"), dir.join("initrd"));
    std::fs::write(&kernel, pvh_elf(&code)).unwrap();
    std::fs::write(&initrd, b"not used by this guest").unwrap();
    let mut s = VmSpec::with_defaults_or(Some(kernel), Some(initrd)).unwrap();
    s.memory_mib = 64;
    s
}

fn start(spec: &VmSpec) -> RunningVm {
    let vm = RunningVm::start(spec).unwrap_or_else(|e| panic!("start a jailed VMM: {e}"));
    let console = vm.dir().join("console.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&console).unwrap_or_default() != "J" {
        assert!(Instant::now() < deadline, "the guest did not print; VMM: {}", vm.vmm_log());
        std::thread::sleep(Duration::from_millis(10));
    }
    vm
}

fn status_line(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or("");
    line.split_once(':').map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" ")).unwrap()
}

/// Every file and directory under `root`, relative to it (mount points included).
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.display().to_string();
    info.lines().filter(|l| l.contains(&d)).map(str::to_string).collect()
}

#[test]
fn a_jailed_vmm_holds_no_privilege_and_sees_only_its_own_files() {
    require_kvm();
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let vm = start(&spec);
    let pid = vm.pid();
    let uid = vm.uid().expect("jailed");
    assert!(uid >= 1000, "uid {uid}");

    // Its own user and group, no supplementary groups, every capability set empty.
    assert_eq!(status_line(pid, "Uid"), format!("{uid} {uid} {uid} {uid}"));
    let gid = status_line(pid, "Gid");
    assert!(!gid.starts_with("0 "), "gid {gid}");
    assert_eq!(status_line(pid, "Groups"), "");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_line(pid, set), "0000000000000000", "{set}");
    }
    assert_eq!(status_line(pid, "NoNewPrivs"), "1");
    assert_eq!(status_line(pid, "Seccomp"), "2", "filters in place");
    // pid 1 of a pid namespace of its own; its own mount, IPC, UTS and network namespaces.
    assert_eq!(status_line(pid, "NSpid"), format!("{pid} 1"));
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(mine, its, "{ns} namespace");
    }
    // Its root holds only what it needs.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let seen = tree(&root);
    let want: BTreeSet<String> = [
        "console.log",
        "dev",
        "dev/kvm",
        "initrd",
        "ironpod-vmm",
        "kernel",
        "v.sock",
        "vm.json",
        "vmm.log",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(seen, want);
    // The kernel and its own binary are read-only to it; its console log is not a file it
    // can reopen (root's, written through the descriptor it was given).
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    for ro in ["/kernel ", "/initrd ", "/ironpod-vmm "] {
        let line = mounts.lines().find(|l| l.contains(ro)).unwrap_or_else(|| panic!("{ro}"));
        assert!(line.contains(" ro,") || line.contains(" ro "), "{line}");
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| {
        let l = limits.lines().find(|l| l.starts_with(name)).unwrap().to_string();
        l[name.len()..].split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(limit("Max open files"), "4096 4096");
    assert_eq!(limit("Max core file size"), "0 0");
    assert_eq!(limit("Max processes"), "17 17");
    assert_eq!(limit("Max file size"), format!("{0} {0}", 8u64 << 30));

    // In a host cgroup of its own (v2, or the v1 memory, pids and cpu hierarchies), bounded
    // to its guest's memory and the host side's allowance.
    let usage = vm.host_usage().expect("a host cgroup");
    assert_eq!(usage.memory_limit, (64 + ironpod_pods::cgroup::HOST_ALLOWANCE_MIB) << 20);
    assert!(usage.memory > 0 && usage.pids >= 2, "{usage:?}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let name = format!("vm-{}", vm.dir().file_name().unwrap().to_string_lossy());
    assert!(cgroups.lines().any(|l| l.ends_with(&format!("/ironpod/{name}"))), "{cgroups}");

    // Another VMM is another user.
    let other = start(&spec);
    assert_ne!(other.uid(), Some(uid));
    assert_ne!(status_line(other.pid(), "Uid"), status_line(pid, "Uid"));

    // Gone with its VM: the process, the jail's mounts, the directory.
    let dir = vm.dir().to_path_buf();
    drop(vm);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the VMM is gone");
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
    assert!(!dir.exists());
    assert_eq!(ironpod_pods::cgroup::PodCgroup::usage_of(&name), None, "cgroup {name} left");
}
