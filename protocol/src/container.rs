//! Container messages: what the host asks of the agent to run OCI containers in the pod VM.
//!
//! A container is created from an OCI runtime spec plus the disks that make its root
//! filesystem; its init process is created stopped and started by a separate request, so the
//! host can attach the stdio streams first (nothing is lost). Exec'd processes follow the
//! same create → attach → start → wait path.

use serde::{Deserialize, Serialize};

/// Which disks make a container's root filesystem. Disks are named by their virtio-blk
/// serial (the VMM uses the first 20 bytes of the backing file's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsDisks {
    /// Read-only image layer disks (erofs), bottom layer first.
    pub layers: Vec<String>,
    /// The pod's writable disk (ext4); the container keeps its upper layer in
    /// `<disk>/containers/<id>/`.
    pub writable: String,
}

/// Creates a container and its init process (stopped until [`crate::RequestBody::StartProcess`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    /// Container id: 1–64 characters of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// The OCI runtime spec (`root.path` is ignored: the root comes from `rootfs`).
    pub spec: Box<oci_spec::runtime::Spec>,
    /// Root filesystem disks.
    pub rootfs: RootfsDisks,
    /// Give the process a stdin stream (otherwise stdin is /dev/null).
    #[serde(default)]
    pub stdin: bool,
}

/// Creates an extra process in a running container (stopped until started).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecProcess {
    /// The container.
    pub container: String,
    /// Exec id, unique within the container; same character rules as container ids.
    pub exec_id: String,
    /// What to run.
    pub process: Box<oci_spec::runtime::Process>,
    /// Give the process a stdin stream.
    #[serde(default)]
    pub stdin: bool,
    /// A user (and group) to look up in the container's /etc/passwd and /etc/group:
    /// `NAME[:GROUP]` or `UID[:GID]`; replaces the process's uid, gid and groups.
    #[serde(default)]
    pub user: Option<String>,
}

/// Names a process: a container's init (`exec_id` absent) or one of its exec'd processes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRef {
    /// Container id.
    pub container: String,
    /// Exec id, or `None` for the init process.
    #[serde(default)]
    pub exec_id: Option<String>,
}

impl ProcessRef {
    /// The init process of `container`.
    pub fn init(container: &str) -> Self {
        ProcessRef { container: container.into(), exec_id: None }
    }

    /// An exec'd process.
    pub fn exec(container: &str, exec_id: &str) -> Self {
        ProcessRef { container: container.into(), exec_id: Some(exec_id.into()) }
    }
}

impl std::fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.exec_id {
            None => write!(f, "{}", self.container),
            Some(e) => write!(f, "{}/{}", self.container, e),
        }
    }
}

/// One standard stream of a process. With a TTY, `Stdout` carries the terminal's output and
/// `Stdin` its input; there is no `Stderr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdioStream {
    /// Host → process.
    Stdin,
    /// Process → host.
    Stdout,
    /// Process → host.
    Stderr,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Shell-style code: the exit code, or 128 + the signal number.
    pub code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    /// The container's cgroup had an out-of-memory kill.
    pub oom_killed: bool,
}

/// One process of a container, for `top`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id in the guest.
    pub pid: i32,
    /// Parent process id in the guest.
    pub ppid: i32,
    /// Real user id.
    pub uid: u32,
    /// CPU time used (user + system), in milliseconds.
    pub cpu_ms: u64,
    /// Resident memory in KiB.
    pub rss_kib: u64,
    /// Start time after guest boot, in milliseconds.
    pub start_ms: u64,
    /// Command line (or `[comm]`).
    pub cmd: String,
}

/// A container's resource use (from its cgroup v2 files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// `cpu.stat` usage_usec.
    pub cpu_usage_usec: u64,
    /// `memory.current` in bytes.
    pub memory_bytes: u64,
    /// `memory.max` in bytes (`None` = unlimited).
    pub memory_limit: Option<u64>,
    /// `pids.current`.
    pub pids: u64,
    /// `pids.max` (`None` = unlimited).
    pub pids_limit: Option<u64>,
    /// Bytes read from block devices (`io.stat` rbytes).
    pub io_read_bytes: u64,
    /// Bytes written to block devices (`io.stat` wbytes).
    pub io_write_bytes: u64,
    /// Online CPUs of the guest.
    pub online_cpus: u32,
    /// Guest uptime in microseconds when sampled (the time base for CPU percentages).
    pub sampled_usec: u64,
}

/// Result of a commit: the layer tar the agent wrote in the guest, to be read with
/// [`crate::RequestBody::OpenFile`] and then removed with [`crate::RequestBody::RemoveFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResult {
    /// Path of the uncompressed layer tar in the guest.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256 (hex): the layer's diff id.
    pub sha256: String,
}

/// Checks a container or exec id: 1–64 characters of `[A-Za-z0-9_.-]`, not starting with
/// a dot.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("abc-1.2_3"));
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn create_round_trip() {
        let c = CreateContainer {
            id: "c1".into(),
            spec: Box::default(),
            rootfs: RootfsDisks { layers: vec!["a".into()], writable: "w".into() },
            stdin: true,
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<CreateContainer>(&text).unwrap(), c);
    }
}
