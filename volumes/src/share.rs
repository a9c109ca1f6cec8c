//! The pod's share: `/run/ironpod/shares/<id>` on the host, with a bind mount of each volume
//! (`v0`, `v1`, …; read-only volumes are read-only bind mounts), served to the VM by one
//! virtiofsd as virtio-fs tag [`ironpod_protocol::SHARE_TAG`].
//!
//! virtiofsd runs sandboxed in the share (its own mount namespace, pivoted into the share
//! directory), so nothing the guest asks for can name a host path outside the volumes, in a
//! user namespace of its own (see [`crate::userns`]: capabilities only there), under its own
//! seccomp allowlist. Every mount in the share is `nodev,nosuid,noexec`. Its
//! listening socket is made here and handed over as a descriptor, so the VMM can connect at
//! once without waiting for virtiofsd to be up.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{io, VolumeError};
use crate::mounts::{share_entry, HostDir};

/// Where the pods' shares are made.
pub const SHARES_DIR: &str = "/run/ironpod/shares";

/// The share directory of pod `id`.
pub fn share_dir(id: &str) -> PathBuf {
    Path::new(SHARES_DIR).join(id)
}

fn cpath(p: &Path) -> Result<CString, VolumeError> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| VolumeError::Invalid(format!("bad path {}", p.display())))
}

fn mount(source: Option<&Path>, target: &Path, flags: libc::c_ulong) -> Result<(), VolumeError> {
    let t = cpath(target)?;
    let s = source.map(cpath).transpose()?;
    // SAFETY: valid NUL-terminated strings (or null for an unused source); no data argument.
    let rc = unsafe {
        libc::mount(
            s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            t.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let what = match source {
            Some(s) => format!("bind {} on {}", s.display(), target.display()),
            None => format!("remount {}", target.display()),
        };
        return Err(io(what)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Flags of every mount in the share: nothing in a volume is a device, a set-uid program or
/// an executable to the host side. virtiofsd never runs files; the guest's kernel runs them,
/// and sees its own flags. (A hostile guest that names a host device node in a volume gets
/// `EACCES`, not the device.)
const HARMLESS: libc::c_ulong = libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOEXEC;

/// virtiofsd's descriptor limit (its own default; the kernel's `nr_open` is 1048576).
const NOFILE: libc::rlim_t = 1_000_000;

/// Raises the descriptor limit while still root on the host (virtiofsd holds one descriptor
/// per inode the guest uses, having no file handles): to [`NOFILE`], or to the hard limit
/// where raising that is not allowed (no `CAP_SYS_RESOURCE`). Async-signal-safe.
fn raise_nofile() -> std::io::Result<()> {
    let mut lim = libc::rlimit { rlim_cur: NOFILE, rlim_max: NOFILE };
    // SAFETY: lim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        return Ok(());
    }
    // SAFETY: lim is a valid rlimit to fill, then to set.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A pod's share and its virtiofsd.
#[derive(Debug)]
pub struct PodShare {
    id: String,
    socket: PathBuf,
    server: Option<Child>,
}

impl PodShare {
    /// Makes the share of pod `id` with `volumes` and starts virtiofsd on it, listening on
    /// `socket` (a path the VMM connects to).
    pub fn start(id: &str, volumes: &[HostDir], socket: &Path) -> Result<PodShare, VolumeError> {
        Self::start_with(id, volumes, socket, || Ok(()))
    }

    /// Like [`PodShare::start`]; virtiofsd's process runs `before_exec` between fork and
    /// exec (system calls only: joining the pod's cgroup, say).
    pub fn start_with(
        id: &str,
        volumes: &[HostDir],
        socket: &Path,
        mut before_exec: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Result<PodShare, VolumeError> {
        let virtiofsd = crate::virtiofsd::path()?;
        teardown(id);
        let mut share = PodShare { id: id.to_string(), socket: socket.to_path_buf(), server: None };
        let dir = share_dir(id);
        ironpod_images::private::private_run_root().map_err(io("create /run/ironpod"))?;
        std::fs::create_dir_all(SHARES_DIR).map_err(io(format!("create {SHARES_DIR}")))?;
        std::fs::create_dir(&dir).map_err(io(format!("create {}", dir.display())))?;
        // A mount of its own, shared: what is mounted in it later (a container's volumes
        // added to a running pod) reaches virtiofsd's namespace too.
        mount(Some(&dir), &dir, libc::MS_BIND)?;
        mount(None, &dir, libc::MS_BIND | libc::MS_REMOUNT | HARMLESS)?;
        mount(None, &dir, libc::MS_SHARED)?;
        for (i, v) in volumes.iter().enumerate() {
            share.bind(&share_entry(i), &v.path, v.read_only)?;
        }
        let _ = std::fs::remove_file(socket);
        let listener =
            UnixListener::bind(socket).map_err(io(format!("bind {}", socket.display())))?;
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new(&virtiofsd);
        cmd.arg("--fd")
            .arg(fd.to_string())
            .arg("--shared-dir")
            .arg(&dir)
            // Its own mount, pid and network namespaces (inside the user namespace made
            // below), pivoted into the share; its own seccomp allowlist (a forbidden
            // syscall kills it). No file handles: opening one needs CAP_DAC_READ_SEARCH in
            // the host's namespace, which it has not. The descriptor limit is set here.
            .args(["--sandbox", "namespace", "--seccomp", "kill"])
            .args(["--inode-file-handles=never", "--rlimit-nofile", "0"])
            .args(["--cache", "auto", "--no-announce-submounts"])
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls: fcntl on a descriptor
        // this process owns, so that virtiofsd inherits the listening socket, the caller's
        // `before_exec`, which promises the same, setrlimit, and entering the user
        // namespace (made for this place).
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                before_exec()?;
                raise_nofile()?;
                crate::userns::enter_identity_userns()
            });
        }
        let child = cmd.spawn().map_err(io(format!("start {}", virtiofsd.display())))?;
        tracing::debug!(%id, pid = child.id(), "virtiofsd started");
        share.server = Some(child);
        Ok(share)
    }
}

impl PodShare {
    /// virtiofsd's socket (for the VMM).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Adds host directory or file `source` to the share as `entry` (a read-only bind mount
    /// if asked; visible to the running guest at once); returns its path in the guest.
    pub fn bind(&self, entry: &str, source: &Path, read_only: bool) -> Result<String, VolumeError> {
        if entry.is_empty()
            || entry.len() > 200
            || entry.starts_with('.')
            || entry.contains(['/', '\0'])
        {
            return Err(VolumeError::Invalid(format!("bad share entry name {entry:?}")));
        }
        let target = share_dir(&self.id).join(entry);
        let is_dir =
            std::fs::metadata(source).map_err(io(format!("share {}", source.display())))?.is_dir();
        // The mount point: an empty directory, or an empty file for a file.
        let made = if is_dir {
            std::fs::create_dir(&target)
        } else {
            std::fs::OpenOptions::new().write(true).create_new(true).open(&target).map(drop)
        };
        made.map_err(io(format!("create {}", target.display())))?;
        let made = mount(Some(source), &target, libc::MS_BIND).and_then(|()| {
            let ro = if read_only { libc::MS_RDONLY } else { 0 };
            mount(None, &target, libc::MS_BIND | libc::MS_REMOUNT | HARMLESS | ro)
        });
        if let Err(e) = made {
            unmount_all(&target);
            remove_entry(&target);
            return Err(e);
        }
        Ok(format!("{}/{entry}", ironpod_protocol::SHARE_DIR))
    }

    /// Takes the entries whose names start with `prefix` out of the share.
    pub fn unbind(&self, prefix: &str) {
        let dir = share_dir(&self.id);
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                unmount_all(&e.path());
                remove_entry(&e.path());
            }
        }
    }
}

