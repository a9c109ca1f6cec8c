//! Client of a running VMM's control socket (`ironpod-vmm`'s `api_socket`): attaches and
//! detaches disks while the guest runs, pauses, resumes and snapshots the VM.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ironpod_vmm::api::{ApiReply, ApiRequest};

/// A control request that failed.
#[derive(Debug, thiserror::Error)]
pub enum VmmApiError {
    /// The socket could not be reached or the reply was unreadable.
    #[error("VMM control socket {path}: {reason}")]
    Transport {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The VMM refused the request.
    #[error("the VMM refused: {0}")]
    Refused(String),
}

/// Sends one request to the VMM listening on `socket` and returns its reply (an error
/// reply becomes [`VmmApiError::Refused`]).
pub fn call(socket: &Path, req: &ApiRequest) -> Result<ApiReply, VmmApiError> {
    call_within(socket, req, Duration::from_secs(10))
}

/// [`call`] with a time limit for the reply.
fn call_within(socket: &Path, req: &ApiRequest, limit: Duration) -> Result<ApiReply, VmmApiError> {
    let fail = |reason: String| VmmApiError::Transport { path: socket.to_path_buf(), reason };
    let stream = UnixStream::connect(socket).map_err(|e| fail(format!("connect: {e}")))?;
    let timeout = Some(limit);
    stream.set_read_timeout(timeout).map_err(|e| fail(e.to_string()))?;
    stream.set_write_timeout(timeout).map_err(|e| fail(e.to_string()))?;
    let mut line = serde_json::to_vec(req).map_err(|e| fail(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(|e| fail(format!("send: {e}")))?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(|e| fail(format!("receive: {e}")))?;
    match serde_json::from_str::<ApiReply>(&reply) {
        Ok(ApiReply::Error { message }) => Err(VmmApiError::Refused(message)),
        Ok(r) => Ok(r),
        Err(e) => Err(fail(format!("bad reply {:?}: {e}", reply.trim()))),
    }
}

/// Attaches `disk` (read-only) to a free spare slot; returns the serial the guest sees.
pub fn attach_disk(socket: &Path, disk: &Path) -> Result<String, VmmApiError> {
    match call(socket, &ApiRequest::AttachDisk { path: disk.to_path_buf(), read_only: true })? {
        ApiReply::Attached { serial } => Ok(serial),
        other => Err(VmmApiError::Refused(format!("unexpected reply {other:?}"))),
    }
}

/// Empties the slot holding the disk with `serial`.
pub fn detach_disk(socket: &Path, serial: &str) -> Result<(), VmmApiError> {
    call(socket, &ApiRequest::DetachDisk { serial: serial.to_string() }).map(|_| ())
}

/// Expects `want` as the reply to `req`.
fn expect(
    socket: &Path,
    req: &ApiRequest,
    want: ApiReply,
    limit: Duration,
) -> Result<(), VmmApiError> {
    match call_within(socket, req, limit)? {
        r if r == want => Ok(()),
        other => Err(VmmApiError::Refused(format!("unexpected reply {other:?}"))),
    }
}

/// Pauses every vCPU.
pub fn pause(socket: &Path) -> Result<(), VmmApiError> {
    expect(socket, &ApiRequest::Pause, ApiReply::Paused, Duration::from_secs(10))
}

/// Resumes a paused VM.
pub fn resume(socket: &Path) -> Result<(), VmmApiError> {
    expect(socket, &ApiRequest::Resume, ApiReply::Resumed, Duration::from_secs(10))
}

/// Writes a paused VM's snapshot to two new files (paths as the VMM sees them). Writing the
/// memory takes a while for a large VM: the reply may take up to two minutes.
pub fn snapshot(socket: &Path, state: &Path, memory: &Path) -> Result<(), VmmApiError> {
    let req = ApiRequest::Snapshot { state: state.to_path_buf(), memory: memory.to_path_buf() };
    expect(socket, &req, ApiReply::Snapshotted, Duration::from_secs(120))
}

/// Plugs the file system server listening on `server` (a path as the VMM sees it) into the
/// spare virtio-fs device `tag`. A VM with private memory first copies it into a shared
/// memory file (a large VM's reply may take a while).
pub fn attach_fs(socket: &Path, tag: &str, server: &Path) -> Result<(), VmmApiError> {
    let req = ApiRequest::AttachFs { tag: tag.to_string(), socket: server.to_path_buf() };
    expect(socket, &req, ApiReply::FsAttached, Duration::from_secs(120))
}
