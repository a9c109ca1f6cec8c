//! Where a pod's files are: `<root>/kube/pods/<uid>/` holds its writable disk, its
//! containers' logs (`logs/<container>/<run>.log`) and its kubelet's lock and facts.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A pod's directory.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("kube").join("pods").join(uid)
}

/// The pod's id on the host: its uid without dashes (names its network namespace, cgroup,
/// share and leases).
pub fn pod_id(uid: &str) -> String {
    uid.chars().filter(|c| *c != '-').collect()
}

/// Who holds the pod's image leases.
pub fn lease_holder(pod_id: &str) -> String {
    format!("kube-pod-{pod_id}")
}

/// The log of run `run` (its restart count) of a container.
pub fn log_path(root: &Path, uid: &str, container: &str, run: i64) -> PathBuf {
    pod_dir(root, uid).join("logs").join(container).join(format!("{run}.log"))
}

/// The runs of a container that have logs, oldest first.
pub fn log_runs(root: &Path, uid: &str, container: &str) -> Vec<i64> {
    let dir = pod_dir(root, uid).join("logs").join(container);
    let mut runs: Vec<i64> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    runs.sort_unstable();
    runs
}

/// What a pod's kubelet tells others about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KubeletInfo {
    /// Its pid.
    pub pid: i32,
    /// The VM's vsock socket, once it runs.
    pub vsock: Option<PathBuf>,
    /// The VMM's process id, while the VM runs (`VmmPid` of `inspect`).
    #[serde(default)]
    pub vmm_pid: Option<u32>,
    /// The containers' current runs, by container name.
    #[serde(default)]
    pub containers: std::collections::BTreeMap<String, RunningContainer>,
}

/// A container's current run, for `kube exec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningContainer {
    /// Its id in the guest.
    pub id: String,
    /// Its init process's pid in the guest (an exec'd process takes its environment from
    /// there: the variables, Secrets' values among them, never touch the host's disk).
    pub pid: i32,
    /// Its process without its environment (what an exec'd process is made like: user,
    /// directory, capabilities).
    pub process: oci_spec::runtime::Process,
}

fn info_path(root: &Path, uid: &str) -> PathBuf {
    pod_dir(root, uid).join("kubelet.json")
}

/// Writes the kubelet's facts (whole, by a rename).
pub fn write_info(root: &Path, uid: &str, info: &KubeletInfo) -> std::io::Result<()> {
    let p = info_path(root, uid);
    let tmp = p.with_extension("json.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(info).unwrap_or_default())?;
    }
    fs::rename(tmp, p)
}

/// Reads a pod's kubelet facts, if its kubelet runs.
pub fn read_info(root: &Path, uid: &str) -> Option<KubeletInfo> {
    if !kubelet_running(root, uid) {
        return None;
    }
    serde_json::from_slice(&fs::read(info_path(root, uid)).ok()?).ok()
}

/// The lock a pod's kubelet holds for its whole life: one kubelet per pod, and whether one
/// runs is whether the lock is held.
pub struct KubeletLock {
    _file: fs::File,
}

fn lock_file(root: &Path, uid: &str) -> std::io::Result<fs::File> {
    let dir = pod_dir(root, uid);
    fs::create_dir_all(&dir)?;
    fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("kubelet.lock"))
}

impl KubeletLock {
    /// Takes the lock; `None` when another kubelet holds it.
    pub fn take(root: &Path, uid: &str) -> std::io::Result<Option<KubeletLock>> {
        let f = lock_file(root, uid)?;
        // A look by [`kubelet_running`] holds it shared for a moment: try for a while.
        for _ in 0..40 {
            // SAFETY: flock on a descriptor we own; released when it closes.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Some(KubeletLock { _file: f }));
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Ok(None)
    }
}

/// Whether a kubelet runs for the pod (holds its lock).
pub fn kubelet_running(root: &Path, uid: &str) -> bool {
    // Opened, never made: a look does not bring back a directory just removed.
    let Ok(f) = fs::File::open(pod_dir(root, uid).join("kubelet.lock")) else { return false };
    // SAFETY: flock on a descriptor we own; a shared lock we get is released at once.
    let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    !free
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_tells_whether_a_kubelet_runs() {
        let t = tempfile::tempdir().unwrap();
        assert!(!kubelet_running(t.path(), "u"));
        let lock = KubeletLock::take(t.path(), "u").unwrap().unwrap();
        assert!(kubelet_running(t.path(), "u"));
        assert!(KubeletLock::take(t.path(), "u").unwrap().is_none());
        write_info(t.path(), "u", &KubeletInfo { pid: 5, ..Default::default() }).unwrap();
        assert_eq!(read_info(t.path(), "u").unwrap().pid, 5);
        drop(lock);
        assert!(!kubelet_running(t.path(), "u"));
        assert!(read_info(t.path(), "u").is_none());
        assert_eq!(pod_id("ab-cd"), "abcd");
        std::fs::create_dir_all(pod_dir(t.path(), "u").join("logs/web")).unwrap();
        for r in [2, 0, 10] {
            std::fs::write(log_path(t.path(), "u", "web", r), b"").unwrap();
        }
        assert_eq!(log_runs(t.path(), "u", "web"), [0, 2, 10]);
    }
}
