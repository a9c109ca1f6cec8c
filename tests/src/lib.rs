//! Shared helpers for the Linux-booting integration tests.
//!
//! These tests need a KVM that can run a Linux guest: hardware virtualization (vmx/svm) with
//! the real kvm_intel/kvm_amd module. On machines without it they **fail** with the reason —
//! `cargo xtask test` runs them inside the rig there (see README.md) — they never skip.

use std::path::PathBuf;

pub mod containerd;
pub mod cri;
pub mod kubelet_cri;
pub mod manifests;
pub mod netns;
pub mod podman;
pub mod pty;
pub mod service;
pub mod web;

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Why this machine cannot boot Linux guests on KVM, or `None` if it can.
pub fn linux_kvm_unavailable() -> Option<String> {
    ironpod_vmm::host::linux_guest_blocker()
}

/// How long one Linux-booting test may take before the whole test process is aborted.
pub const TEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Aborts the test process if the test that created it is still running after its limit:
/// a hung guest or VMM must fail CI quickly and say which test hung, not stall it for an
/// hour. Dropping the guard (the test ended) disarms it.
pub struct Watchdog {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    /// Arms a watchdog for the current test (named after the test's thread).
    pub fn arm(limit: std::time::Duration) -> Watchdog {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let name = std::thread::current().name().unwrap_or("test").to_string();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < limit {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if flag.load(Ordering::SeqCst) {
                    return;
                }
            }
            eprintln!("{name} is still running after {limit:?}: aborting (hung guest or VMM?)");
            let _ = std::process::Command::new("ps").args(["-eo", "pid,stat,etime,args"]).status();
            print_console_tails(std::path::Path::new("/run/ironpod"), 3);
            std::process::abort();
        });
        Watchdog { done }
    }
}

/// Prints the last lines of every guest console log under `dir` (`depth` levels down): what
/// a hung guest last said (an OOM, a panic, a stuck agent step).
fn print_console_tails(dir: &std::path::Path, depth: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.file_name().is_some_and(|n| n == "console.log") {
            let log = std::fs::read(&path).unwrap_or_default();
            let log = String::from_utf8_lossy(&log);
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- last lines of {}:", path.display());
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("  {l}");
            }
        } else if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            print_console_tails(&path, depth - 1);
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Fails the calling test, with the reason, when Linux guests cannot run on this machine;
/// otherwise arms a [`Watchdog`] for it (keep the guard alive for the whole test).
#[must_use = "the watchdog guard must live as long as the test"]
pub fn require_linux_kvm() -> Watchdog {
    if let Some(why) = linux_kvm_unavailable() {
        panic!(
            "this test boots a Linux guest and cannot run here: {why}. \
             Run it through `cargo xtask test`, which uses the rig (README.md) on such machines."
        );
    }
    Watchdog::arm(TEST_LIMIT)
}

/// The directory holding the workspace's built binaries (target/debug or target/release),
/// found from the running executable's own path: target/<profile>/deps/<test> for a test,
/// target/<profile>/<name> for a binary of this package.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("executable's directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary (`ironpod`, `ironpod-vmm`), failing with a hint if it was not
/// built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} not built: run `cargo build --workspace --bins` first", p.display());
    p
}

/// How a jailed VMM's command line starts (its binary and config as it sees them).
pub const JAILED_VMM: &str = "/ironpod-vmm --config /vm.json";

