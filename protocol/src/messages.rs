//! Message types.

use serde::{Deserialize, Serialize};

pub use crate::container::*;

/// First message of a session, host → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The host's [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Free-form client name, for logs.
    pub client: String,
}

/// The agent's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelloReply {
    /// Accepted.
    Ok {
        /// The agent's protocol version.
        protocol_version: u32,
        /// The agent's crate version.
        agent_version: String,
    },
    /// Refused; the agent closes the connection.
    Err(AgentError),
}

/// A request, host → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Chosen by the host; echoed in the response.
    pub id: u64,
    /// What to do.
    pub body: RequestBody,
}

/// The operations the agent offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestBody {
    /// Liveness check; answered with [`ResponseBody::Pong`].
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Facts about the guest; answered with [`ResponseBody::Info`].
    Info,
    /// Mounts a filesystem (the target directory is created).
    Mount {
        /// Device or source (`/dev/vda`, `tmpfs`, …).
        source: String,
        /// Absolute mount point.
        target: String,
        /// Filesystem type (`ext4`, `erofs`, `tmpfs`, …).
        fstype: String,
        /// Mount read-only.
        #[serde(default)]
        read_only: bool,
        /// Filesystem-specific options (`size=64m`, …).
        #[serde(default)]
        options: Option<String>,
    },
    /// Reads part of a file; answered with [`ResponseBody::Data`].
    ReadFile {
        /// Absolute path.
        path: String,
        /// Byte offset.
        #[serde(default)]
        offset: u64,
        /// Largest number of bytes to return (capped at [`MAX_READ`]).
        max_len: u32,
    },
    /// Writes (or appends to) a file, creating it (and its parent directories) if needed.
    WriteFile {
        /// Absolute path.
        path: String,
        /// Bytes to write.
        #[serde(with = "b64")]
        data: Vec<u8>,
        /// Append instead of truncating.
        #[serde(default)]
        append: bool,
        /// The file's permission bits and owner, set whether the file is new or not (a new
        /// file without them: 0644 less the umask, root's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attrs: Option<FileAttrs>,
    },
    /// Syncs filesystems and ends the VM. Answered before the VM goes down.
    Shutdown,
    /// Creates a container and its (stopped) init process; answered with
    /// [`ResponseBody::Created`].
    CreateContainer(CreateContainer),
    /// Creates a (stopped) extra process in a container; answered with
    /// [`ResponseBody::Created`].
    ExecProcess(ExecProcess),
    /// Turns this connection into one raw stdio stream of a process: after the `Done`
    /// answer, the connection carries the stream's bytes only, and closes at its end.
    OpenStdio {
        /// The process.
        process: ProcessRef,
        /// Which stream.
        stream: StdioStream,
    },
    /// Starts a created process (executes its program). Fails with `NotFound` when the
    /// program does not exist and `PermissionDenied` when it cannot be executed.
    StartProcess(ProcessRef),
    /// Waits until the process exits; answered with [`ResponseBody::Exited`].
    WaitProcess(ProcessRef),
    /// Sends a signal to a process (or, with `all`, to every process of the container; with
    /// `group`, to its process group).
    Signal {
        /// The process.
        process: ProcessRef,
        /// Signal number (1–64).
        signal: i32,
        /// Every process of the container.
        #[serde(default)]
        all: bool,
        /// The process's group: what it started and left behind too (each process is a
        /// session and group leader of its own), even after it exited. Left out when false,
        /// so agents from before it still take plain signals.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        group: bool,
    },
    /// Sets the terminal size of a process that has a TTY.
    ResizePty {
        /// The process.
        process: ProcessRef,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Forgets an exec'd process that has exited (its record and exit status), so that a
    /// container probed or exec'd into for months does not pile them up. Refused
    /// ([`ErrorKind::InvalidState`]) while it runs.
    ReleaseProcess(ProcessRef),
    /// Closes a process's stdin (its stream, if open, is dropped).
    CloseStdin(ProcessRef),
    /// Lists a container's processes; answered with [`ResponseBody::Processes`].
    ListProcesses {
        /// Container id.
        container: String,
    },
    /// A container's resource use; answered with [`ResponseBody::Stats`].
    Stats {
        /// Container id.
        container: String,
    },
    /// Writes the container's changes (its upper layer) as an OCI layer tar in the guest;
    /// answered with [`ResponseBody::Committed`].
    Commit {
        /// Container id.
        container: String,
    },
    /// Freezes (`frozen: true`) or thaws every process of a container (cgroup v2
    /// freezer); answered with `Done` once the cgroup reports the new state.
    Freeze {
        /// Container id.
        container: String,
        /// Freeze, or thaw.
        frozen: bool,
    },
    /// Changes a container's resource limits (the fields set in `resources`).
    UpdateResources {
        /// Container id.
        container: String,
        /// The limits, as in the OCI spec.
        resources: Box<oci_spec::runtime::LinuxResources>,
    },
    /// Turns this connection into a raw stream of a file's bytes (to its end).
    OpenFile {
        /// Absolute path.
        path: String,
    },
    /// Removes a file.
    RemoveFile {
        /// Absolute path.
        path: String,
    },
    /// Makes a symbolic link at `path` to `target` (its parent directories are created).
    Symlink {
        /// What the link points at (may be relative).
        target: String,
        /// Absolute path of the link.
        path: String,
    },
    /// Renames `from` to `to`, replacing `to` in one step (rename(2)).
    Rename {
        /// Absolute path.
        from: String,
        /// Absolute path.
        to: String,
    },
    /// Removes a directory and everything in it (symbolic links are removed, never
    /// followed).
    RemoveTree {
        /// Absolute path, not `/`.
        path: String,
    },
    /// Makes a directory and its missing parents; `attrs` set the last one's permission
    /// bits and owner (whether it was new or not).
    MakeDir {
        /// Absolute path.
        path: String,
        /// Permission bits and owner.
        #[serde(default)]
        attrs: Option<FileAttrs>,
    },
    /// Configures the pod's network cards (addresses, MTU, default route) and brings them up.
    ConfigureNetwork(crate::NetworkConfig),
    /// Unmounts a read-only layer disk that no container uses any more, so that the host
    /// may detach it; refused ([`ErrorKind::InvalidState`]) while the disk is still in use.
    ReleaseDisk {
        /// The disk's serial.
        serial: String,
    },
    /// The VM was restored from a snapshot (a clone of it may run elsewhere): the agent mixes
    /// `entropy` from the host into the kernel's pool and forces a reseed of its generator, so
    /// that this clone's random numbers part from every other clone's, and sets the time of
    /// day to the host's when the guest's is off by more than half a second.
    Restored {
        /// Fresh random bytes from the host ([`RESEED_BYTES`] of them).
        #[serde(with = "b64")]
        entropy: Vec<u8>,
        /// The host's time of day, nanoseconds since the Unix epoch.
        unix_time_ns: u64,
        /// Trace the agent's steps from now on, as `ironpod.trace` on a booted guest's
        /// command line does (diagnostics; a template's command line cannot ask for it).
        #[serde(default)]
        trace: bool,
    },
    /// Facts about a path in a container (a symbolic link itself, unless the path ends in
    /// `/` or `/.`); answered with [`ResponseBody::PathStat`].
    StatPath {
        /// Container id.
        container: String,
        /// Absolute path in the container (symbolic links resolve inside it).
        path: String,
    },
    /// A tar of a path in a container (entry names start with its last component). Answered
    /// `Done` (or the error, e.g. no such path) at once, then the tar as frames of raw bytes
    /// (see [`crate::ChunkReader`]) up to an empty frame, then a second answer: `Done`, or
    /// the error that cut the tar short. The container keeps running.
    ReadArchive {
        /// Container id.
        container: String,
        /// Absolute path in the container.
        path: String,
    },
    /// Extracts a tar into a directory of a container: after the `Done` answer the host
    /// sends the tar as data frames of at most [`crate::ARCHIVE_CHUNK`] bytes, an empty
    /// frame ending it, and the agent answers once more (`Done`, or why it failed).
    WriteArchive(crate::WriteArchive),
    /// How a container's files differ from its image; answered with
    /// [`ResponseBody::Changes`].
    Changes {
        /// Container id.
        container: String,
    },
    /// Kills every process of the container, unmounts its root and removes its cgroup.
    /// Its upper layer stays on the writable disk unless `discard_changes`.
    DeleteContainer {
        /// Container id.
        container: String,
        /// Remove the container's upper layer too.
        #[serde(default)]
        discard_changes: bool,
    },
}

