//! ironpod as a containerd runtime: Debian's real containerd 1.6 with a private
//! configuration (one shared by the tests, cleared between them; the restart test has its
//! own) runs tasks through `containerd-shim-ironpod-v2` (`ctr run --runtime
//! io.containerd.ironpod.v2`), each in its own pod VM.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironpod_tests::containerd::{metric, processes_with, text, Containerd, RUNTIME};
use ironpod_tests::require_linux_kvm;

/// The pod's writable disk: on the shim's state root, not under /run.
fn disk_dir(c: &Containerd, id: &str) -> PathBuf {
    c.dir().join("shim/pods").join(id)
}

fn assert_pod_gone(c: &Containerd, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shims =
            processes_with(&format!("containerd-shim-ironpod-v2 -namespace default -id {id} "));
        let dir = PathBuf::from("/run/ironpod/shim").join(id);
        let vmms = processes_with(ironpod_tests::JAILED_VMM);
        let disks = disk_dir(c, id);
        if shims.is_empty() && vmms.is_empty() && !dir.exists() && !disks.exists() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: shims {shims:?}, VMMs {vmms:?}, pod dir exists: {}, disk dir exists: {}",
            dir.exists(),
            disks.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ctr_run_shows_the_guest_kernel_and_the_exit_code() {
    let _w = require_linux_kvm();
    let c = Containerd::shared();
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--annotation",
        "org.ironpod.storage-size=256m",
        &c.image,
        "t1",
        "sh",
        "-c",
        "uname -r; df -k / | tail -n 1 >&2; echo err >&2; exit 3",
    ]);
    let stdout = text(&out.stdout);
    let guest = stdout.trim();
    // The root's writable disk has the annotation's size (less ext4's own metadata).
    let df = text(&out.stderr);
    let kib: u64 = df.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((200 << 10..=256 << 10).contains(&kib), "df: {df}");
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_string();
    assert!(guest.starts_with("6.12."), "stdout {stdout:?}, stderr {}", text(&out.stderr));
    assert_ne!(guest, host);
    assert!(text(&out.stderr).contains("err"), "stderr {:?}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "containerd log:\n{}", c.log());
    assert_pod_gone(c, "t1");
    assert!(c.tasks().is_empty());
}