/// The host directory of the VM whose jailed VMM is `pid` (its jail's root, under
/// `/run/ironpod/vms`).
pub fn vm_dir_of(pid: u32) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let its = std::fs::metadata(format!("/proc/{pid}/root/vm.json"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/root/vm.json: {e}"));
    std::fs::read_dir("/run/ironpod/vms")
        .expect("/run/ironpod/vms")
        .flatten()
        .map(|e| e.path())
        .find(|d| {
            std::fs::metadata(d.join("vm.json"))
                .is_ok_and(|m| m.dev() == its.dev() && m.ino() == its.ino())
        })
        .unwrap_or_else(|| panic!("no VM directory holds the config of VMM {pid}"))
}

/// A private `ironpod` state root for one test, with a busybox image named `demo` in it.
pub struct TestRoot {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl TestRoot {
    /// Makes the root under /run (a real tmpfs, also inside the rig) and imports `demo`.
    pub fn with_demo() -> TestRoot {
        std::fs::create_dir_all("/run/ironpod-tests").expect("mkdir /run/ironpod-tests");
        let dir = tempfile::tempdir_in("/run/ironpod-tests").expect("temp root");
        let root = TestRoot { dir };
        let tar = root.dir.path().join("demo.tar");
        busybox_rootfs_tar(&tar);
        let out = root.ironpod(&["import", &tar.to_string_lossy(), "demo"]);
        assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
        root
    }

    /// The root's path.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// An `ironpod` command using this root.
    pub fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(bin("ironpod"));
        c.env("IRONPOD_ROOT", self.path()).args(args);
        c
    }

    /// Runs `ironpod ARGS` to completion.
    pub fn ironpod(&self, args: &[&str]) -> std::process::Output {
        let t = std::time::Instant::now();
        let out = self.cmd(args).stdin(std::process::Stdio::null()).output().expect("run ironpod");
        // What a slow command took, for a slow test's log.
        if t.elapsed() > std::time::Duration::from_secs(2) {
            eprintln!("ironpod {args:?}: {:.2} s", t.elapsed().as_secs_f64());
        }
        out
    }

    /// Runs `ironpod ARGS`, which must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ironpod(args);
        assert!(
            out.status.success(),
            "ironpod {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `ironpod inspect C`, the container's object.
    pub fn inspect(&self, c: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", c])).unwrap();
        v[0].clone()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        self.clean_up();
    }
}

impl TestRoot {
    /// Removes what the root's containers left on the host: containers (running ones too)
    /// and the default network's namespace.
    pub fn clean_up(&self) {
        // Containers left running by a failed test must not outlive it.
        if let Ok(out) = self.cmd(&["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
        // Networks' namespaces stay until `network rm` (the default network's for good).
        if let Ok(out) = self.cmd(&["network", "inspect", "bridge"]).output() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if let Some(ns) = v[0]["Namespace"].as_str() {
                let _ = std::process::Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}

/// Writes a root filesystem tarball with Debian's static busybox and its applets.
pub fn busybox_rootfs_tar(out: &std::path::Path) {
    busybox_rootfs_tar_with(out, &[]);
}

/// Imports image `image`: busybox plus `/PROGRAM`, one of this package's programs, which
/// must be linked statically (`cargo xtask test` links them so: images have no C library).
pub fn import_with_program(root: &TestRoot, program: &str, image: &str) {
    let path = bin(program);
    assert!(
        ironpod_pods::jail::is_static_elf(&path).unwrap(),
        "{} must be linked statically (`cargo xtask test` links it so)",
        path.display()
    );
    let tar = root.path().join(format!("{image}.tar"));
    let code = std::fs::read(&path).unwrap();
    busybox_rootfs_tar_with_files(&tar, &[(program, &code, 0o755)]);
    root.ok(&["import", &tar.to_string_lossy(), image]);
}

/// Like [`busybox_rootfs_tar`], with more files (path, content).
pub fn busybox_rootfs_tar_with(out: &std::path::Path, extra: &[(&str, &str)]) {
    let extra: Vec<(&str, &[u8], u32)> =
        extra.iter().map(|(p, d)| (*p, d.as_bytes(), 0o644)).collect();
    busybox_rootfs_tar_with_files(out, &extra);
}

/// Like [`busybox_rootfs_tar`], with more files (path, content, mode).
pub fn busybox_rootfs_tar_with_files(out: &std::path::Path, extra: &[(&str, &[u8], u32)]) {
    let list =
        std::process::Command::new("/bin/busybox").arg("--list").output().expect("busybox-static");
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create tar"));
    let dir = |b: &mut tar::Builder<std::fs::File>, p: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        b.append_data(&mut h, p, std::io::empty()).unwrap();
    };
    for d in ["bin", "etc", "proc", "sys", "dev", "root", "var", "run"] {
        dir(&mut b, d, 0o755);
    }
    dir(&mut b, "tmp", 0o1777);
    b.append_path_with_name("/bin/busybox", "bin/busybox").unwrap();
    for a in String::from_utf8_lossy(&list.stdout).split_whitespace().filter(|a| *a != "busybox") {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("bin/{a}"), "busybox").unwrap();
    }
    let file = |b: &mut tar::Builder<std::fs::File>, p: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        b.append_data(&mut h, p, data).unwrap();
    };
    let text = |b: &mut tar::Builder<std::fs::File>, p: &str, data: &str| {
        file(b, p, data.as_bytes(), 0o644)
    };
    text(&mut b, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n");
    text(&mut b, "etc/group", "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n");
    text(&mut b, "etc/image-file", "from the image\n");
    for (p, data, mode) in extra {
        file(&mut b, p, data, *mode);
    }
    b.finish().unwrap();
}

/// A private Debian docker-registry on 127.0.0.1 (stopped on drop).
pub struct Registry {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts it and waits until it accepts connections.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir_in("/run/ironpod-tests").expect("registry dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry is installed by `cargo xtask deps`");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "registry did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry { child, port, _dir: dir }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one pod template under state root `root` (its directory): fails unless there is
/// exactly one.
pub fn only_template(root: &std::path::Path) -> PathBuf {
    let base = ironpod_pods::template::templates_dir(root);
    let dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "one template: {dirs:?}");
    dirs.into_iter().next().unwrap()
}