/// A file's permission bits and owner ([`RequestBody::WriteFile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAttrs {
    /// Permission bits (at most 0o7777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Bytes of host entropy a [`RequestBody::Restored`] carries.
pub const RESEED_BYTES: usize = 64;

/// Largest [`RequestBody::ReadFile`] answer.
pub const MAX_READ: u32 = 512 * 1024;

/// A response, agent → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// Outcome.
    pub result: Outcome,
}

/// The outcome of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Success.
    Ok(ResponseBody),
    /// Failure.
    Err(AgentError),
}

impl From<Result<ResponseBody, AgentError>> for Outcome {
    fn from(r: Result<ResponseBody, AgentError>) -> Self {
        match r {
            Ok(b) => Outcome::Ok(b),
            Err(e) => Outcome::Err(e),
        }
    }
}

impl From<Outcome> for Result<ResponseBody, AgentError> {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Ok(b) => Ok(b),
            Outcome::Err(e) => Err(e),
        }
    }
}

/// Successful answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseBody {
    /// Answer to Ping.
    Pong {
        /// The request's nonce.
        nonce: u64,
    },
    /// Answer to Info.
    Info(GuestInfo),
    /// Answer to ReadFile.
    Data {
        /// The bytes read.
        #[serde(with = "b64")]
        data: Vec<u8>,
        /// The end of the file was reached.
        eof: bool,
    },
    /// The request succeeded and has nothing to return.
    Done,
    /// A process was created; `pid` is its id in the guest.
    Created {
        /// Guest process id.
        pid: i32,
    },
    /// A process ended.
    Exited(ExitStatus),
    /// Processes of a container.
    Processes(Vec<ProcessInfo>),
    /// Resource use of a container.
    Stats(ContainerStats),
    /// A commit's layer tar.
    Committed(CommitResult),
    /// Answer to StatPath.
    PathStat(crate::PathStat),
    /// Answer to Changes, sorted by path.
    Changes(Vec<crate::Change>),
}

