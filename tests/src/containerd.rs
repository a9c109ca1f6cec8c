//! A private containerd for a test: Debian's containerd 1.6, started with its own
//! configuration in a temporary directory, finding `containerd-shim-ironpod-v2` on its PATH,
//! with ironpod's test images imported.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{bin_dir, busybox_rootfs_tar, busybox_rootfs_tar_with, TestRoot};

/// The runtime type the shim serves.
pub const RUNTIME: &str = "io.containerd.ironpod.v2";
/// The CRI sandbox ("pause") image: busybox sleeping forever.
pub const PAUSE_IMAGE: &str = "ironpod.test/pause:1";
/// The busybox image, the same layer as the pause image.
pub const DEMO_IMAGE: &str = "docker.io/library/demo:latest";
/// A busybox image with its own layer (it has `/app.txt`): a pod booted from the pause
/// image must attach it.
pub const APP_IMAGE: &str = "ironpod.test/app:1";
/// The app image plus a committed layer with `/two.txt` ([`Containerd::add_app2_image`]).
pub const APP2_IMAGE: &str = "ironpod.test/app2:1";

pub use crate::text;

/// A running private containerd.
pub struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
    netns: Option<PathBuf>,
    namespace: &'static str,
    /// The demo image's name in containerd.
    pub image: String,
    _images: TestRoot,
}

/// Starts containerd on the configuration in `d` and waits for its socket; with `netns`,
/// containerd (and so CNI's bridge and every pod's host side) lives in that network
/// namespace, not the host's.
fn spawn_daemon(d: &Path, netns: Option<&Path>) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("containerd.log"))
        .expect("containerd log");
    let sock = d.join("containerd.sock");
    let _ = std::fs::remove_file(&sock);
    // containerd finds the shim on its PATH; the shim keeps its cache in the test dir.
    let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new("containerd");
    // A daemon must not outlive the thread that started it (a test, or the shared daemon's
    // thread, which lives as long as the test process): no containerd is left behind by a
    // test process that ends without running its clean-up (an abort, a kill).
    // SAFETY: prctl(2) in the child before exec; async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let ns_file = netns.map(|p| std::fs::File::open(p).expect("open the test's netns"));
    if let Some(f) = &ns_file {
        ironpod_pods::spawn::enter_netns_on_exec(&mut cmd, f);
    }
    let daemon = cmd
        .arg("--config")
        .arg(d.join("config.toml"))
        .env("PATH", path)
        .env("IRONPOD_SHIM_ROOT", d.join("shim"))
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("containerd (apt install containerd)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "containerd did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

fn base_config(d: &Path) -> String {
    format!(
        "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
         [grpc]\n  address = \"{0}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{0}/opt\"\n",
        d.display()
    )
}

/// The CRI plugin: `ironpod` and `runc` runtime handlers, the local pause image, Debian's
/// CNI plugins with the test's own configuration (if it writes one), streaming on loopback
/// only.
fn cri_config(d: &Path) -> String {
    let cri = "[plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        "{cri}]\n  sandbox_image = \"{PAUSE_IMAGE}\"\n  restrict_oom_score_adj = true\n  \
         stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\
         {cri}.cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = \"{0}/cni/conf\"\n\
         {cri}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n\
         {cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         {cri}.containerd.runtimes.ironpod]\n  runtime_type = \"{RUNTIME}\"\n  \
         pod_annotations = [\"org.ironpod.*\"]\n",
        d.display()
    )
}

impl Containerd {
    /// containerd without the CRI plugin, the demo image in the `default` namespace.
    pub fn start() -> Containerd {
        Self::start_with(false, None)
    }

