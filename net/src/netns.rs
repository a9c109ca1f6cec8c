//! Named network namespaces, the iproute2 way: a namespace is kept alive by a bind mount of
//! its nsfs file on `/run/netns/NAME`, so `ip netns exec NAME …` works on ironpod's too.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where named network namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

/// statfs(2) magic of nsfs, the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The path of namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn cstring(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

/// Whether `p` is a live namespace file (an nsfs mount), not just a leftover empty file.
pub fn is_namespace(p: &Path) -> bool {
    let Ok(c) = cstring(p) else { return false };
    // SAFETY: statfs into a zeroed struct we own, with a valid C string.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC
    }
}

/// Creates the network namespace `name` (with only a loopback device, down) unless it exists;
/// returns its path.
pub fn create(name: &str) -> io::Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad name {name:?}")));
    }
    let target = path(name);
    if is_namespace(&target) {
        return Ok(target);
    }
    fs::create_dir_all(NETNS_DIR)?;
    // An empty file to mount on (a leftover of an interrupted create is reused).
    fs::OpenOptions::new().write(true).create(true).truncate(false).open(&target)?;
    let c_target = cstring(&target)?;
    // unshare(2) changes the calling thread's namespace only: do it on a thread of its own.
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain system calls; the new namespace belongs to this thread only.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let own = std::ffi::CString::new(format!(
                    "/proc/self/task/{}/ns/net",
                    libc::syscall(libc::SYS_gettid)
                ))
                .map_err(|_| io::Error::other("bad path"))?;
                if libc::mount(
                    own.as_ptr(),
                    c_target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if let Err(e) = made {
        let _ = fs::remove_file(&target);
        return Err(e);
    }
    Ok(target)
}

/// Names the existing network namespace at `source` (a `/proc/PID/ns/net` path) `name`, so
/// it outlives its process; returns the new path. An existing `name` is replaced.
pub fn adopt(name: &str, source: &Path) -> io::Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad name {name:?}")));
    }
    if !is_namespace(source) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a namespace", source.display()),
        ));
    }
    remove(name)?;
    let target = path(name);
    fs::create_dir_all(NETNS_DIR)?;
    fs::OpenOptions::new().write(true).create(true).truncate(false).open(&target)?;
    let (c_source, c_target) = (cstring(source)?, cstring(&target)?);
    // SAFETY: mount(2) with two valid C strings; a bind mount of a namespace file.
    let r = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        let _ = fs::remove_file(&target);
        return Err(e);
    }
    Ok(target)
}

/// Removes the namespace `name` (it ends once nothing uses it any more); a missing one is
/// not an error.
pub fn remove(name: &str) -> io::Result<()> {
    let target = path(name);
    if !target.exists() {
        return Ok(());
    }
    let c = cstring(&target)?;
    // SAFETY: umount2 with a valid C string; MNT_DETACH lets a busy namespace go lazily.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    match fs::remove_file(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a thread of its own inside the network namespace at `ns` (a namespace is
/// per thread: the caller's stays as it is) and returns its result.
pub fn run_in<T: Send>(
    ns: &Path,
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    let file = fs::File::open(ns).map_err(|e| format!("open {}: {e}", ns.display()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            enter(&file).map_err(|e| format!("enter {}: {e}", ns.display()))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err("the namespace thread panicked".into()))
    })
}

/// Moves the calling thread into the network namespace `ns` (an open namespace file).
pub fn enter(ns: &fs::File) -> io::Result<()> {
    // SAFETY: setns(2) on an open namespace descriptor; it changes the calling thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_enter_remove() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test needs root (network namespaces)");
        }
        let name = format!("ironpod-unit-{}", std::process::id());
        let p = create(&name).unwrap();
        assert!(is_namespace(&p));
        assert_eq!(create(&name).unwrap(), p, "creating twice is idempotent");
        let mine = fs::read_link("/proc/thread-self/ns/net").unwrap();
        let inside =
            run_in(&p, || fs::read_link("/proc/thread-self/ns/net").map_err(|e| e.to_string()))
                .unwrap();
        assert_ne!(inside, mine);
        assert_eq!(fs::read_link("/proc/thread-self/ns/net").unwrap(), mine, "caller unchanged");
        remove(&name).unwrap();
        assert!(!p.exists());
        remove(&name).unwrap();
        assert!(create("a/b").is_err());
        assert!(!is_namespace(Path::new("/etc/passwd")));
    }
}