/// Facts about the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    /// The agent's crate version.
    pub agent_version: String,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    /// CPUs online.
    pub cpus_online: u32,
    /// MemTotal in KiB.
    pub memory_total_kib: u64,
    /// Time since the guest kernel started, in milliseconds.
    pub uptime_ms: u64,
}

/// A typed failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct AgentError {
    /// Category.
    pub kind: ErrorKind,
    /// Human-readable details.
    pub message: String,
}

impl AgentError {
    /// Builds an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AgentError { kind, message: message.into() }
    }
}

/// Error categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or has invalid arguments.
    BadRequest,
    /// A path or object does not exist.
    NotFound,
    /// Not allowed.
    PermissionDenied,
    /// The target is read-only.
    ReadOnly,
    /// An operating-system call failed.
    Io,
    /// Too much data.
    TooLarge,
    /// Not supported by this agent.
    Unsupported,
    /// Protocol versions do not match.
    Incompatible,
    /// The object exists already.
    AlreadyExists,
    /// The object is not in a state that allows the request.
    InvalidState,
}

impl From<&std::io::Error> for ErrorKind {
    fn from(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        if e.raw_os_error() == Some(30) {
            return ErrorKind::ReadOnly; // EROFS
        }
        match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::InvalidInput | K::InvalidData => ErrorKind::BadRequest,
            _ => ErrorKind::Io,
        }
    }
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        AgentError { kind: ErrorKind::from(&e), message: e.to_string() }
    }
}

/// serde helper: bytes as base64 strings.
mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        for body in [
            RequestBody::Ping { nonce: 7 },
            RequestBody::Info,
            RequestBody::Mount {
                source: "/dev/vda".into(),
                target: "/mnt".into(),
                fstype: "ext4".into(),
                read_only: true,
                options: None,
            },
            RequestBody::ReadFile { path: "/etc/x".into(), offset: 3, max_len: 10 },
            RequestBody::WriteFile {
                path: "/tmp/x".into(),
                data: vec![0, 255, 7],
                append: true,
                attrs: None,
            },
            RequestBody::WriteFile {
                path: "/tmp/y".into(),
                data: vec![],
                append: false,
                attrs: Some(FileAttrs { mode: 0o600, uid: 1000, gid: 1001 }),
            },
            RequestBody::Symlink { target: "..data/key".into(), path: "/v/key".into() },
            RequestBody::Rename { from: "/v/..data_tmp".into(), to: "/v/..data".into() },
            RequestBody::RemoveTree { path: "/v/..old".into() },
            RequestBody::MakeDir {
                path: "/v/empty".into(),
                attrs: Some(FileAttrs { mode: 0o1777, uid: 0, gid: 0 }),
            },
            RequestBody::Shutdown,
        ] {
            let r = Request { id: 1, body };
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r, "{text}");
        }
    }

    #[test]
    fn bytes_are_base64() {
        let text = serde_json::to_string(&RequestBody::WriteFile {
            path: "/p".into(),
            data: b"hi".to_vec(),
            append: false,
            attrs: None,
        })
        .unwrap();
        assert!(text.contains("\"aGk=\""), "{text}");
    }

    #[test]
    fn unknown_or_bad_requests_are_errors() {
        for text in [
            r#"{"id":1,"body":{"launch_missiles":{}}}"#,
            r#"{"id":1,"body":"ping"}"#,
            r#"{"id":-1,"body":"info"}"#,
            r#"{"id":1,"body":{"write_file":{"path":"/x","data":"!!notbase64"}}}"#,
            r#"{"id":1,"body":"info","extra":1}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<Request>(text).is_err(), "accepted {text}");
        }
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"body":"info"}"#).is_ok());
    }

    #[test]
    fn response_round_trip() {
        let r = Response {
            id: 9,
            result: Outcome::Err(AgentError::new(ErrorKind::ReadOnly, "read-only file system")),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), r);
        let e = std::io::Error::from_raw_os_error(30);
        assert_eq!(AgentError::from(e).kind, ErrorKind::ReadOnly);
    }
}