    /// One [`Containerd::start`] shared by the tests of a test process (they run one at a
    /// time): started by the first, handed to each with no task or container left from
    /// the one before, stopped when the process exits.
    pub fn shared() -> &'static Containerd {
        shared(false)
    }

    /// Like [`Containerd::shared`], with the CRI plugin ([`Containerd::start_cri`]).
    pub fn shared_cri() -> &'static Containerd {
        shared(true)
    }

    /// containerd with the CRI plugin (socket: [`Containerd::socket`]); the pause, demo and
    /// app images in the `k8s.io` namespace.
    pub fn start_cri() -> Containerd {
        Self::start_with(true, None)
    }

    /// Like [`Containerd::start_cri`], running in the network namespace `netns` with a CNI
    /// network there: Debian's `bridge` plugin (bridge `iptbr0`, gateway 10.233.0.1) and
    /// `host-local` addresses from 10.233.0.0/24, its state in the test directory.
    pub fn start_cri_with_cni(netns: &Path) -> Containerd {
        Self::start_with(true, Some(netns))
    }

    fn start_with(cri: bool, netns: Option<&Path>) -> Containerd {
        std::fs::create_dir_all("/run/ironpod-tests").expect("mkdir /run/ironpod-tests");
        let dir = tempfile::tempdir_in("/run/ironpod-tests").expect("temp dir");
        let d = dir.path();
        let config = if cri {
            format!("{}{}", base_config(d), cri_config(d))
        } else {
            // (top-level keys go before the tables)
            format!("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n{}", base_config(d))
        };
        std::fs::write(d.join("config.toml"), config).expect("write config");
        if netns.is_some() {
            std::fs::create_dir_all(d.join("cni/conf")).expect("mkdir cni/conf");
            let conf = format!(
                r#"{{"cniVersion": "0.4.0", "name": "ipt", "plugins": [{{"type": "bridge",
                "bridge": "iptbr0", "isGateway": true, "ipMasq": false, "ipam": {{
                "type": "host-local", "dataDir": "{}/cni/ipam",
                "ranges": [[{{"subnet": "10.233.0.0/24"}}]],
                "routes": [{{"dst": "0.0.0.0/0"}}]}}}}]}}"#,
                d.display()
            );
            std::fs::write(d.join("cni/conf/10-ipt.conflist"), conf).expect("write CNI conf");
        }
        let daemon = spawn_daemon(d, netns);
        // The images as an OCI archive, from ironpod's own store.
        let images = TestRoot::with_demo();
        let mut names = vec!["demo".to_string()];
        if cri {
            let tar = d.join("busybox.tar");
            busybox_rootfs_tar(&tar);
            let cmd = r#"CMD ["/bin/sleep", "2147483647"]"#;
            let out = images.ironpod(&["import", "-c", cmd, &tar.to_string_lossy(), PAUSE_IMAGE]);
            assert!(out.status.success(), "import pause: {}", text(&out.stderr));
            let app = d.join("app.tar");
            busybox_rootfs_tar_with(&app, &[("app.txt", "from the app image\n")]);
            let out = images.ironpod(&["import", &app.to_string_lossy(), APP_IMAGE]);
            assert!(out.status.success(), "import app: {}", text(&out.stderr));
            names.extend([PAUSE_IMAGE.to_string(), APP_IMAGE.to_string()]);
        }
        let archive = d.join("images.tar");
        let mut args = vec!["save".to_string()];
        args.extend(names);
        args.extend(["-o".to_string(), archive.to_string_lossy().into_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = images.ironpod(&args);
        assert!(out.status.success(), "save: {}", text(&out.stderr));
        let namespace = if cri { "k8s.io" } else { "default" };
        let c = Containerd {
            dir,
            daemon,
            netns: netns.map(Path::to_path_buf),
            namespace,
            image: DEMO_IMAGE.to_string(),
            _images: images,
        };
        let out = c.ctr(&["images", "import", &archive.to_string_lossy()]);
        assert!(out.status.success(), "import: {}", text(&out.stderr));
        c
    }

    /// Adds [`APP2_IMAGE`] (two layers, both new to a pod booted from the pause image):
    /// made with `ironpod run` + `ironpod commit` (boots a VM), then imported.
    pub fn add_app2_image(&self) {
        let out = self._images.ironpod(&[
            "run",
            "--name",
            "mk-app2",
            APP_IMAGE,
            "sh",
            "-c",
            "echo two > /two.txt",
        ]);
        assert!(out.status.success(), "run for app2: {}", text(&out.stderr));
        let out = self._images.ironpod(&["commit", "mk-app2", APP2_IMAGE]);
        assert!(out.status.success(), "commit app2: {}", text(&out.stderr));
        let _ = self._images.ironpod(&["rm", "mk-app2"]);
        let archive = self.dir().join("app2.tar");
        let out = self._images.ironpod(&["save", APP2_IMAGE, "-o", &archive.to_string_lossy()]);
        assert!(out.status.success(), "save app2: {}", text(&out.stderr));
        let out = self.ctr(&["images", "import", &archive.to_string_lossy()]);
        assert!(out.status.success(), "import app2: {}", text(&out.stderr));
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's gRPC socket (also the CRI's).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Stops containerd (SIGTERM, as a service manager does) and starts it again.
    pub fn restart(&mut self) {
        // SAFETY: kill(2) of the daemon we started.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
        self.daemon = spawn_daemon(self.dir.path(), self.netns.as_deref());
    }

    /// A `ctr` command on this containerd and namespace.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.socket()).arg("-n").arg(self.namespace).args(args);
        cmd
    }

    /// Runs `ctr ARGS` to completion.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).stdin(Stdio::null()).output().expect("ctr")
    }

    /// `ctr task ls` as (id, pid, status).
    pub fn tasks(&self) -> Vec<(String, u32, String)> {
        let out = self.ctr(&["task", "ls"]);
        text(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.to_string(), f.get(1)?.parse().ok()?, f.get(2)?.to_string()))
            })
            .collect()
    }

    /// Waits until task `id` has `status`.
    pub fn wait_status(&self, id: &str, status: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let tasks = self.tasks();
            if tasks.iter().any(|t| t.0 == id && t.2 == status) {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never became {status}: {tasks:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

/// The shared daemons of this process: without and with the CRI plugin.
static SHARED: [OnceLock<Containerd>; 2] = [OnceLock::new(), OnceLock::new()];

/// Stops the shared daemons (run at exit).
extern "C" fn stop_shared() {
    for c in SHARED.iter().filter_map(OnceLock::get) {
        c.stop();
    }
}

/// Starts the shared daemon (`cri`: with the CRI plugin) once, from a thread that lives as
/// long as the process (the daemon's parent-death signal is bound to it), stopped at exit;
/// then clears what an earlier test left in it.
fn shared(cri: bool) -> &'static Containerd {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    let c = SHARED[usize::from(cri)].get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("shared-containerd".into())
            .spawn(move || {
                let started = std::panic::catch_unwind(|| Containerd::start_with(cri, None));
                let _ = tx.send(started);
                loop {
                    std::thread::park();
                }
            })
            .expect("thread for the shared containerd");
        match rx.recv().expect("the shared containerd's thread") {
            Ok(c) => c,
            Err(e) => std::panic::resume_unwind(e),
        }
    });
    // SAFETY: registers a plain function to run at exit.
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(stop_shared);
    });
    c.clear();
    c
}