#[test]
fn ctr_task_exec_ps_metrics_kill_delete() {
    let _w = require_linux_kvm();
    let c = Containerd::shared();
    let out = c.ctr(&["run", "-d", "--runtime", RUNTIME, &c.image, "t2", "sleep", "600"]);
    assert!(out.status.success(), "run -d: {}\n{}", text(&out.stderr), c.log());
    c.wait_status("t2", "RUNNING", Duration::from_secs(30));
    assert!(disk_dir(c, "t2").join("rw.ext4").is_file(), "the writable disk on the state root");
    assert!(!PathBuf::from("/run/ironpod/shim/t2/rw.ext4").exists());
    // Exec: its own stdio and exit code; it sees the container's processes.
    // The pod VM restored the shim's template: 14 read-only slots and the writable one.
    let script = "echo from-exec; ps; ls -d /sys/block/vd* | wc -l; exit 4";
    let out = c.ctr(&["task", "exec", "--exec-id", "e1", "t2", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(4), "exec: {}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(o.contains("from-exec") && o.contains("sleep 600"), "exec output {o:?}");
    assert!(o.lines().any(|l| l.trim() == "15"), "not the template's disk slots: {o:?}");
    // ps: the guest's processes of the task.
    let out = c.ctr(&["task", "ps", "t2"]);
    let ps = text(&out.stdout);
    let pids: Vec<u32> =
        ps.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    assert_eq!(pids.len(), 1, "ps {ps:?}");
    // Metrics: cgroup v2 values from the guest.
    let out = c.ctr(&["task", "metrics", "t2"]);
    let m = text(&out.stdout);
    assert!(out.status.success(), "metrics: {}", text(&out.stderr));
    let value = |k: &str| metric(&m, k);
    assert_eq!(value("pids.current"), 1);
    assert!(value("memory.usage") > 0);
    assert!(value("cpu.usage_usec") > 0);
    // Pause and resume: the cgroup freezer in the guest.
    let out = c.ctr(&["task", "pause", "t2"]);
    assert!(out.status.success(), "pause: {}", text(&out.stderr));
    c.wait_status("t2", "PAUSED", Duration::from_secs(5));
    let out = c.ctr(&["task", "resume", "t2"]);
    assert!(out.status.success(), "resume: {}", text(&out.stderr));
    c.wait_status("t2", "RUNNING", Duration::from_secs(5));
    // Kill: the task stops with the signal's status, delete cleans up.
    let out = c.ctr(&["task", "kill", "-s", "KILL", "t2"]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    c.wait_status("t2", "STOPPED", Duration::from_secs(20));
    let out = c.ctr(&["task", "delete", "t2"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    let out = c.ctr(&["containers", "rm", "t2"]);
    assert!(out.status.success(), "rm: {}", text(&out.stderr));
    assert_pod_gone(c, "t2");
}

#[test]
fn killing_the_vmm_stops_the_task() {
    let _w = require_linux_kvm();
    let c = Containerd::shared();
    let out = c.ctr(&["run", "-d", "--runtime", RUNTIME, &c.image, "t3", "sleep", "600"]);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    c.wait_status("t3", "RUNNING", Duration::from_secs(30));
    let pid = c.tasks().iter().find(|t| t.0 == "t3").map(|t| t.1).unwrap();
    let cmd = text(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap());
    assert!(cmd.contains("ironpod-vmm"), "task pid {pid} is the VMM: {cmd:?}");
    // SAFETY: kill(2) of the VMM process we just identified.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    c.wait_status("t3", "STOPPED", Duration::from_secs(20));
    let out = c.ctr(&["task", "delete", "t3"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    let _ = c.ctr(&["containers", "rm", "t3"]);
    assert_pod_gone(c, "t3");
}

#[test]
fn ctr_run_with_a_terminal() {
    let _w = require_linux_kvm();
    let c = Containerd::shared();
    // `ctr run -t` needs a terminal of its own: script(1) gives it one, 40x100. This pod
    // boots (the annotation) instead of restoring the template.
    let inner = format!(
        "stty rows 40 cols 100; ctr -a {} run -t --rm --runtime {RUNTIME} \
         --annotation org.ironpod.template=false {} t4 \
         sh -c 'tty; stty size; ls -d /sys/block/vd* | wc -l; exit 5'",
        c.socket().display(),
        c.image
    );
    let out = Command::new("script")
        .args(["-qefc", &inner, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux)");
    let o = text(&out.stdout);
    // As with runc, the terminal is one of the container's own devpts (and its console).
    assert!(o.contains("/dev/pts/0"), "tty output {o:?}, stderr {}", text(&out.stderr));
    assert!(o.contains("40 100"), "terminal size {o:?}");
    // Booted: its disks are the image's layers and the writable one, not a template's 15
    // slots.
    let disks: Vec<usize> = o.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(matches!(disks[..], [n] if (2..15).contains(&n)), "disks {disks:?}: {o:?}");
    assert_eq!(out.status.code(), Some(5), "output {o:?}");
    assert_pod_gone(c, "t4");
}

#[test]
fn a_containerd_restart_keeps_the_pod() {
    let _w = require_linux_kvm();
    let mut c = Containerd::start();
    let out = c.ctr(&["run", "-d", "--runtime", RUNTIME, &c.image, "t5", "sleep", "600"]);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    c.wait_status("t5", "RUNNING", Duration::from_secs(30));
    let pid = c.tasks().iter().find(|t| t.0 == "t5").map(|t| t.1).unwrap();
    c.restart();
    // containerd finds the shim again through the bundle's address file: same VM.
    c.wait_status("t5", "RUNNING", Duration::from_secs(30));
    assert_eq!(c.tasks().iter().find(|t| t.0 == "t5").map(|t| t.1), Some(pid));
    let out = c.ctr(&["task", "exec", "--exec-id", "e1", "t5", "echo", "still-here"]);
    assert_eq!(text(&out.stdout).trim(), "still-here", "exec: {}", text(&out.stderr));
    let out = c.ctr(&["task", "kill", "-s", "KILL", "t5"]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    c.wait_status("t5", "STOPPED", Duration::from_secs(20));
    let out = c.ctr(&["task", "delete", "t5"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    let _ = c.ctr(&["containers", "rm", "t5"]);
    assert_pod_gone(&c, "t5");
}

#[test]
fn bind_mounts_host_files_pod_shm_and_directories() {
    let _w = require_linux_kvm();
    let c = Containerd::shared();
    let host = tempfile::tempdir_in("/run/ironpod-tests").unwrap();
    let greeting = host.path().join("greeting");
    std::fs::write(&greeting, "hello from the host\n").unwrap();
    let shm = host.path().join("shm");
    std::fs::create_dir(&shm).unwrap();
    let file_mount =
        format!("type=bind,src={},dst=/etc/greeting,options=rbind:ro", greeting.display());
    let shm_mount = format!("type=bind,src={},dst=/dev/shm,options=rbind:rw", shm.display());
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--mount",
        &file_mount,
        "--mount",
        &shm_mount,
        &c.image,
        "t6",
        "sh",
        "-c",
        "cat /etc/greeting; echo x > /dev/shm/f && cat /dev/shm/f; grep ' /dev/shm ' /proc/mounts",
    ]);
    let o = text(&out.stdout);
    assert!(out.status.success(), "run: {o} {}", text(&out.stderr));
    assert!(o.contains("hello from the host"), "{o}");
    assert!(o.contains("x\n") && o.contains("tmpfs"), "shm: {o}");
    // The copy is the guest's: the host file and directory are untouched.
    assert!(std::fs::read_dir(&shm).unwrap().next().is_none());
    assert_pod_gone(c, "t6");
    // A host directory elsewhere is shared with the VM (virtio-fs): writes reach the host.
    let data = host.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let dir_mount = format!("type=bind,src={},dst=/data,options=rbind:rw", data.display());
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--mount",
        &dir_mount,
        &c.image,
        "t7",
        "sh",
        "-c",
        "echo from-the-pod > /data/out",
    ]);
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(data.join("out")).unwrap(), "from-the-pod\n");
    let _ = c.ctr(&["containers", "rm", "t7"]);
    assert_pod_gone(c, "t7");
}

#[test]
fn a_killed_shim_takes_its_pod_down_cleanly() {
    let _w = require_linux_kvm();
    let c = Containerd::shared();
    let out = c.ctr(&["run", "-d", "--runtime", RUNTIME, &c.image, "t8", "sleep", "600"]);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    c.wait_status("t8", "RUNNING", Duration::from_secs(30));
    let vmm = c.tasks().iter().find(|t| t.0 == "t8").map(|t| t.1).unwrap();
    let shims: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = text(&std::fs::read(e.path().join("cmdline")).ok()?).replace('\0', " ");
            cmd.contains("containerd-shim-ironpod-v2 -namespace default -id t8 ").then_some(pid)
        })
        .collect();
    assert_eq!(shims.len(), 1, "one shim serves t8: {shims:?}");
    // As with runc's shim: containerd sees the shim die, runs `delete` for its bundle, and
    // reports the task gone; here that also ends the pod's VM.
    // SAFETY: kill(2) of the shim process we just identified.
    assert_eq!(unsafe { libc::kill(shims[0], libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.tasks().iter().any(|t| t.0 == "t8" && t.2 == "RUNNING") {
        assert!(Instant::now() < deadline, "t8 still running: {:?}", c.tasks());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.ctr(&["task", "delete", "t8"]);
    let _ = c.ctr(&["containers", "rm", "t8"]);
    assert_pod_gone(c, "t8");
    assert!(
        !text(&std::fs::read(format!("/proc/{vmm}/cmdline")).unwrap_or_default())
            .contains("ironpod-vmm"),
        "the VMM outlived its shim"
    );
}

#[test]
fn an_oom_kill_is_published_as_a_task_oom_event() {
    let _w = require_linux_kvm();
    let c = Containerd::shared();
    let mut events = c.ctr_cmd(&["events"]).stdout(Stdio::piped()).spawn().expect("ctr events");
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--memory-limit",
        "67108864",
        &c.image,
        "t9",
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert!(!text(&out.stdout).contains("survived"), "{}", text(&out.stdout));
    assert_eq!(out.status.code(), Some(137), "stderr {}", text(&out.stderr));
    std::thread::sleep(Duration::from_secs(1));
    let _ = events.kill();
    let mut seen = String::new();
    std::io::Read::read_to_string(events.stdout.as_mut().unwrap(), &mut seen).unwrap();
    let _ = events.wait();
    assert!(
        seen.lines().any(|l| l.contains("/tasks/oom") && l.contains("t9")),
        "no OOM event for t9 in:\n{seen}"
    );
    assert_pod_gone(c, "t9");
}
