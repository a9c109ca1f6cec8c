//! Host files a pod's guest gets copies of instead of the pod's virtio-fs share.
//!
//! Every container the CRI makes binds small host files: the pod's `/etc/hosts`,
//! `/etc/hostname` and `/etc/resolv.conf`, Kubernetes' `/dev/termination-log`, a secret's or
//! configMap's file mounted alone (`subPath`). Sharing them would start the pod's virtiofsd
//! and move the VM's memory into a memory file of its own (see `crate::pod`), so a pod
//! restored from a template would no longer share the template's pages. Instead the agent
//! writes a copy into the guest's memory (a tmpfs) and the mount points at it:
//! - the pod's name-service files and read-only files: one copy per pod and source,
//!   shared by every container that binds it (a container's write to its `/etc/hosts` is
//!   seen by the others, as with the host file; the host does not see it, and a change of
//!   the host file after the first container's start is not seen: the CRI and the kubelet
//!   write these once, and Kubernetes does not update `subPath` mounts either);
//! - a writable `/dev/termination-log`: a copy per container, written back to the host file
//!   after the container's init exits and before the exit is reported, which is when the
//!   kubelet reads it.
//!
//! - a Kubernetes configMap, secret, projected or downward-API volume (read-only
//!   directories): see [`crate::kube_dirs`].
//!
//! Anything else (other directories, larger files, other writable files) goes through the
//! share, where the container sees the host's file itself.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use ironpod_protocol::FileAttrs;
use sha2::{Digest, Sha256};

/// Where the guest keeps the copies.
pub const COPIES_DIR: &str = "/run/ironpod/files";

/// Largest file copied (larger ones are shared): Kubernetes caps a termination message at
/// 4 KiB and a configMap at 1 MiB; name-service files are a few hundred bytes.
pub const MAX_COPIED_FILE: u64 = 256 * 1024;

/// The files the CRI makes for a pod (the sandbox's, or the kubelet's `etc-hosts`).
const POD_FILES: [&str; 3] = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// Where a container's termination message goes by default (`terminationMessagePath`).
const TERMINATION_LOG: &str = "/dev/termination-log";

/// How a bind-mounted host file reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// One copy per pod and source.
    Pod,
    /// A copy per container, written back to the host when the container's init exits.
    WriteBack,
    /// A Kubernetes volume directory, one copy per pod kept current
    /// ([`crate::kube_dirs`]).
    Volume,
}

/// How the bind mount of the host file `size` bytes long at `destination` reaches the
/// guest: copied (and how), or `None` for the share.
pub fn kind_for(destination: &Path, size: u64, read_only: bool) -> Option<CopyKind> {
    if size > MAX_COPIED_FILE {
        return None;
    }
    if POD_FILES.iter().any(|f| destination == Path::new(f)) || read_only {
        return Some(CopyKind::Pod);
    }
    (destination == Path::new(TERMINATION_LOG)).then_some(CopyKind::WriteBack)
}

/// The guest path of the pod-wide copy of host file `source`.
pub fn pod_copy_path(source: &Path) -> String {
    let sum = Sha256::digest(source.as_os_str().as_encoded_bytes());
    let hex: String = sum.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{COPIES_DIR}/pod-{hex}")
}

/// The guest path of container `id`'s copy for its mount `index`.
pub fn container_copy_path(id: &str, index: usize) -> Result<String, String> {
    if id.is_empty()
        || id.len() > 200
        || id.starts_with('.')
        || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!("container id {id:?} cannot name a file"));
    }
    Ok(format!("{COPIES_DIR}/{id}+{index}"))
}

/// Reads host file `path` to copy it: it must be a regular file of at most
/// [`MAX_COPIED_FILE`] bytes (checked on the open file, which is never a FIFO that
/// blocks). Returns its bytes and its mode and owner.
pub fn read_host_file(path: &Path) -> Result<(Vec<u8>, FileAttrs), String> {
    let what = |e: std::io::Error| format!("{}: {e}", path.display());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(what)?;
    let meta = f.metadata().map_err(what)?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut data = Vec::new();
    f.take(MAX_COPIED_FILE + 1).read_to_end(&mut data).map_err(what)?;
    if data.len() as u64 > MAX_COPIED_FILE {
        return Err(format!("{} is larger than {MAX_COPIED_FILE} bytes", path.display()));
    }
    let attrs = FileAttrs { mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid() };
    Ok((data, attrs))
}

/// Writes `data` (a guest's copy, at most [`MAX_COPIED_FILE`] bytes) back into the existing
/// host file `path` (never created, never through a symbolic link).
pub fn write_host_file(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    if data.len() as u64 > MAX_COPIED_FILE {
        return Err(format!("the guest's copy of {} is too large", path.display()));
    }
    let what = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(what)?;
    if !f.metadata().map_err(what)?.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    f.set_len(0).map_err(what)?;
    f.write_all(data).map_err(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_files_are_copied() {
        let p = Path::new;
        assert_eq!(kind_for(p("/etc/hosts"), 300, false), Some(CopyKind::Pod));
        assert_eq!(kind_for(p("/etc/resolv.conf"), 300, false), Some(CopyKind::Pod));
        assert_eq!(kind_for(p("/etc/ssh/key"), 30, true), Some(CopyKind::Pod));
        assert_eq!(kind_for(p("/dev/termination-log"), 0, false), Some(CopyKind::WriteBack));
        // Writable files elsewhere and large files are shared.
        assert_eq!(kind_for(p("/var/log/app.log"), 10, false), None);
        assert_eq!(kind_for(p("/etc/hosts"), MAX_COPIED_FILE + 1, false), None);
    }

    #[test]
    fn copy_paths() {
        let a = pod_copy_path(Path::new("/var/lib/x/hosts"));
        assert!(a.starts_with("/run/ironpod/files/pod-") && a.len() == COPIES_DIR.len() + 29);
        assert_ne!(a, pod_copy_path(Path::new("/var/lib/y/hosts")));
        assert_eq!(container_copy_path("ab-1.c_d", 3).unwrap(), "/run/ironpod/files/ab-1.c_d+3");
        for bad in ["", "..", "a/b", ".x", "a\0b", "a b"] {
            assert!(container_copy_path(bad, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_files_are_read_and_written_back_with_care() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("term");
        std::fs::write(&f, "old and longer").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let (data, attrs) = read_host_file(&f).unwrap();
        assert_eq!(data, b"old and longer");
        assert_eq!(attrs.mode, 0o640);
        write_host_file(&f, b"new").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
        // Too large, not a regular file, missing, a symbolic link.
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; MAX_COPIED_FILE as usize + 1]).unwrap();
        assert!(read_host_file(&big).is_err());
        assert!(read_host_file(dir.path()).is_err());
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read_host_file(&fifo).is_err(), "a FIFO neither blocks nor is copied");
        assert!(write_host_file(&fifo, b"x").is_err());
        assert!(write_host_file(&dir.path().join("gone"), b"x").is_err());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(write_host_file(&link, b"x").is_err());
        assert!(write_host_file(&f, &vec![0u8; MAX_COPIED_FILE as usize + 1]).is_err());
    }
}