impl Containerd {
    /// Kills and deletes every task and removes every container.
    fn clear(&self) {
        for (id, _, _) in self.tasks() {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", &id]);
            let _ = self.ctr(&["task", "delete", "-f", &id]);
        }
        let out = self.ctr(&["containers", "ls", "-q"]);
        for id in text(&out.stdout).lines() {
            let _ = self.ctr(&["containers", "rm", id]);
        }
    }

    /// Clears it, stops the daemon, takes its mounts down and removes its directories.
    fn stop(&self) {
        self.clear();
        let pid = self.daemon.id() as i32;
        // SAFETY: kill(2) and waitpid(2) of the daemon we started (not yet reaped: only
        // this function and `restart`, which needs `&mut self`, wait for it).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        // The daemon's mounts (snapshots, CRI sandbox shm) must not keep the directory busy.
        for sub in ["root", "state"] {
            let _ = Command::new("umount").arg("-R").arg(self.dir.path().join(sub)).output();
        }
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let me = self.dir.path().to_string_lossy().into_owned();
            for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                if m.starts_with(&me) {
                    let _ = Command::new("umount").arg("-l").arg(m).output();
                }
            }
        }
        self._images.clean_up();
        // (For an owned daemon its TempDir would do this on drop; a shared one is never
        // dropped.)
        let _ = std::fs::remove_dir_all(self.dir.path());
        let _ = std::fs::remove_dir_all(self._images.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of `key` in `ctr task metrics` output (`memory.usage 1234`).
pub fn metric(metrics: &str, key: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} in {metrics}"))
}

/// Processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = text(&c).replace('\0', " ");
            if c.contains(needle) {
                out.push(c);
            }
        }
    }
    out
}

/// Mount points whose path contains `needle`.
pub fn mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.contains(needle))
        .map(str::to_string)
        .collect()
}
