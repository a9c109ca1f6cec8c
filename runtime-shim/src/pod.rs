//! Containers on the host: preparing one (image lease, layer disks, writable disk, spec,
//! record), the files it owns, and removing it. A CLI container is a pod of one: its own VM,
//! run by its own monitor process (see [`crate::monitor`]).

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ironpod_images::{Digest, ImageStore};

use crate::spec::{self, RunOptions};
use crate::state::{status, Record, State, StateError};

pub use crate::monitor_handle::{monitor_binary, MonitorHandle};

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
    /// The program could not be started (Docker's exit code: 126 or 127).
    #[error("{message}")]
    Start {
        /// Exit code.
        code: i32,
        /// Why.
        message: String,
    },
}

/// Maps an I/O error to [`PodError::Io`] with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PodError {
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
    ironpod_vmm::api::serial_of(path)
}

/// A new container id: 64 random hex digits.
pub fn new_id() -> Result<String, PodError> {
    random_hex(32)
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

/// Makes a sparse ext4 disk of [`WRITABLE_DISK_BYTES`] at `path` with mkfs.ext4.
pub fn make_writable_disk(path: &Path) -> Result<(), PodError> {
    let f = fs::File::create(path).map_err(io(format!("create {}", path.display())))?;
    f.set_len(WRITABLE_DISK_BYTES).map_err(io(format!("size {}", path.display())))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        // No resize_inode: its reserved descriptor blocks are 4 MiB of the 4.2 MiB a fresh
        // 8 GiB filesystem writes, and a container's disk is never grown online.
        .args(["-q", "-F", "-m", "0", "-O", "^resize_inode"])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
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

/// Copies a sparse file: only its data ranges (SEEK_DATA/SEEK_HOLE), holes stay holes.
pub fn sparse_copy(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let from = fs::File::open(src)?;
    let to = fs::File::create(dst)?;
    let len = from.metadata()?.len();
    let fd = from.as_raw_fd();
    let mut pos: i64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while (pos as u64) < len {
        // SAFETY: lseek on an fd we own.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: only a hole is left.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        let mut off = data;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], off as u64)?;
            to.write_all_at(&buf[..n], off as u64)?;
            off += n as i64;
        }
        pos = end;
    }
    to.set_len(len)?;
    to.sync_all()
}

/// Makes a container's writable disk: a copy of a per-root template (built once with
/// mkfs.ext4), which takes milliseconds instead of a mkfs run per container.
pub fn make_writable_disk_fast(root: &Path, path: &Path) -> Result<(), PodError> {
    let dir = root.join("templates");
    // The name changes with the mkfs options (v2: no resize_inode), so an old template is
    // not reused.
    let template = dir.join(format!("rw-{}-v2.ext4", WRITABLE_DISK_BYTES >> 30));
    if !template.is_file() {
        fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let tmp = dir.join(format!(".rw-{}.tmp", std::process::id()));
        make_writable_disk(&tmp)?;
        fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io("sync the template"))?;
        fs::rename(&tmp, &template).map_err(io(format!("install {}", template.display())))?;
    }
    sparse_copy(&template, path)
        .map_err(io(format!("copy the writable disk to {}", path.display())))
}

/// A created container and the disks its pod boots with.
pub struct Created {
    /// Its record.
    pub record: Record,
    /// What the monitor needs to start the VM.
    pub launch: crate::monitor::Launch,
    /// What it needs to create the container in it.
    pub prepared: crate::monitor::Prepared,
}

/// Creates a container: leases the image, builds its layer disks (once per layer), makes the
/// writable disk, calls `disks_ready` (the pod's VM can boot from here on, while the rest is
/// prepared), then builds the spec and records the container as `created`.
#[allow(clippy::too_many_arguments)]
pub fn create(
    root: &Path,
    store: &ImageStore,
    id: &str,
    image: &str,
    name: Option<&str>,
    opts: &RunOptions,
    auto_remove: bool,
    disks_ready: impl FnOnce(&crate::monitor::Launch) -> Result<(), PodError>,
) -> Result<Created, PodError> {
    let id = id.to_string();
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
    tracing::debug!("records open");
    if state.find(&name).is_ok_and(|r| r.name == name) {
        return Err(StateError::NameInUse(name).into());
    }
    tracing::info!(%id, "creating container");
    let digest = store.lease(&lease_holder(&id), image)?;
    let result = (|| {
        let layers = store.layer_disks_of(&digest)?;
        tracing::debug!("layer disks ready");
        let dir = container_dir(root, &id);
        fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        make_writable_disk_fast(root, &writable_disk(root, &id))?;
        tracing::debug!("writable disk ready");
        let writable = writable_disk(root, &id);
        let launch = crate::monitor::Launch { layers, writable };
        disks_ready(&launch)?;
        let config = store.config_of(&digest)?;
        let spec = spec::build(&id, &config, opts)?;
        tracing::debug!("spec built");
        let mut rec = Record::new(
            &id,
            &name,
            image,
            &digest.to_string(),
            serde_json::to_string(opts).map_err(|e| io("options")(e.into()))?,
            serde_json::to_string(&spec).map_err(|e| io("spec")(e.into()))?,
        );
        rec.auto_remove = auto_remove;
        state.insert(&rec)?;
        tracing::info!(%id, "container created");
        Ok(Created {
            record: rec,
            launch,
            prepared: crate::monitor::Prepared { options: opts.clone(), spec },
        })
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
        // Its virtiofsd ends with the VMM's connection; the share's mounts stay until now.
        crate::volumes::share::teardown(&rec.id);
        // Its address frees itself (the lease's holder is gone); its namespace does not.
        let _ = crate::netns::remove(&crate::network::pod_namespace(&rec.id));
        return Ok(state.find(&rec.id)?);
    }
    Ok(rec)
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
    crate::volumes::share::teardown(id);
    // Normally gone with the monitor already (and its address lease ended with it).
    let _ = crate::netns::remove(&crate::network::pod_namespace(id));
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
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        {
            use std::os::unix::fs::FileExt;
            let f = fs::File::create(&a).unwrap();
            f.set_len(64 << 20).unwrap();
            f.write_all_at(b"head", 0).unwrap();
            f.write_all_at(b"middle", 32 << 20).unwrap();
        }
        sparse_copy(&a, &b).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        use std::os::unix::fs::MetadataExt;
        assert!(fs::metadata(&b).unwrap().blocks() * 512 < 4 << 20, "holes were filled");
    }

    #[test]
    fn own_process_start_is_known() {
        let me = std::process::id() as i32;
        assert!(process_start(me).is_some());
        assert_eq!(process_start(-1), None);
    }
}