/// Removes an entry's (unmounted, empty) mount point. Still mounted, it stays: unlinking a
/// mount point fails, and a directory is only removed when empty.
fn remove_entry(p: &Path) {
    if std::fs::remove_dir(p).is_err() {
        let is_file = std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0);
        if is_file && mounts_under(p).is_empty() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Unmounts everything at or under `dir` (deepest first).
fn unmount_all(dir: &Path) {
    for _ in 0..4 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        for m in mounts.iter().rev() {
            if let Ok(c) = cpath(m) {
                // SAFETY: c is a valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

impl Drop for PodShare {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        teardown(&self.id);
    }
}

/// Mount points at or under `dir`, deepest last (from `/proc/self/mountinfo`).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Takes pod `id`'s share down (after a crash too): unmounts everything in it and removes
/// its empty directories. Never deletes files: a volume that stays mounted stays whole.
pub fn teardown(id: &str) {
    let dir = share_dir(id);
    if !dir.exists() {
        return;
    }
    unmount_all(&dir);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            remove_entry(&e.path());
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host half of a share (root only: it mounts): read-only volumes refuse writes on the
    /// host, teardown leaves the volumes' files and no mounts.
    #[test]
    fn share_mounts_and_teardown() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test mounts: run it as root");
        crate::virtiofsd::path().expect("virtiofsd (cargo xtask deps)");
        let tmp = tempfile::tempdir().unwrap();
        let (rw, ro) = (tmp.path().join("rw"), tmp.path().join("ro"));
        std::fs::create_dir_all(&rw).unwrap();
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::write(ro.join("kept"), b"1").unwrap();
        let id = format!("{:064x}", std::process::id());
        let sock = tmp.path().join("fs.sock");
        let share = PodShare::start(
            &id,
            &[
                HostDir { path: rw.clone(), read_only: false },
                HostDir { path: ro.clone(), read_only: true },
            ],
            &sock,
        )
        .unwrap();
        let dir = share_dir(&id);
        std::fs::write(dir.join("v0/new"), b"2").unwrap();
        assert_eq!(std::fs::read(rw.join("new")).unwrap(), b"2");
        let err = std::fs::write(dir.join("v1/x"), b"3").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        assert_eq!(mounts_under(&dir).len(), 3);
        // Nothing in the share is a device, set-uid program or executable to the host.
        let flags = mount_options(&dir);
        assert_eq!(flags.len(), 3, "{flags:?}");
        for f in &flags {
            assert!(["nodev", "nosuid", "noexec"].iter().all(|o| f.contains(o)), "{flags:?}");
        }
        mknod_null(&rw.join("null"));
        let err = std::fs::read(dir.join("v0/null")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "a host device opened in a volume");
        // virtiofsd is up, in a user namespace of its own with the identity map, and its
        // sandboxed child too.
        let pid = share.server.as_ref().unwrap().id();
        // (virtiofsd's first child is short-lived: the sandboxed one is looked up again below.)
        let mut child = wait_for_child(pid);
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        for p in [pid, child] {
            let ns = std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
            assert_ne!(ns, ours, "virtiofsd {p} is in the host's user namespace");
            let map = std::fs::read_to_string(format!("/proc/{p}/uid_map")).unwrap();
            assert_eq!(map.split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"]);
        }
        // Its server sees the share as its whole file system: the share and its two volumes.
        let mut seen = String::new();
        for _ in 0..200 {
            // The first child may be gone (or a zombie: EINVAL) by now: the sandboxed child
            // is whichever runs.
            child = wait_for_child(pid);
            seen = std::fs::read_to_string(format!("/proc/{child}/mountinfo")).unwrap_or_default();
            if seen.lines().count() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let points: Vec<&str> = seen.lines().filter_map(|l| l.split(' ').nth(4)).collect();
        assert_eq!(points, ["/", "/v0", "/v1"], "{seen}");
        // Entries come and go while the pod runs.
        assert_eq!(share.bind("c1-0", &ro, true).unwrap(), "/run/ironpod/shared/c1-0");
        assert!(share.bind("../x", &ro, false).is_err());
        assert_eq!(std::fs::read(dir.join("c1-0/kept")).unwrap(), b"1");
        // … and reach the running virtiofsd's sandbox.
        let mut seen = String::new();
        for _ in 0..200 {
            // The first child may be gone (or a zombie: EINVAL) by now: the sandboxed child
            // is whichever runs.
            child = wait_for_child(pid);
            seen = std::fs::read_to_string(format!("/proc/{child}/mountinfo")).unwrap_or_default();
            if seen.contains(" /c1-0 ") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(seen.contains(" /c1-0 "), "{seen}");
        // A file is shared as itself (its contents, mode and writes).
        let file = tmp.path().join("hosts");
        std::fs::write(&file, b"127.0.0.1 localhost\n").unwrap();
        share.bind("c1-1", &file, false).unwrap();
        std::fs::write(dir.join("c1-1"), b"written through\n").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"written through\n");
        share.unbind("c1-");
        assert!(!dir.join("c1-0").exists() && !dir.join("c1-1").exists());
        assert_eq!(std::fs::read(&file).unwrap(), b"written through\n");
        assert_eq!(mounts_under(&dir).len(), 3);
        drop(share);
        assert!(!dir.exists());
        assert!(mounts_under(&dir).is_empty());
        assert_eq!(std::fs::read(ro.join("kept")).unwrap(), b"1");
        assert_eq!(std::fs::read(rw.join("new")).unwrap(), b"2");
    }

    /// The mount options of the mounts at or under `dir`.
    fn mount_options(dir: &Path) -> Vec<String> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        text.lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|f| f.len() > 5 && Path::new(f[4]).starts_with(dir))
            .map(|f| f[5].to_string())
            .collect()
    }

    fn mknod_null(path: &Path) {
        let c = cpath(path).unwrap();
        // SAFETY: a valid path; makes the character device 1:3 (/dev/null).
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }

    /// The pid of the first child of `pid` (virtiofsd's sandboxed server), waiting for it.
    fn wait_for_child(pid: u32) -> u32 {
        for _ in 0..200 {
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
            if let Some(c) = children.split_whitespace().next() {
                return c.parse().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("virtiofsd {pid} started no sandboxed child");
    }
}
