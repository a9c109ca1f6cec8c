//! The jail every VMM runs in (see vmm/README.md, "Isolation on the host", for the threat
//! model).
//!
//! The launcher (this crate, running as root) makes the jail and then starts the VMM into
//! it; the VMM never holds a privilege:
//! - a user and group of its own ([`ids`]), no capabilities, `no_new_privs`;
//! - new pid (made by the launcher's spawning thread), mount, IPC and UTS namespaces, and the
//!   pod's network namespace (or a new, empty one);
//! - as `/`, a small tmpfs (the VM's runtime directory) holding only what it needs: the
//!   static VMM binary, kernel and initramfs (bound read-only), its own `/dev/kvm` and, with
//!   cards, `/dev/net/tun` device nodes, its disks (bound; read-only ones read-only), its
//!   sockets, config and logs;
//! - resource limits on open files, file size, threads and core dumps.
//!
//! The jail's root is a shared mount on the host, so disks bound into it while the VM runs
//! (the late boot configuration, the shim's layer disks) appear inside.

pub mod enter;
pub mod ids;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use enter::Entry;
pub use ids::PodIds;

/// Size of the jail's tmpfs: its sockets, config, VMM log and the guest's console log
/// (which stops growing there).
pub const JAIL_TMPFS_BYTES: u64 = 16 << 20;
/// Open files a VMM may hold (devices, queues' event fds, vsock connections).
pub const MAX_OPEN_FILES: u64 = 4096;
/// Threads beyond its vCPUs a VMM may run (event loop, API, tap helper, spares).
pub const EXTRA_THREADS: u64 = 16;
/// Where the VMM binary is inside the jail.
pub const VMM_IN_JAIL: &str = "/ironpod-vmm";

/// Errors making a jail.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A step failed.
    #[error("jail: {what}: {source}")]
    Io {
        /// What.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// Something handed to the jail cannot go in it: a dynamically linked VMM binary, a
    /// device path that is not a device, a disk without a file name, a network card
    /// outside the VMM's network namespace.
    #[error("{0}")]
    Unfit(String),
}

fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    let what = what.into();
    move |source| JailError::Io { what, source }
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstring).transpose()?;
    let target = cstring(target)?;
    let fstype = fstype.map(CString::new).transpose().map_err(io::Error::other)?;
    let data = data.map(CString::new).transpose().map_err(io::Error::other)?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call (or null).
    let r = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast::<libc::c_void>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unmount(target: &Path) -> io::Result<()> {
    let c = cstring(target)?;
    // SAFETY: umount2 with a valid C string; MNT_DETACH also takes every mount below.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the ELF file at `path` needs no program interpreter (is statically linked): a
/// jail holds no shared libraries.
pub fn is_static_elf(path: &Path) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(path)?;
    let mut h = [0u8; 64];
    f.read_exact(&mut h)?;
    if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a 64-bit little-endian ELF"));
    }
    let phoff = u64::from_le_bytes(h[0x20..0x28].try_into().unwrap_or_default());
    let phentsize = u16::from_le_bytes([h[0x36], h[0x37]]) as u64;
    let phnum = u16::from_le_bytes([h[0x38], h[0x39]]) as u64;
    if phentsize < 4 || phnum > 256 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad program headers"));
    }
    for i in 0..phnum {
        f.seek(SeekFrom::Start(phoff + i * phentsize))?;
        let mut t = [0u8; 4];
        f.read_exact(&mut t)?;
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(t) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Makes a shared read-only disk (an image layer) readable by the VMMs' users: the store
/// keeps others out with its private directories, not with the files' modes.
fn readable_by_others(path: &Path) -> Result<(), JailError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(step(format!("stat {}", path.display())))?;
    let mode = meta.permissions().mode();
    if mode & 0o004 == 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o004))
            .map_err(step(format!("make {} readable to the VMM", path.display())))?;
    }
    Ok(())
}

/// A VM's jail: its runtime directory as a tmpfs owned by the VM's own user. Dropping it
/// unmounts everything in it and frees the user.
#[derive(Debug)]
pub struct Jail {
    root: PathBuf,
    ids: PodIds,
    mounted: bool,
    disks: u32,
}

impl Jail {
    /// Makes the jail at `root` (an empty directory) with a fresh user and group.
    pub fn create(root: &Path, seed: u64) -> Result<Jail, JailError> {
        let ids = PodIds::claim(root, seed).map_err(step("claim a VMM user id"))?;
        let opts = format!(
            "size={JAIL_TMPFS_BYTES},nr_inodes=1024,mode=0700,uid={},gid={}",
            ids.uid, ids.gid
        );
        mount(
            Some(Path::new("tmpfs")),
            root,
            Some("tmpfs"),
            // Device nodes work in it: the VMM's /dev/kvm is made here (the VMM, without
            // CAP_MKNOD, cannot make any).
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(&opts),
        )
        .map_err(step(format!("mount a tmpfs on {}", root.display())))?;
        let jail = Jail { root: root.to_path_buf(), ids, mounted: true, disks: 0 };
        mount(None, root, None, libc::MS_SHARED, None)
            .map_err(step(format!("make {} shared", root.display())))?;
        jail.mkdir("dev")?;
        Ok(jail)
    }

