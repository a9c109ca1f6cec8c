//! Containers in pod microVMs through the `ironpod` CLI: stdio, exit codes, TTY, signals,
//! limits, lifecycle commands, a killed VMM, bad input. Every test boots real guests.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ironpod_tests::pty::Terminal;
use ironpod_tests::{require_linux_kvm, text, TestRoot};
use sha2::{Digest, Sha256};

/// Nothing of ironpod may be left running or mounted once a test's containers are gone.
fn assert_no_leftovers(root: &TestRoot) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let vmms =
            std::process::Command::new("pgrep").args(["-x", "ironpod-vmm"]).output().unwrap();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let root_str = root.path().to_string_lossy().into_owned();
        let pods: Vec<_> = std::fs::read_dir("/run/ironpod/pods")
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        // Pods' network namespaces (`ironpod-<id>`; networks' are `ironpod-net-<id>`).
        let netns: Vec<String> = std::fs::read_dir("/run/netns")
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let pod_netns: Vec<&String> = netns
            .iter()
            .filter(|n| n.starts_with("ironpod-") && !n.starts_with("ironpod-net-"))
            .collect();
        let clean = vmms.stdout.is_empty()
            && !mounts.contains(&root_str)
            && pods.is_empty()
            && pod_netns.is_empty();
        if clean {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leftovers: vmm pids {:?}, pod dirs {:?}, mounts under root: {}, namespaces {:?}",
            text(&vmms.stdout),
            pods.iter().map(|p| p.path()).collect::<Vec<_>>(),
            mounts.contains(&root_str),
            pod_netns
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_separates_stdout_stderr_and_returns_the_exit_code() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let t = Instant::now();
    let out = root.ironpod(&["run", "--rm", "demo", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    println!("ironpod run --rm demo sh -c …: {:?}", t.elapsed());
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(7));
    let out = root.ironpod(&["run", "--rm", "demo", "uname", "-r"]);
    let guest = text(&out.stdout).trim().to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_string();
    assert!(guest.starts_with("6.12."), "guest kernel {guest:?}; stderr {}", text(&out.stderr));
    assert_ne!(guest, host, "uname -r must show the guest kernel");
    // Users from the image's passwd/group, Docker's capabilities, the short id as host name.
    let out = root.ironpod(&[
        "run",
        "--rm",
        "-u",
        "app",
        "demo",
        "sh",
        "-c",
        "id -u; id -g; id -G; echo $HOME",
    ]);
    assert_eq!(text(&out.stdout), "1000\n1000\n1000 2000\n/home/app\n", "{}", text(&out.stderr));
    let out = root.ironpod(&[
        "run",
        "--rm",
        "demo",
        "sh",
        "-c",
        "echo $HOME; grep CapEff /proc/self/status; hostname; \
         d=$(cat /sys/block/vda/dev); mknod /tmp/vda b ${d%:*} ${d#*:} && mknod /tmp/tty c 4 64 \
         && echo made; head -c1 /tmp/vda >/dev/null && echo disk-read; echo x >/tmp/tty && \
         echo console-written; echo x >/dev/null && echo null-written",
    ]);
    let s = text(&out.stdout);
    assert!(s.starts_with("/root\nCapEff:\t00000000a80425fb\n"), "{s}");
    assert_eq!(s.lines().nth(2).map(str::len), Some(12), "{s}");
    // Device nodes: any may be made (Docker's CAP_MKNOD), only pseudo-devices opened — not
    // the VM's disks, nor its serial console (a privileged container may: flood.rs).
    let devices: Vec<&str> = s.lines().skip(3).collect();
    assert_eq!(devices, ["made", "null-written"], "{}", text(&out.stderr));
    let out = root.ironpod(&["run", "--rm", "-u", "ghost", "demo", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("unable to find user ghost"), "{}", text(&out.stderr));
    // Seccomp: the default profile blocks namespace creation; unconfined does not.
    let probe = "grep Seccomp: /proc/self/status; unshare -U true && echo unshared || echo blocked";
    let out = root.ironpod(&["run", "--rm", "demo", "sh", "-c", probe]);
    assert_eq!(text(&out.stdout), "Seccomp:\t2\nblocked\n", "{}", text(&out.stderr));
    let out = root.ironpod(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "demo",
        "sh",
        "-c",
        probe,
    ]);
    assert_eq!(text(&out.stdout), "Seccomp:\t0\nunshared\n", "{}", text(&out.stderr));
    // The writable disk has the size asked for (less ext4's own metadata).
    let out = root.ironpod(&["run", "--rm", "--storage-opt", "size=128m", "demo", "df", "-k", "/"]);
    let df = text(&out.stdout);
    let kib: u64 =
        df.lines().last().and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
    assert!((100 << 10..=128 << 10).contains(&kib), "df: {df} {}", text(&out.stderr));
    // A log is bounded: it rotates at max-size and keeps max-file files; `logs` reads them
    // in order.
    let out = root.ironpod(&[
        "run",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        "demo",
        "sh",
        "-c",
        "i=0; while [ $i -lt 400 ]; do echo line$i; i=$((i+1)); done",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> =
        text(&root.ironpod(&["logs", "chatty"]).stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.last().map(String::as_str), Some("line399"), "{lines:?}");
    let first: usize = lines[0].trim_start_matches("line").parse().unwrap();
    assert!(first > 0, "the oldest lines were rotated away");
    assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line{}", first + i)), "{lines:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&root.ironpod(&["inspect", "chatty"]).stdout).unwrap();
    assert_eq!(v[0]["HostConfig"]["LogConfig"]["Config"]["max-file"], "2");
    let log = std::path::PathBuf::from(v[0]["LogPath"].as_str().unwrap());
    let dir = log.parent().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ctr.log"))
        .collect();
    files.sort();
    assert_eq!(files, ["ctr.log", "ctr.log.1"]);
    for f in &files {
        assert!(std::fs::metadata(dir.join(f)).unwrap().len() <= 2048, "{f}");
    }
    assert!(root.ironpod(&["rm", "chatty"]).status.success());
    // --rm left nothing: no record, no files.
    let ps = root.ironpod(&["ps", "-aq"]);
    assert!(ps.stdout.is_empty(), "ps -a after --rm: {}", text(&ps.stdout));
    assert_eq!(std::fs::read_dir(root.path().join("containers")).unwrap().count(), 0);
    assert_no_leftovers(&root);
}

#[test]
fn twenty_megabytes_through_stdin_come_back_identical() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let mut data = vec![0u8; 20 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut child = root
        .cmd(&["run", "--rm", "-i", "--name", "stream", "demo", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // While the guest floods its vsock streams, the pod's host side stays bounded.
    let host = HostSampler::start(&root, "stream");
    let feeder = std::thread::spawn(move || {
        stdin.write_all(&data).unwrap();
        Sha256::digest(&data)
    });
    let out = child.wait_with_output().unwrap();
    let sent = feeder.join().unwrap();
    let (peak_kib, samples) = host.finish();
    println!(
        "VMM's own memory while 2 x 20 MiB streamed: at most {peak_kib} KiB ({samples} samples)"
    );
    assert!(samples > 0, "the pod's host side was never seen");
    assert!(peak_kib < 64 << 10, "the VMM's own memory grew to {peak_kib} KiB");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 20 << 20);
    assert_eq!(Sha256::digest(&out.stdout), sent, "bytes changed on the way");
    assert_no_leftovers(&root);
}

/// Samples a running container's host side: the VMM's own memory (without guest RAM) and
/// its cgroup's OOM kills, until [`HostSampler::finish`].
struct HostSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u32)>,
}

impl HostSampler {
    fn start(root: &TestRoot, name: &str) -> HostSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (root_dir, name, flag) = (root.path().to_path_buf(), name.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut peak, mut samples, mut pod) = (0u64, 0u32, None);
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if pod.is_none() {
                    let out = std::process::Command::new(ironpod_tests::bin("ironpod"))
                        .env("IRONPOD_ROOT", &root_dir)
                        .args(["inspect", &name])
                        .output()
                        .unwrap();
                    let v: serde_json::Value =
                        serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let vmm = v[0]["Pod"]["VmmPid"].as_u64().filter(|p| *p > 0);
                    let id = v[0]["Id"].as_str().map(str::to_string);
                    pod = vmm.zip(id);
                }
                if let Some((vmm, id)) = &pod {
                    if let Some(kib) = ironpod_pods::vm::overhead_kib(*vmm as u32, 256) {
                        peak = peak.max(kib);
                        samples += 1;
                    }
                    let events = std::fs::read_to_string(format!(
                        "/sys/fs/cgroup/ironpod/{id}/memory.events"
                    ))
                    .unwrap_or_default();
                    assert!(!events.contains("oom_kill 1"), "the host memory limit was hit");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (peak, samples)
        });
        HostSampler { stop, thread }
    }

    /// Peak VMM memory of its own (KiB) and the number of samples.
    fn finish(self) -> (u64, u32) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[test]
fn tty_size_follows_resize_and_signals_reach_the_process() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let script = "tty; stty size; echo ready; read line; stty size; \
                  trap 'echo got-term; exit 3' TERM; echo waiting; while true; do sleep 0.1; done";
    let mut cmd = root.cmd(&["run", "-t", "-i", "--name", "ttytest", "demo", "sh", "-c", script]);
    let (mut term, mut child) = Terminal::spawn(&mut cmd, 24, 80);
    term.wait_for("ready", Duration::from_secs(120));
    assert!(term.seen.contains("24 80"), "initial size: {:?}", term.seen);
    // The terminal is one of the container's own devpts (so `tty` can name it).
    assert!(term.seen.contains("/dev/pts/0\r\n24 80"), "tty: {:?}", term.seen);
    // Resize our terminal: the kernel sends SIGWINCH to ironpod, which resizes the guest's.
    term.resize(40, 132);
    std::thread::sleep(Duration::from_millis(1500));
    term.type_in(b"go\r");
    term.wait_for("waiting", Duration::from_secs(30));
    assert!(term.seen.contains("40 132"), "size after resize: {:?}", term.seen);
    let kill = root.ironpod(&["kill", "-s", "TERM", "ttytest"]);
    assert!(kill.status.success(), "kill: {}", text(&kill.stderr));
    term.wait_for("got-term", Duration::from_secs(30));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    let inspect = root.ironpod(&["inspect", "ttytest"]);
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v[0]["State"]["ExitCode"], 3);
    assert_eq!(v[0]["Config"]["Tty"], true);
    assert!(root.ironpod(&["rm", "ttytest"]).status.success());
    assert_no_leftovers(&root);
}

