//! Opening a path inside a directory without ever leaving it: a Kubernetes `subPath` is a
//! path inside a volume that the pod's containers can write, so any of its components may
//! be a symbolic link a container planted to point the mount elsewhere in the guest (the
//! pattern of CVE-2017-1002101). Each component is resolved by the kernel with `openat2`'s
//! `RESOLVE_BENEATH` from the volume's own descriptor, missing directories are made on the
//! way (as the kubelet does), and the mount is then made from the descriptor, so what was
//! checked is what is mounted even if the volume changes in between.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// `openat2(dir, path, O_PATH | O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`,
/// tried again when the kernel asks to (`EAGAIN`: a rename raced a `..` in the lookup).
fn open_beneath(dir: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match open_beneath_once(dir, path) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 16 => tries += 1,
            r => return r,
        }
    }
}

fn open_beneath_once(dir: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: open_how is plain integers, for which all zeroes is valid (and means "none").
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: p is a NUL-terminated string and how a valid open_how, both outliving the
    // call; the size passed is how's own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            p.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// Makes directory `name` in `dir`; whether it was made (not there before).
fn mkdir_at(dir: &OwnedFd, name: &str, mode: u32) -> io::Result<bool> {
    let n = cstr(name)?;
    // SAFETY: n is a NUL-terminated string outliving the call; dir is an open descriptor.
    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() == Some(libc::EEXIST) {
            true => Ok(false),
            false => Err(e),
        };
    }
    Ok(true)
}

/// The permission bits of what `fd` holds.
fn mode_of(fd: &OwnedFd) -> io::Result<u32> {
    Ok(std::fs::metadata(proc_path(fd))?.permissions().mode() & 0o7777)
}

/// Sets the permission bits of exactly what `fd` holds (past the umask).
fn chmod_held(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(proc_path(fd), std::fs::Permissions::from_mode(mode))
}

/// Opens `rel` (a relative path without `..`) beneath the directory `root` as an `O_PATH`
/// descriptor, making missing directories with `root`'s own mode (as the kubelet does, so
/// a world-writable emptyDir's subPath is too). A path that would leave `root` (by a
/// symbolic link, absolute or relative) is an error, `EXDEV` from the kernel.
pub fn open(root: &Path, rel: &str) -> io::Result<OwnedFd> {
    let parts: Vec<&str> = Path::new(rel)
        .components()
        .map(|c| match c {
            Component::Normal(n) => n.to_str().ok_or_else(|| bad(rel)),
            Component::CurDir => Ok("."),
            _ => Err(bad(rel)),
        })
        .collect::<io::Result<_>>()?;
    let root_s = root.to_str().ok_or_else(|| bad(rel))?;
    let rc = {
        let p = cstr(root_s)?;
        // SAFETY: p is a NUL-terminated string outliving the call.
        unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    let root_fd = unsafe { OwnedFd::from_raw_fd(rc) };
    match open_beneath(&root_fd, rel) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    // Made one level at a time: each prefix resolved beneath the root (so links inside
    // the volume are followed as for an existing path), each directory made in its
    // parent's checked descriptor.
    let mode = mode_of(&root_fd)?;
    let mut parent: Option<OwnedFd> = None;
    for i in 0..parts.len() {
        let prefix = parts[..=i].join("/");
        let at = |e: io::Error| io::Error::new(e.kind(), format!("{prefix}: {e}"));
        let fd = match open_beneath(&root_fd, &prefix) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = parent.as_ref().unwrap_or(&root_fd);
                let made = mkdir_at(dir, parts[i], mode).map_err(at)?;
                let fd = open_beneath(dir, parts[i]).map_err(at)?;
                if made {
                    chmod_held(&fd, mode).map_err(at)?;
                }
                fd
            }
            r => r.map_err(at)?,
        };
        parent = Some(fd);
    }
    parent.ok_or_else(|| bad(rel))
}

fn bad(rel: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("bad path {rel:?} inside a volume"))
}

/// The path through which the kernel reaches exactly the file `fd` holds.
pub fn proc_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn target(fd: &OwnedFd) -> std::path::PathBuf {
        std::fs::read_link(proc_path(fd)).unwrap()
    }

    #[test]
    fn stays_beneath_its_root() {
        let t = tempfile::tempdir().unwrap();
        let vol = t.path().join("vol");
        std::fs::create_dir_all(vol.join("a/b")).unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        std::fs::write(vol.join("a/f"), "x").unwrap();
        assert_eq!(target(&open(&vol, "a/b").unwrap()), vol.join("a/b"));
        assert_eq!(target(&open(&vol, "a/f").unwrap()), vol.join("a/f"));
        // A link inside the volume that stays inside is followed.
        symlink("a/b", vol.join("in")).unwrap();
        assert_eq!(target(&open(&vol, "in").unwrap()), vol.join("a/b"));
        // Links out of it, absolute or relative, and `..`, are refused.
        symlink(t.path().join("outside"), vol.join("abs")).unwrap();
        symlink("../outside", vol.join("rel")).unwrap();
        for p in ["abs", "rel", "abs/new", "rel/x/y", "../outside", "/etc"] {
            let e = open(&vol, p).unwrap_err();
            assert!(
                e.raw_os_error() == Some(libc::EXDEV) || e.kind() == io::ErrorKind::InvalidInput,
                "{p}: {e}"
            );
        }
        assert!(!t.path().join("outside/new").exists());
        assert!(!t.path().join("outside/x").exists());
    }

    #[test]
    fn makes_missing_directories() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let fd = open(t.path(), "x/y/z").unwrap();
        assert_eq!(target(&fd), t.path().join("x/y/z"));
        assert!(t.path().join("x/y/z").is_dir());
        // With the volume's mode, past the umask.
        let mode = std::fs::metadata(t.path().join("x/y")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777);
        // A link inside the volume on the way is followed when a part is made after it.
        std::fs::create_dir(t.path().join("b")).unwrap();
        symlink("../b", t.path().join("x/l")).unwrap();
        assert_eq!(target(&open(t.path(), "x/l/new").unwrap()), t.path().join("b/new"));
        assert_eq!(target(&open(t.path(), "./x").unwrap()), t.path().join("x"));
        // A file in the way is an error, not replaced.
        std::fs::write(t.path().join("f"), "").unwrap();
        assert!(open(t.path(), "f/g").is_err());
    }
}
