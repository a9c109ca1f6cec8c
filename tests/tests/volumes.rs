//! Data in pods: tmpfs mounts (`--tmpfs`).

use ironpod_tests::{require_linux_kvm, TestRoot};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tmpfs_mounts_are_sized_noexec_and_gone_with_the_pod() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let out = root.ironpod(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch:size=1m,mode=1777",
        "--tmpfs",
        "/fast:exec",
        "demo",
        "sh",
        "-c",
        "grep -E ' /(scratch|fast) ' /proc/mounts; stat -c %a /scratch; \
         echo data > /scratch/f && cat /scratch/f; \
         dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>&1 | grep -o 'No space left on device'; \
         cp /bin/busybox /scratch/true; cp /bin/busybox /fast/true; \
         /fast/true && echo fast-exec-ok; /scratch/true 2>&1 || echo scratch-noexec; \
         cp /bin/busybox /tmp/x 2>&1 | tail -1",
    ]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    // (busybox picks its applet by name: the copies are called `true`.)
    let scratch = s.lines().find(|l| l.contains(" /scratch ")).expect("/scratch mounted");
    assert!(scratch.starts_with("tmpfs "), "{scratch}");
    for opt in ["nosuid", "nodev", "noexec", "size=1024k"] {
        assert!(scratch.contains(opt), "{opt}: {scratch}");
    }
    let fast = s.lines().find(|l| l.contains(" /fast ")).expect("/fast mounted");
    assert!(!fast.contains("noexec"), "exec overrides the default: {fast}");
    assert!(s.contains("\n1777\n"), "mode: {s}");
    assert!(s.contains("\ndata\n"), "{s}");
    assert!(s.contains("No space left on device"), "the size limit holds: {s}");
    assert!(s.contains("fast-exec-ok"), "{s}");
    assert!(s.contains("scratch-noexec"), "{s}");
    assert!(s.contains("Read-only file system"), "the root stays read-only: {s}");
    // A second pod sees nothing of the first's tmpfs.
    let out = root.ironpod(&["run", "--rm", "--tmpfs", "/scratch", "demo", "ls", "-A", "/scratch"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "");
    // Bad values are refused before anything starts.
    for bad in ["relative", "/x:size=1m,bind", "/", "/a/../b"] {
        let out = root.ironpod(&["run", "--rm", "--tmpfs", bad, "demo", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", text(&out.stderr));
    }
}