#[test]
fn memory_limit_kills_with_137_and_cpu_and_pids_limits_apply() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let out = root.ironpod(&[
        "run",
        "--name",
        "oom",
        "--memory",
        "64m",
        "demo",
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "stdout {} stderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("survived"));
    let v: serde_json::Value =
        serde_json::from_slice(&root.ironpod(&["inspect", "oom"]).stdout).unwrap();
    assert_eq!(v[0]["State"]["OOMKilled"], true, "{v}");
    assert_eq!(v[0]["State"]["ExitCode"], 137);
    let out = root.ironpod(&[
        "run",
        "--rm",
        "--cpus",
        "0.5",
        "--pids-limit",
        "20",
        "--memory",
        "96m",
        "demo",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max; \
         for i in $(seq 1 40); do sleep 2 & done; wait; echo done",
    ]);
    let s = text(&out.stdout);
    assert!(s.contains("50000 100000"), "cpu.max: {s}");
    assert!(s.lines().any(|l| l == "20"), "pids.max: {s}");
    assert!(s.lines().any(|l| l == (96u64 << 20).to_string()), "memory.max: {s}");
    assert!(
        text(&out.stderr).contains("fork") || text(&out.stderr).contains("Resource"),
        "pids limit not hit: {}",
        text(&out.stderr)
    );
    assert!(root.ironpod(&["rm", "oom"]).status.success());
    assert_no_leftovers(&root);
}

/// Parses a size as `ironpod stats` prints it (`bytes_human`: `123B`, `1.50KiB`, `64.00MiB`…).
fn parse_human_bytes(s: &str) -> f64 {
    let units = [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, mult) in units {
        if let Some(v) = s.strip_suffix(unit) {
            return v.parse::<f64>().unwrap_or_else(|_| panic!("size {s:?}")) * mult as f64;
        }
    }
    let v = s.strip_suffix('B').unwrap_or_else(|| panic!("size {s:?}"));
    v.parse::<u64>().unwrap_or_else(|_| panic!("size {s:?}")) as f64
}

/// Checks `ironpod stats --no-stream NAME`'s output: the header, then one row for the
/// container (id, name, CPU %, memory usage / limit, memory %, block I/O, PIDS).
fn check_stats(out: &str, id: &str, name: &str, limit: u64, host_limit: u64) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "header and one row: {out}");
    assert_eq!(
        lines[0],
        "CONTAINER ID  NAME                  CPU %    MEM USAGE / LIMIT       MEM %    \
         BLOCK I/O             PIDS  HOST MEM / LIMIT",
        "{out}"
    );
    let f: Vec<&str> = lines[1].split_whitespace().collect();
    // id name cpu% usage / limit mem% read / write pids host-usage / host-limit
    assert_eq!(f.len(), 14, "{out}");
    assert_eq!(f[12], "/", "{out}");
    let host = parse_human_bytes(f[11]);
    assert!(host > 0.0 && host <= host_limit as f64, "host usage within its limit: {out}");
    assert_eq!(parse_human_bytes(f[13]), host_limit as f64, "the pod's host limit: {out}");
    assert_eq!(f[0], &id[..12], "{out}");
    assert_eq!(f[1], name, "{out}");
    let cpu: f64 = f[2].strip_suffix('%').and_then(|v| v.parse().ok()).expect(out);
    assert!(cpu >= 0.0, "{out}");
    assert_eq!((f[4], f[8]), ("/", "/"), "{out}");
    let usage = parse_human_bytes(f[3]);
    assert!(usage > 0.0 && usage <= limit as f64, "usage within the limit: {out}");
    assert_eq!(parse_human_bytes(f[5]), limit as f64, "the --memory limit: {out}");
    let pct: f64 = f[6].strip_suffix('%').and_then(|v| v.parse().ok()).expect(out);
    // MEM % is usage / limit, from the exact byte counts (the printed usage is rounded).
    assert!((pct - usage / limit as f64 * 100.0).abs() < 0.1, "{out}");
    parse_human_bytes(f[7]);
    parse_human_bytes(f[9]);
    let pids: u64 = f[10].parse().expect(out);
    assert!(pids >= 1, "{out}");
}

