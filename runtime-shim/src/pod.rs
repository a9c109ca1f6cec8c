//! Containers on the host: preparing one (image lease, layer disks, writable disk, spec,
//! record), the files it owns, and removing it. A CLI container is a pod of one: its own VM,
//! run by its own monitor process (see [`crate::monitor`]).

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironpod_images::{Digest, ImageStore};

use crate::spec::{self, RunOptions};
use crate::state::{status, Record, State, StateError};

/// Per-pod runtime files (sockets): `/run/ironpod/pods/<id>/`.
pub const PODS_RUN_DIR: &str = "/run/ironpod/pods";
/// Size of a container's writable disk (sparse: only what is written takes space).
pub const WRITABLE_DISK_BYTES: u64 = 8 << 30;

/// Errors managing containers.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Image store.
    #[error(transparent)]
    Image(#[from] ironpod_images::ImageError),
    /// Container database.
    #[error(transparent)]
    State(#[from] StateError),
    /// Spec.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// A file operation.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The operation does not fit the container's state.
    #[error("{0}")]
    State2(String),
    /// The pod monitor failed.
    #[error("{0}")]
    Monitor(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PodError {
    let what = what.into();
    move |source| PodError::Io { what, source }
}

/// `<root>/containers/<id>/`: the container's log, writable disk and spec.
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join("containers").join(id)
}

/// The container's log file.
pub fn log_path(root: &Path, id: &str) -> PathBuf {
    container_dir(root, id).join("ctr.log")
}

/// The container's writable disk.
pub fn writable_disk(root: &Path, id: &str) -> PathBuf {
    container_dir(root, id).join("rw.ext4")
}

/// The pod's runtime directory.
pub fn run_dir(id: &str) -> PathBuf {
    Path::new(PODS_RUN_DIR).join(id)
}

/// The monitor's attach socket.
pub fn attach_socket(id: &str) -> PathBuf {
    run_dir(id).join("attach.sock")
}

/// The lease holder name of a container in the image store.
pub fn lease_holder(id: &str) -> String {
    format!("container:{id}")
}

/// The virtio-blk serial the VMM gives a disk file (the first 20 bytes of its name).
pub fn disk_serial(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.chars().take(20).collect()
}

fn random_hex(bytes: usize) -> Result<String, PodError> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(io("read /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

const ADJECTIVES: [&str; 16] = [
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "swift", "witty", "zesty",
];
const NOUNS: [&str; 16] = [
    "otter", "falcon", "badger", "heron", "lynx", "marten", "orca", "panda", "quokka", "raven",
    "salmon", "tapir", "urchin", "vole", "walrus", "yak",
];

fn generated_name(id: &str) -> String {
    let b = u8::from_str_radix(&id[..2], 16).unwrap_or(0);
    format!("{}_{}_{}", ADJECTIVES[(b >> 4) as usize], NOUNS[(b & 15) as usize], &id[2..6])
}

/// Checks a `--name`: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, as Docker.
pub fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        && n.len() <= 128
}

/// Makes the sparse ext4 writable disk.
pub fn make_writable_disk(path: &Path) -> Result<(), PodError> {
    let f = fs::File::create(path).map_err(io(format!("create {}", path.display())))?;
    f.set_len(WRITABLE_DISK_BYTES).map_err(io(format!("size {}", path.display())))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
        .arg(path)
        .output()
        .map_err(io("run mkfs.ext4 (install e2fsprogs)"))?;
    if !out.status.success() {
        return Err(PodError::Monitor(format!(
            "mkfs.ext4 {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Creates a container: leases the image, builds its layer disks (once per layer), makes the
/// writable disk and the spec, and records it as `created`.
pub fn create(
    root: &Path,
    store: &ImageStore,
    image: &str,
    name: Option<&str>,
    opts: &RunOptions,
    auto_remove: bool,
) -> Result<Record, PodError> {
    let id = random_hex(32)?;
    let name = match name {
        Some(n) if !valid_name(n) => {
            return Err(PodError::State2(format!(
                "invalid container name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )))
        }
        Some(n) => n.to_string(),
        None => generated_name(&id),
    };
    let state = State::open(root)?;
    if state.find(&name).is_ok_and(|r| r.name == name) {
        return Err(StateError::NameInUse(name).into());
    }
    tracing::info!(%id, "creating container");
    let digest = store.lease(&lease_holder(&id), image)?;
    let result = (|| {
        let config = store.config_of(&digest)?;
        let spec = spec::build(&id, &config, opts)?;
        store.layer_disks_of(&digest)?;
        let dir = container_dir(root, &id);
        fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        make_writable_disk(&writable_disk(root, &id))?;
        let rec = Record {
            id: id.clone(),
            name,
            image: image.to_string(),
            image_digest: digest.to_string(),
            created: ironpod_images::time::now_rfc3339(),
            options: serde_json::to_string(opts).map_err(|e| io("options")(e.into()))?,
            spec: serde_json::to_string(&spec).map_err(|e| io("spec")(e.into()))?,
            status: status::CREATED.into(),
            exit_code: None,
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
            monitor_pid: None,
            monitor_start: None,
            vmm_pid: None,
            guest_pid: None,
            vsock: None,
            auto_remove,
        };
        state.insert(&rec)?;
        tracing::info!(%id, "container created");
        Ok(rec)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(container_dir(root, &id));
        let _ = store.release(&lease_holder(&id));
    }
    result
}

/// The image digest of a record.
pub fn image_digest(rec: &Record) -> Result<Digest, PodError> {
    Ok(Digest::parse(&rec.image_digest)?)
}

/// Start time of a process in clock ticks after boot (to tell a pid from a reused one).
pub fn process_start(pid: i32) -> Option<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the recorded monitor of a container still runs.
pub fn monitor_alive(rec: &Record) -> bool {
    match (rec.monitor_pid, rec.monitor_start) {
        (Some(pid), Some(start)) => process_start(pid) == Some(start),
        (Some(pid), None) => process_start(pid).is_some(),
        _ => false,
    }
}

/// Marks containers whose monitor vanished (killed, host rebooted) as exited with an error.
pub fn reconcile(state: &State, rec: Record) -> Result<Record, PodError> {
    let live = rec.status == status::RUNNING
        || (rec.status == status::CREATED && rec.monitor_pid.is_some());
    if live && !monitor_alive(&rec) {
        state.set_exited(
            &rec.id,
            255,
            false,
            Some("the pod monitor exited unexpectedly"),
            &ironpod_images::time::now_rfc3339(),
        )?;
        if let Some(pid) = rec.vmm_pid {
            // The VMM dies with its monitor (parent-death signal); make sure.
            if process_start(pid).is_some() {
                // SAFETY: kill with integer arguments.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = fs::remove_dir_all(run_dir(&rec.id));
        return Ok(state.find(&rec.id)?);
    }
    Ok(rec)
}

/// Starts the pod monitor for a created container (detached: its own session, no terminal)
/// and waits until the container is created in its VM. With `wait_attach` the monitor starts
/// the program only when a client attaches.
pub fn spawn_monitor(root: &Path, id: &str, wait_attach: bool) -> Result<(), PodError> {
    let exe = std::env::current_exe().map_err(io("find the ironpod binary"))?;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io("pipe")(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two fds nothing else owns.
    let (r, w) = unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    let wfd = w.as_raw_fd();
    let dir = run_dir(id);
    fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let log_path = container_dir(root, id).join("monitor.log");
    let log = fs::File::create(&log_path).map_err(io("monitor log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root").arg(root).arg("__monitor").arg(id).arg("--ready-fd").arg("3");
    if wait_attach {
        cmd.arg("--wait-attach");
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
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
    let child = cmd.spawn().map_err(io("start the pod monitor"))?;
    drop(w);
    let pid = child.id() as i32;
    State::open(root)?.set_monitor(id, pid, process_start(pid))?;
    // Reap it in the background when it ends: the CLI may outlive it (`run` attached).
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    let mut line = String::new();
    BufReader::new(fs::File::from(r))
        .read_line(&mut line)
        .map_err(io("read from the pod monitor"))?;
    let line = line.trim_end();
    tracing::info!(%id, line, "monitor reported");
    if line == "ok" {
        return Ok(());
    }
    let msg = line.strip_prefix("error: ").unwrap_or(line);
    if msg.is_empty() {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        return Err(PodError::Monitor(format!(
            "the pod monitor died during start-up: {}",
            log.trim()
        )));
    }
    Err(PodError::Monitor(msg.to_string()))
}

/// Waits until the container is no longer running (or `timeout` passes).
pub fn wait_exited(root: &Path, id: &str, timeout: Option<Duration>) -> Result<Record, PodError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let state = State::open(root)?;
    loop {
        let rec = reconcile(&state, state.find(id)?)?;
        let live = rec.status == status::RUNNING
            || (rec.status == status::CREATED && rec.monitor_pid.is_some());
        if !live {
            return Ok(rec);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(rec);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to `timeout`) for a container's monitor to finish taking its pod down, then
/// kills what is left of it.
pub fn wait_monitor_gone(rec: &Record, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while monitor_alive(rec) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if monitor_alive(rec) {
        if let Some(pid) = rec.monitor_pid {
            // SAFETY: kill with integer arguments; the pid is the recorded, still-live monitor.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Removes a stopped container: its files, record and image lease. A monitor still taking
/// the pod down is waited for first.
pub fn remove(root: &Path, store: &ImageStore, id: &str) -> Result<(), PodError> {
    let state = State::open(root)?;
    if let Ok(rec) = state.find(id) {
        let me = Some(std::process::id() as i32);
        if rec.status == status::EXITED && rec.monitor_pid != me {
            wait_monitor_gone(&rec, Duration::from_secs(30));
        }
    }
    let dir = container_dir(root, id);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))?;
    }
    let _ = fs::remove_dir_all(run_dir(id));
    state.delete(id)?;
    store.release(&lease_holder(id))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_serials() {
        assert!(valid_name("web-1.a_b"));
        for bad in ["", "-x", "a/b", "a b", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        let n = generated_name("a7ffffff");
        assert!(valid_name(&n), "{n}");
        assert_eq!(
            disk_serial(Path::new("/x/0123456789abcdef0123456789.erofs")),
            "0123456789abcdef0123"
        );
        assert_eq!(disk_serial(Path::new("/x/rw.ext4")), "rw.ext4");
    }

    #[test]
    fn own_process_start_is_known() {
        let me = std::process::id() as i32;
        assert!(process_start(me).is_some());
        assert_eq!(process_start(-1), None);
    }
}
