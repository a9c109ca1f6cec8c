//! The service's unix socket: bound here (stale socket files replaced, a live one refused),
//! mode 0660 owned by root and an optional group, or handed over by systemd (socket
//! activation: `LISTEN_FDS`/`LISTEN_PID`, the first passed descriptor).

use std::ffi::CString;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::ServiceError;

/// The default socket, where Docker's clients are pointed with `-H`/`DOCKER_HOST`.
pub const DEFAULT_SOCKET: &str = "unix:///run/ironpod/docker.sock";

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// `unix:///path` (or a bare absolute path) → the path.
pub fn parse_address(address: &str) -> Result<PathBuf, ServiceError> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let p = Path::new(path);
    if !p.is_absolute() || p.file_name().is_none() || path.len() > 100 {
        return Err(ServiceError::BadAddress(address.to_string()));
    }
    Ok(p.to_path_buf())
}

/// The listener systemd passed to this process, if it passed one.
pub fn from_systemd() -> Option<UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // The variables are for this process only, not for the pods it starts.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    // SAFETY: systemd passed descriptor 3 to this process (LISTEN_PID is ours) as a
    // listening socket; nothing else in the process owns it.
    let listener = unsafe { UnixListener::from_raw_fd(LISTEN_FDS_START) };
    // SAFETY: plain fcntl on a descriptor this process owns.
    unsafe { libc::fcntl(LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(listener)
}

/// Binds `path` with mode 0660, root-owned, in `group` if one is named.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, ServiceError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ServiceError::io(format!("creating {}", dir.display()), e))?;
    }
    if path.exists() || path.symlink_metadata().is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(ServiceError::InUse(shown));
        }
        std::fs::remove_file(path)
            .map_err(|e| ServiceError::io(format!("removing stale {shown}"), e))?;
    }
    let gid = group.map(group_id).transpose()?;
    // Bind with a umask that leaves no window in which others could connect.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| ServiceError::io(format!("binding {shown}"), e))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(gid))
            .map_err(|e| ServiceError::io(format!("chown {shown}"), e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| ServiceError::io(format!("chmod {shown}"), e))?;
    Ok(listener)
}

/// A group's id by name (or a number).
fn group_id(name: &str) -> Result<u32, ServiceError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let c = CString::new(name).map_err(|_| ServiceError::NoGroup(name.to_string()))?;
    let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name is NUL-terminated, `grp` and
    // `buf` outlive it and `buf.len()` is its size; `out` is set to `grp` or null.
    let rc = unsafe {
        libc::getgrnam_r(c.as_ptr(), grp.as_mut_ptr(), buf.as_mut_ptr().cast(), buf.len(), &mut out)
    };
    if rc != 0 || out.is_null() {
        return Err(ServiceError::NoGroup(name.to_string()));
    }
    // SAFETY: getgrnam_r succeeded and filled `grp` (out == grp).
    Ok(unsafe { grp.assume_init() }.gr_gid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn addresses() {
        assert_eq!(parse_address("unix:///run/x.sock").unwrap(), Path::new("/run/x.sock"));
        assert_eq!(parse_address("/run/x.sock").unwrap(), Path::new("/run/x.sock"));
        for bad in [
            "unix://x.sock",
            "tcp://127.0.0.1:2375",
            "",
            "unix:///",
            &format!("/{}", "a".repeat(120)),
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binds_0660_replaces_stale_refuses_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/d.sock");
        let l = bind(&path, Some("0")).unwrap();
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.mode() & 0o777, 0o660);
        assert_eq!((md.uid(), md.gid()), (0, 0));
        assert!(matches!(bind(&path, None), Err(ServiceError::InUse(_))));
        drop(l);
        // The file is left behind by a listener that is gone: replaced.
        let _l = bind(&path, None).unwrap();
        assert!(matches!(
            bind(&dir.path().join("e.sock"), Some("no-such-group-here")),
            Err(ServiceError::NoGroup(_))
        ));
    }

    #[test]
    fn groups_by_name() {
        assert_eq!(group_id("root").unwrap(), 0);
        assert_eq!(group_id("42").unwrap(), 42);
    }
}