/// The host side of container `id`'s pod: its VMM runs jailed as a user of its own, in the
/// host cgroup named after the container, whose limits are the pod's.
fn check_host_side(id: &str, memory_max: u64, cpu_max: &str) {
    let cg = std::path::PathBuf::from("/sys/fs/cgroup/ironpod").join(id);
    let read = |f: &str| {
        std::fs::read_to_string(cg.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .trim()
            .to_string()
    };
    let vmm: u32 = read("cgroup.procs")
        .lines()
        .filter_map(|p| p.parse().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "ironpod-vmm\n")
        })
        .unwrap_or_else(|| panic!("no VMM in {}: {}", cg.display(), read("cgroup.procs")));
    assert_eq!(read("memory.max"), memory_max.to_string());
    assert_eq!(read("cpu.max"), cpu_max);
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    assert_eq!(read("pids.max"), (vcpus + 64).to_string());
    assert!(read("memory.events").contains("oom_kill 0"), "{}", read("memory.events"));
    let ps = std::process::Command::new("ps")
        .args(["-o", "user=,args=", "-p", &vmm.to_string()])
        .output()
        .unwrap();
    let ps = text(&ps.stdout);
    assert!(ps.contains("/ironpod-vmm --config /vm.json"), "{ps}");
    assert!(!ps.trim_start().starts_with("root"), "the VMM runs as root: {ps}");
}