    /// The VMM's user id.
    pub fn uid(&self) -> u32 {
        self.ids.uid
    }

    /// The VMM's group id.
    pub fn gid(&self) -> u32 {
        self.ids.gid
    }

    /// The jail's root on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records the VMM's pid as the holder of its user id.
    pub fn record_owner(&self, pid: u32) -> io::Result<()> {
        self.ids.record(pid)
    }

    /// The host path of `inside` (an absolute path in the jail).
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        self.root.join(inside.strip_prefix("/").unwrap_or(inside))
    }

    fn mkdir(&self, rel: &str) -> Result<(), JailError> {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).map_err(step(format!("create {}", p.display())))
    }

    /// Binds the host file `source` at `inside` (absolute, in the jail), read-only if
    /// asked; returns `inside`.
    pub fn bind(&self, source: &Path, inside: &str, read_only: bool) -> Result<PathBuf, JailError> {
        let target = self.host_path(Path::new(inside));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(step(format!("create {}", parent.display())))?;
        }
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&target)
            .map_err(step(format!("create {}", target.display())))?;
        let what = || format!("bind {} into the jail", source.display());
        mount(Some(source), &target, None, libc::MS_BIND, None).map_err(step(what()))?;
        if read_only {
            let flags = libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV;
            mount(None, &target, None, flags, None).map_err(step(what()))?;
        }
        Ok(PathBuf::from(inside))
    }

    /// Binds the host directory `source`, writable, at `inside` (absolute, in the jail)
    /// and makes it the VMM user's: where a template's VMM writes its snapshot.
    pub fn bind_dir(&self, source: &Path, inside: &str) -> Result<PathBuf, JailError> {
        let target = self.host_path(Path::new(inside));
        fs::create_dir_all(&target).map_err(step(format!("create {}", target.display())))?;
        self.give(source)?;
        let what = || format!("bind {} into the jail", source.display());
        mount(Some(source), &target, None, libc::MS_BIND, None).map_err(step(what()))?;
        let flags =
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mount(None, &target, None, flags, None).map_err(step(what()))?;
        Ok(PathBuf::from(inside))
    }

    /// Makes at `inside` a character device node like the host's `host` (`/dev/kvm`,
    /// `/dev/net/tun`), owned by the VMM's user and readable and writable by it alone.
    pub fn device(&self, host: &Path, inside: &str) -> Result<(), JailError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = fs::metadata(host).map_err(step(format!("stat {}", host.display())))?;
        if !meta.file_type().is_char_device() {
            return Err(JailError::Unfit(format!("{} is not a device", host.display())));
        }
        let target = self.host_path(Path::new(inside));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(step(format!("create {}", parent.display())))?;
        }
        let c = cstring(&target).map_err(step("device path"))?;
        // SAFETY: mknod(2) with a valid C string and the host device's number.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, meta.rdev()) } != 0 {
            return Err(step(format!("make {}", target.display()))(io::Error::last_os_error()));
        }
        self.give(&target)
    }

    /// Takes back what [`Jail::bind`] put at `inside`.
    pub fn unbind(&self, inside: &Path) -> Result<(), JailError> {
        let target = self.host_path(inside);
        unmount(&target).map_err(step(format!("unmount {}", target.display())))?;
        let _ = fs::remove_file(&target);
        Ok(())
    }

    /// Binds a disk image into the jail (as `/disks/N/<its file name>`: the guest knows a
    /// disk by its file name); a writable one becomes the VMM user's file.
    pub fn expose_disk(&mut self, source: &Path, read_only: bool) -> Result<PathBuf, JailError> {
        let name = source
            .file_name()
            .ok_or_else(|| JailError::Unfit(format!("disk {} has no file name", source.display())))?
            .to_string_lossy()
            .into_owned();
        if read_only {
            readable_by_others(source)?;
        } else {
            self.give(source)?;
        }
        self.disks += 1;
        self.bind(source, &format!("/disks/{}/{name}", self.disks), read_only)
    }

    /// Makes the host file `path` (a disk or a socket the VMM connects to) the VMM user's.
    pub fn give(&self, path: &Path) -> Result<(), JailError> {
        std::os::unix::fs::chown(path, Some(self.uid()), Some(self.gid()))
            .map_err(step(format!("give {} to the VMM's user", path.display())))
    }

    /// What the VMM's process does before exec.
    pub fn entry(&self, new_netns: bool, vcpus: u8, max_file: u64, die_with_parent: bool) -> Entry {
        Entry {
            root: cstring(&self.root).unwrap_or_default(),
            uid: self.uid(),
            gid: self.gid(),
            new_netns,
            limits: vec![
                (libc::RLIMIT_NOFILE, MAX_OPEN_FILES),
                (libc::RLIMIT_FSIZE, max_file),
                (libc::RLIMIT_NPROC, u64::from(vcpus) + EXTRA_THREADS),
                (libc::RLIMIT_CORE, 0),
            ],
            die_with_parent,
        }
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = unmount(&self.root) {
                tracing::warn!(root = %self.root.display(), "cannot unmount a VM's jail: {e}");
            }
            self.mounted = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_binaries() {
        // This test binary is dynamically linked.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        fs::write(&junk, [0u8; 100]).unwrap();
        assert!(is_static_elf(&junk).is_err());
    }
}
