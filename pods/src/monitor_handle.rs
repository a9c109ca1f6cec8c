//! Starting a pod monitor and handing it its work. The monitor is normally a fork of the
//! calling process (no program to load: under nested virtualization an exec costs ~0.1 s,
//! which `run` would wait for); a caller that already runs threads cannot fork safely and
//! executes the `ironpod-monitor` binary instead.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ironpod_ids::process_start;
use ironpod_state::State;

use crate::error::{io, PodError};
use crate::launch::{Launch, PodShape, Prepared};
use crate::paths::{container_dir, run_dir};

/// The monitor binary: `$IRONPOD_MONITOR`, else `ironpod-monitor` next to the running
/// executable, else on PATH.
pub fn monitor_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONPOD_MONITOR") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("ironpod-monitor")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("ironpod-monitor"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), PodError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io("pipe")(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two fds nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether this process runs a single thread (then it may fork and go on running Rust
/// code in the child).
fn single_threaded() -> bool {
    fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false)
}

/// The monitor process: its pid and the write end of its stdin.
struct Proc {
    pid: i32,
    stdin: Option<fs::File>,
}

impl Proc {
    fn wait(&self) {
        let mut status = 0;
        // SAFETY: waits for our own child; status is a valid int.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

/// Forks the monitor: the child becomes a session leader with the given stdio and runs
/// [`crate::monitor::run`], then exits without running anything of the parent's.
fn fork_monitor(
    root: &Path,
    id: &str,
    shape: &PodShape,
    wait_attach: bool,
    log: fs::File,
    ready_w: OwnedFd,
    ready_r: &OwnedFd,
) -> Result<Proc, PodError> {
    let (in_r, in_w) = pipe()?;
    let null = fs::OpenOptions::new().write(true).open("/dev/null").map_err(io("/dev/null"))?;
    // SAFETY: the caller checked that this process is single-threaded, so the child is a
    // complete copy with no lock held by a thread that does not exist there.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io("fork the pod monitor")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: plain fd calls on fds this process owns.
        let ok = unsafe {
            libc::setsid();
            libc::dup2(in_r.as_raw_fd(), 0) >= 0
                && libc::dup2(null.as_raw_fd(), 1) >= 0
                && libc::dup2(log.as_raw_fd(), 2) >= 0
                && libc::close(in_w.as_raw_fd()) == 0
                && libc::close(ready_r.as_raw_fd()) == 0
        };
        drop((in_r, null, log));
        let code = if ok {
            crate::monitor::run(root, id, shape, wait_attach, fs::File::from(ready_w))
        } else {
            1
        };
        // SAFETY: ends the child without running the parent's exit handlers or flushing
        // its buffers a second time.
        unsafe { libc::_exit(code.clamp(0, 255)) };
    }
    Ok(Proc { pid, stdin: Some(fs::File::from(in_w)) })
}

/// Executes `ironpod-monitor` (for callers that run threads).
fn exec_monitor(
    root: &Path,
    id: &str,
    shape: &PodShape,
    wait_attach: bool,
    log: fs::File,
    ready_w: OwnedFd,
) -> Result<Proc, PodError> {
    let wfd = ready_w.as_raw_fd();
    let mut cmd = Command::new(monitor_binary());
    cmd.arg("--root").arg(root).arg("--ready-fd").arg("3");
    cmd.arg("--vcpus").arg(shape.vcpus.to_string());
    cmd.arg("--memory-mib").arg(shape.memory_mib.to_string());
    if let Some(c) = shape.cpus {
        cmd.arg("--cpus").arg(c.to_string());
    }
    for v in &shape.volumes {
        cmd.arg(if v.read_only { "--volume-ro" } else { "--volume" }).arg(&v.path);
    }
    if let Some(n) = &shape.network {
        cmd.arg("--network").arg(n);
    }
    if shape.template {
        cmd.arg("--template");
    }
    cmd.arg(id);
    if wait_attach {
        cmd.arg("--wait-attach");
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(log);
    // SAFETY: setsid and dup2 are async-signal-safe; nothing else runs in the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io("start the pod monitor"))?;
    let stdin = child.stdin.take().map(|s| {
        // SAFETY: the fd comes out of the ChildStdin that owned it.
        unsafe { fs::File::from_raw_fd(s.into_raw_fd()) }
    });
    // Dropping a Child neither kills nor waits: `Proc::wait` reaps it.
    Ok(Proc { pid: child.id() as i32, stdin })
}

/// A pod monitor process: spawned early (it starts while the caller prepares the
/// container), then handed the [`Launch`] data, which makes it start the VM,
/// and the [`Prepared`] container. Dropped before that, it exits quietly.
pub struct MonitorHandle {
    id: String,
    root: PathBuf,
    child: Option<Proc>,
    ready: Option<OwnedFd>,
    log_path: PathBuf,
    wait_attach: bool,
}

impl MonitorHandle {
    /// Starts the monitor for container `id` (detached: its own session, no terminal); it
    /// starts the pod's VMM and network at once. With `wait_attach` the monitor starts the
    /// program only when a client attaches.
    pub fn spawn(
        root: &Path,
        id: &str,
        shape: &PodShape,
        wait_attach: bool,
    ) -> Result<Self, PodError> {
        let (r, w) = pipe()?;
        ironpod_images::private::private_run_root().map_err(io("create /run/ironpod"))?;
        ironpod_images::private::private_dir(root)
            .map_err(io(format!("create {}", root.display())))?;
        for dir in [run_dir(id), container_dir(root, id)] {
            fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        }
        let log_path = container_dir(root, id).join("monitor.log");
        let log = fs::File::create(&log_path).map_err(io("monitor log"))?;
        let child = if single_threaded() && std::env::var_os("IRONPOD_MONITOR").is_none() {
            fork_monitor(root, id, shape, wait_attach, log, w, &r)?
        } else {
            exec_monitor(root, id, shape, wait_attach, log, w)?
        };
        Ok(MonitorHandle {
            id: id.to_string(),
            root: root.to_path_buf(),
            child: Some(child),
            ready: Some(r),
            log_path,
            wait_attach,
        })
    }

    fn send_line<T: serde::Serialize>(
        &mut self,
        what: &'static str,
        v: &T,
    ) -> Result<(), PodError> {
        let child = self.child.as_mut().ok_or_else(|| PodError::Monitor("monitor gone".into()))?;
        let stdin = child.stdin.as_mut().ok_or_else(|| PodError::Monitor("monitor gone".into()))?;
        let mut text = serde_json::to_vec(v).map_err(|e| io(what)(e.into()))?;
        text.push(b'\n');
        std::io::Write::write_all(stdin, &text).map_err(io(what))
    }

    /// Hands over the disks: the monitor boots the VM at once.
    pub fn boot(&mut self, launch: &Launch) -> Result<(), PodError> {
        self.send_line("hand the launch data to the monitor", launch)
            .map_err(|e| self.early_failure().unwrap_or(e))
    }

    /// Why a monitor that stopped reading already gave up (it said so on the ready pipe).
    fn early_failure(&mut self) -> Option<PodError> {
        let r = self.ready.take()?;
        let mut line = String::new();
        BufReader::new(fs::File::from(r)).read_line(&mut line).ok()?;
        line.trim().strip_prefix("error: ").map(|m| PodError::Monitor(m.to_string()))
    }

    /// Hands over the rest (the container is recorded by now) and waits until the monitor
    /// reports: clients may attach (`wait_attach`), or the container runs.
    pub fn launch(mut self, prepared: &Prepared) -> Result<(), PodError> {
        let id = self.id.clone();
        // A monitor that failed already (the VMM did not start) says why on the ready pipe.
        let sent = self.send_line("hand the container to the monitor", prepared);
        let mut child =
            self.child.take().ok_or_else(|| PodError::Monitor("monitor gone".into()))?;
        drop(child.stdin.take());
        let pid = child.pid;
        State::open(&self.root)?.set_monitor(&id, pid, process_start(pid))?;
        // Reap it in the background when it ends: the CLI may outlive it (`run` attached).
        std::thread::spawn(move || child.wait());
        let r = self.ready.take().ok_or_else(|| PodError::Monitor("monitor gone".into()))?;
        // "attach" (clients may connect), then "ok" (running) or "error: …".
        let mut lines = BufReader::new(fs::File::from(r)).lines();
        loop {
            let line = match lines.next() {
                Some(l) => l.map_err(io("read from the pod monitor"))?,
                None if sent.is_err() => return sent,
                None => {
                    let log = fs::read_to_string(&self.log_path).unwrap_or_default();
                    return Err(PodError::Monitor(format!(
                        "the pod monitor died during start-up: {}",
                        log.trim()
                    )));
                }
            };
            tracing::info!(%id, line, "monitor reported");
            match line.as_str() {
                "attach" if self.wait_attach => return Ok(()),
                "attach" => {}
                "ok" => return Ok(()),
                other => {
                    // "error: MSG", or "error CODE: MSG" when the program could not start.
                    if let Some((code, msg)) =
                        other.strip_prefix("error ").and_then(|r| r.split_once(": "))
                    {
                        if let Ok(code) = code.parse() {
                            return Err(PodError::Start { code, message: msg.to_string() });
                        }
                    }
                    let msg = other.strip_prefix("error: ").unwrap_or(other);
                    return Err(PodError::Monitor(msg.to_string()));
                }
            }
        }
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        // Not launched: closing its stdin makes it exit.
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            c.wait();
            let _ = fs::remove_dir_all(run_dir(&self.id));
            // Never created: its directory holds only the monitor's log.
            let recorded =
                State::open(&self.root).map(|s| s.find(&self.id).is_ok()).unwrap_or(true);
            if !recorded {
                let _ = fs::remove_dir_all(container_dir(&self.root, &self.id));
            }
        }
    }
}