/// Another local user (nobody) can neither connect to a running pod's attach socket nor
/// read the state root: `/run/ironpod` and the root are 0700, whatever the modes below.
fn only_root_reaches_the_pod(root: &TestRoot, id: &str) {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    for dir in [std::path::Path::new("/run/ironpod"), root.path()] {
        let mode = std::fs::metadata(dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: {mode:o}", dir.display());
    }
    let sock = format!("/run/ironpod/pods/{id}/attach.sock");
    assert!(std::path::Path::new(&sock).exists(), "{sock}");
    let connect = "import socket, sys\n\
                   s = socket.socket(socket.AF_UNIX)\n\
                   s.connect(sys.argv[1])\n";
    let as_nobody = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        (out.status.success(), text(&out.stderr))
    };
    let (ok, err) = as_nobody(&["python3", "-c", connect, &sock]);
    assert!(!ok && err.contains("Permission denied"), "nobody connected to {sock}: {err}");
    let db = root.path().join("containers.db");
    let (ok, err) = as_nobody(&["cat", db.to_str().unwrap()]);
    assert!(!ok && err.contains("Permission denied"), "nobody read the records: {err}");
}

#[test]
fn detached_container_lifecycle() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let out = root.ironpod(&[
        "run",
        "-d",
        "--name",
        "web",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp/work",
        "--memory",
        "64m",
        "--cpus",
        "1.5",
        "demo",
        "sh",
        "-c",
        "echo \"$GREETING from $(pwd)\"; echo oops >&2; echo line3; exec sleep 600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ps = text(&root.ironpod(&["ps"]).stdout);
    assert!(ps.contains(&id[..12]) && ps.contains("Up ") && ps.contains("web"), "{ps}");
    only_root_reaches_the_pod(&root, &id);
    // Logs: streams apart, tail, survive the pod.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text(&root.ironpod(&["logs", "web"]).stdout).contains("line3") {
        assert!(Instant::now() < deadline, "no logs");
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = root.ironpod(&["logs", "web"]);
    assert_eq!(text(&logs.stdout), "hi from /tmp/work\nline3\n");
    assert_eq!(text(&logs.stderr), "oops\n");
    // --tail counts lines across both streams, in the order they reached the log: stdout
    // and stderr are separate pipes, so "oops" may land before or after "line3".
    let tail = root.ironpod(&["logs", "--tail", "1", "web"]);
    let last = format!("{}{}", text(&tail.stdout), text(&tail.stderr));
    assert!(last == "line3\n" || last == "oops\n", "tail 1: {last:?}");
    let tail = root.ironpod(&["logs", "--tail", "2", "web"]);
    assert_eq!(text(&tail.stdout).lines().count() + text(&tail.stderr).lines().count(), 2);
    let tail = root.ironpod(&["logs", "--tail", "3", "web"]);
    assert_eq!(text(&tail.stdout), "hi from /tmp/work\nline3\n");
    assert_eq!(text(&tail.stderr), "oops\n");
    // exec: exit code, env, user, workdir, stdin.
    let ex = root.ironpod(&[
        "exec",
        "-e",
        "X=1",
        "-u",
        "1000:1000",
        "-w",
        "/",
        "web",
        "sh",
        "-c",
        "echo $X $(id -u) $(pwd); exit 4",
    ]);
    assert_eq!(ex.status.code(), Some(4), "{}", text(&ex.stderr));
    assert_eq!(text(&ex.stdout), "1 1000 /\n");
    let mut c = root
        .cmd(&["exec", "-i", "web", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    assert_eq!(text(&c.wait_with_output().unwrap().stdout), "SHOUT\n");
    assert_eq!(root.ironpod(&["exec", "web", "no-such-cmd"]).status.code(), Some(127));
    // exec as a user named in the image.
    let ex = root.ironpod(&["exec", "-u", "app", "web", "sh", "-c", "id -u; id -G; echo $HOME"]);
    assert_eq!(text(&ex.stdout), "1000\n1000 2000\n/home/app\n", "{}", text(&ex.stderr));
    // attach: stdin in, output out, the container's exit code back.
    let out = root.ironpod(&[
        "run",
        "-d",
        "-i",
        "--name",
        "att",
        "demo",
        "sh",
        "-c",
        "read x; echo got $x; exit 4",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut c =
        root.cmd(&["attach", "att"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = c.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "got hello\n");
    assert_eq!(out.status.code(), Some(4));
    assert!(root.ironpod(&["rm", "att"]).status.success());
    // top and stats.
    let top = text(&root.ironpod(&["top", "web"]).stdout);
    assert!(top.contains("sleep 600"), "{top}");
    let stats = root.ironpod(&["stats", "--no-stream", "web"]);
    assert!(stats.status.success(), "{}", text(&stats.stderr));
    // The guest gets 64 MiB + 128 MiB of overhead, at least 256 MiB.
    check_stats(&text(&stats.stdout), &id, "web", 64 << 20, (256 + 160) << 20);
    check_host_side(&id, (256 + 160) << 20, "150000 100000");
    // rm refuses a running container. stop: `sleep` is PID 1 of its namespace and ignores
    // SIGTERM, so after the grace time it is killed (137), as with Docker.
    assert_eq!(root.ironpod(&["rm", "web"]).status.code(), Some(1));
    let t = Instant::now();
    assert!(root.ironpod(&["stop", "-t", "2", "web"]).status.success());
    assert!(t.elapsed() >= Duration::from_secs(2), "stop did not wait: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(20), "stop took {:?}", t.elapsed());
    assert_eq!(text(&root.ironpod(&["wait", "web"]).stdout).trim(), "137");
    assert!(text(&root.ironpod(&["ps", "-a"]).stdout).contains("Exited (137)"));
    assert_eq!(
        text(&root.ironpod(&["logs", "web"]).stdout),
        "hi from /tmp/work\nline3\n",
        "logs outlive the pod"
    );
    assert!(root.ironpod(&["rm", "web"]).status.success());
    assert!(!root.ironpod(&["logs", "web"]).status.success());
    assert_no_leftovers(&root);
}

#[test]
fn a_killed_vmm_shows_as_exited_with_an_error_and_leaves_nothing() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let out = root.ironpod(&["run", "-d", "--name", "victim", "demo", "sleep", "600"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&root.ironpod(&["inspect", "victim"]).stdout).unwrap();
    let vmm = v[0]["Pod"]["VmmPid"].as_i64().expect("vmm pid") as i32;
    // SAFETY: kill with integer arguments, on the VMM we just started.
    unsafe { libc::kill(vmm, libc::SIGKILL) };
    let t = Instant::now();
    loop {
        let ps = text(&root.ironpod(&["ps", "-a"]).stdout);
        if ps.contains("Exited (") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "not noticed: {ps}");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("killed VMM noticed after {:?}", t.elapsed());
    let v: serde_json::Value =
        serde_json::from_slice(&root.ironpod(&["inspect", "victim"]).stdout).unwrap();
    assert_eq!(v[0]["State"]["ExitCode"], 255, "{v}");
    assert!(
        v[0]["State"]["Error"].as_str().unwrap().starts_with("the pod VM ended unexpectedly"),
        "{v}"
    );
    assert!(text(&root.ironpod(&["ps", "-a"]).stdout).contains("Exited (255)"));
    assert!(root.ironpod(&["rm", "victim"]).status.success());
    assert_no_leftovers(&root);
    // The store is intact: images still listed, and a new container runs.
    assert!(text(&root.ironpod(&["images"]).stdout).contains("demo"));
    assert_eq!(root.ironpod(&["run", "--rm", "demo", "true"]).status.code(), Some(0));
    assert_no_leftovers(&root);
}

#[test]
fn bad_input_gets_clear_errors_and_leaves_nothing_behind() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["run", "--rm", "--pull", "never", "nosuchimage"], 125, "No such image"),
        (&["run", "--rm", "--memory", "lots", "demo", "true"], 125, "invalid size"),
        (&["run", "--rm", "--cpus=-2", "demo", "true"], 125, "cpus"),
        (&["run", "--rm", "--bogus-flag", "demo"], 125, "bogus"),
        (&["run", "--rm", "--name", "bad/name", "demo", "true"], 125, "invalid container name"),
        (&["run", "--rm", "-w", "relative", "demo", "true"], 125, "not absolute"),
        (&["run", "--rm", "--cap-add", "NOT_A_CAP", "demo", "true"], 125, "unknown capability"),
        (&["run", "--rm", "demo"], 125, "no command"),
        (&["run", "--rm", "--log-opt", "compress=true", "demo", "true"], 125, "unknown log opt"),
        (&["run", "--rm", "--storage-opt", "size=1k", "demo", "true"], 125, "out of range"),
        (&["run", "--rm", "--storage-opt", "quota=1", "demo", "true"], 125, "unknown storage opt"),
        (&["run", "--rm", "demo", "/no/such/program"], 127, "no such file"),
        (&["run", "--rm", "demo", "nosuchcmd"], 127, "executable file not found"),
        (&["run", "--rm", "demo", "/etc/passwd"], 126, "ermission denied"),
        (&["exec", "nosuchcontainer", "true"], 125, "No such container"),
    ];
    for (args, code, msg) in cases {
        let out = root.ironpod(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: stderr {err}");
        assert!(err.to_lowercase().contains(&msg.to_lowercase()), "{args:?}: {err}");
    }
    assert!(root.ironpod(&["ps", "-aq"]).stdout.is_empty(), "nothing recorded");
    assert_eq!(
        std::fs::read_dir(root.path().join("containers")).map(|d| d.count()).unwrap_or(0),
        0
    );
    assert_no_leftovers(&root);
}

#[test]
fn commit_round_trip_through_a_registry() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let out = root.ironpod(&[
        "run",
        "--name",
        "builder",
        "demo",
        "sh",
        "-c",
        "echo data > /new-file && rm /etc/image-file && mkdir -p /d && echo x > /d/y",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Stopped container: its pod boots again just to read the layer.
    let c = root.ironpod(&["commit", "-m", "first", "builder", "snap:1"]);
    assert!(c.status.success(), "commit: {}", text(&c.stderr));
    assert!(text(&c.stdout).starts_with("sha256:"));
    let check = "cat /new-file; test -e /etc/image-file && echo still-there || echo gone; cat /d/y";
    let out = root.ironpod(&["run", "--rm", "snap:1", "sh", "-c", check]);
    assert_eq!(text(&out.stdout), "data\ngone\nx\n", "stderr {}", text(&out.stderr));
    let hist = text(&root.ironpod(&["history", "snap:1"]).stdout);
    assert!(hist.contains("first"), "{hist}");
    // Running container: commit while it runs.
    let out = root.ironpod(&[
        "run",
        "-d",
        "--name",
        "live",
        "snap:1",
        "sh",
        "-c",
        "echo more > /more; exec sleep 600",
    ]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !root.ironpod(&["exec", "live", "test", "-e", "/more"]).status.success() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(root.ironpod(&["commit", "live", "snap:2"]).status.success());
    assert!(root.ironpod(&["rm", "-f", "live", "builder"]).status.success());
    // Elsewhere: push, pull into a fresh store, run.
    let reg = ironpod_tests::Registry::start();
    let remote = format!("localhost:{}/snap:2", reg.port);
    assert!(root.ironpod(&["tag", "snap:2", &remote]).status.success());
    let p = root.ironpod(&["push", "-q", &remote]);
    assert!(p.status.success(), "push: {}", text(&p.stderr));
    let other = TestRoot::with_demo();
    let p = other.ironpod(&["pull", "-q", &remote]);
    assert!(p.status.success(), "pull: {}", text(&p.stderr));
    let out = other.ironpod(&["run", "--rm", &remote, "sh", "-c", &format!("{check}; cat /more")]);
    assert_eq!(text(&out.stdout), "data\ngone\nx\nmore\n", "stderr {}", text(&out.stderr));
    assert_no_leftovers(&root);
}
