//! A container's root filesystem from what containerd hands the shim.
//!
//! containerd's overlayfs snapshotter describes the root as one `overlay` mount
//! (`lowerdir=top:…:bottom`, `upperdir`, `workdir`), or as a `bind` mount when the snapshot
//! has a single directory. The pod VM cannot see host directories, so every lower
//! directory — a committed snapshot, which containerd never changes — becomes a read-only
//! erofs disk, built once and kept in a cache keyed by the directory's path and identity.
//! The container writes into the pod's writable disk, as with `ironpod run`, so its changes
//! stay inside the VM (like Kata's block-device root filesystems) and containerd's upper
//! directory stays empty.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Why a root filesystem could not be turned into disks.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount containerd sent is not one we understand.
    #[error("unsupported rootfs mount: {0}")]
    Unsupported(String),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// mkfs.erofs failed.
    #[error("mkfs.erofs for {dir}: {msg}")]
    Mkfs {
        /// The directory.
        dir: String,
        /// Its error output.
        msg: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RootfsError {
    let what = what.into();
    move |source| RootfsError::Io { what, source }
}

/// One mount of a container's root, as containerd sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMount {
    /// Mount type (`overlay`, `bind`).
    pub kind: String,
    /// Source.
    pub source: String,
    /// Options.
    pub options: Vec<String>,
}

/// The read-only directories of a root filesystem, bottom layer first.
pub fn lower_dirs(mounts: &[RootMount], bundle: &Path) -> Result<Vec<PathBuf>, RootfsError> {
    match mounts {
        // No mounts: the bundle's `rootfs` directory is the root, ready-made.
        [] => Ok(vec![bundle.join("rootfs")]),
        [m] if m.kind == "overlay" => {
            let lower =
                m.options.iter().find_map(|o| o.strip_prefix("lowerdir=")).ok_or_else(|| {
                    RootfsError::Unsupported("overlay mount without lowerdir".into())
                })?;
            let mut dirs: Vec<PathBuf> = lower.split(':').map(PathBuf::from).collect();
            // overlayfs lists the top layer first.
            dirs.reverse();
            for d in &dirs {
                if !d.is_absolute() {
                    return Err(RootfsError::Unsupported(format!(
                        "relative lowerdir {}",
                        d.display()
                    )));
                }
            }
            Ok(dirs)
        }
        [m] if m.kind == "bind" || m.kind == "rbind" => {
            let p = PathBuf::from(&m.source);
            if !p.is_absolute() {
                return Err(RootfsError::Unsupported(format!("relative bind source {}", m.source)));
            }
            Ok(vec![p])
        }
        [m] => Err(RootfsError::Unsupported(format!("mount type {:?}", m.kind))),
        _ => Err(RootfsError::Unsupported(format!(
            "{} rootfs mounts (one overlay or bind mount expected)",
            mounts.len()
        ))),
    }
}

/// A cache of erofs disks built from snapshot directories.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    /// A cache kept in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LayerCache { dir: dir.into() }
    }

    /// The cache key of a directory: its path and identity (device, inode, change time), so
    /// a snapshot removed and re-created under the same path gets a new disk.
    fn key(dir: &Path) -> Result<String, RootfsError> {
        let m = fs::metadata(dir).map_err(io(format!("stat {}", dir.display())))?;
        if !m.is_dir() {
            return Err(RootfsError::Unsupported(format!("{} is not a directory", dir.display())));
        }
        let mut h = Sha256::new();
        h.update(dir.as_os_str().as_encoded_bytes());
        h.update(format!("\0{}:{}:{}.{}", m.dev(), m.ino(), m.ctime(), m.ctime_nsec()));
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(hex[..40].to_string())
    }

    /// Where the disk of `dir` is (or will be) kept; nothing is built.
    pub fn disk_path(&self, dir: &Path) -> Result<PathBuf, RootfsError> {
        Ok(self.dir.join(format!("{}.erofs", Self::key(dir)?)))
    }

    /// The disk of `dir`, built now if the cache does not have it.
    pub fn disk_for(&self, dir: &Path) -> Result<PathBuf, RootfsError> {
        let disk = self.disk_path(dir)?;
        if disk.is_file() {
            return Ok(disk);
        }
        self.build(&disk, dir, None)?;
        Ok(disk)
    }

    /// One disk holding the merged view of `dirs` (bottom first, at least two): what a
    /// running pod VM gets for an image of several layers it lacks, taking one disk slot
    /// instead of one per layer. Whiteouts and opaque directories are resolved by
    /// overlayfs, mounted read-only in a mount namespace of `mkfs.erofs`'s own, so nothing
    /// stays mounted on the host whatever happens.
    pub fn flat_disk_for(&self, dirs: &[PathBuf]) -> Result<PathBuf, RootfsError> {
        if dirs.len() < 2 {
            return Err(RootfsError::Unsupported("a flattened disk needs two layers".into()));
        }
        let mut h = Sha256::new();
        for d in dirs {
            h.update(Self::key(d)?);
            h.update(b"\0");
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        // The serial (first 20 bytes of the name) must differ from per-layer disks'.
        let disk = self.dir.join(format!("f{}.erofs", &hex[..39]));
        if disk.is_file() {
            return Ok(disk);
        }
        // overlayfs lists the top layer first.
        let lower: Vec<String> = dirs.iter().rev().map(|d| d.display().to_string()).collect();
        let lower = lower.join(":");
        if lower.contains(',') || lower.len() > 3800 {
            return Err(RootfsError::Unsupported(format!(
                "cannot stack {} layer directories in one overlay mount",
                dirs.len()
            )));
        }
        self.build(&disk, &self.dir.join(".flat-mnt"), Some(format!("lowerdir={lower}")))?;
        Ok(disk)
    }

    /// Builds `disk` from `dir` (temp file, fsync, rename). With `overlay`, `dir` is a
    /// mount point where that overlay is mounted first, in mkfs.erofs' own mount namespace.
    fn build(&self, disk: &Path, dir: &Path, overlay: Option<String>) -> Result<(), RootfsError> {
        // The shim's state root (the cache's parent) is root's only.
        if let Some(state_root) = self.dir.parent() {
            ironpod_images::private::private_dir(state_root)
                .map_err(io(format!("create {}", state_root.display())))?;
        }
        fs::create_dir_all(&self.dir).map_err(io(format!("create {}", self.dir.display())))?;
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            disk.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let mut cmd = Command::new("mkfs.erofs");
        cmd.arg("--quiet").arg("--preserve-mtime").arg(&tmp).arg(dir);
        if let Some(options) = overlay {
            fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
            let target = CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|_| RootfsError::Unsupported("mount point with NUL".into()))?;
            let data = CString::new(options)
                .map_err(|_| RootfsError::Unsupported("layer path with NUL".into()))?;
            // SAFETY: between fork and exec the child only makes system calls on strings
            // prepared before the fork.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(move || private_overlay(&target, &data));
            }
        }
        let out = cmd.output().map_err(io("run mkfs.erofs (install erofs-utils)"))?;
        if !out.status.success() {
            let _ = fs::remove_file(&tmp);
            return Err(RootfsError::Mkfs {
                dir: dir.display().to_string(),
                msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("sync {}", tmp.display())))?;
        // Another shim may have built the same disk meanwhile: both are identical.
        fs::rename(&tmp, disk).map_err(io(format!("install {}", disk.display())))?;
        Ok(())
    }

    /// Removes cached disks not used for `max_age` (their snapshots are likely gone); a
    /// disk in use stays open in its VMM, so removing its name is harmless.
    pub fn prune(&self, keep: &[PathBuf], max_age: std::time::Duration) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if keep.contains(&p) || p.extension().is_none_or(|x| x != "erofs") {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.accessed())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            if old {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

/// In the forked child of mkfs.erofs: a mount namespace of its own (gone with the process),
/// nothing propagating back to the host, and the read-only overlay at `target`.
fn private_overlay(target: &CString, data: &CString) -> std::io::Result<()> {
    let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    // SAFETY: plain system calls on valid NUL-terminated strings.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_RDONLY,
            data.as_ptr().cast(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, source: &str, options: &[&str]) -> RootMount {
        RootMount {
            kind: kind.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn overlay_lowers_come_bottom_first() {
        let got = lower_dirs(
            &[m(
                "overlay",
                "overlay",
                &["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/top:/mid:/base"],
            )],
            Path::new("/b"),
        )
        .unwrap();
        assert_eq!(got, vec![PathBuf::from("/base"), PathBuf::from("/mid"), PathBuf::from("/top")]);
    }

    #[test]
    fn bind_and_bundle_roots() {
        assert_eq!(
            lower_dirs(&[m("bind", "/snap/1/fs", &["rbind", "ro"])], Path::new("/b")).unwrap(),
            vec![PathBuf::from("/snap/1/fs")]
        );
        assert_eq!(lower_dirs(&[], Path::new("/b")).unwrap(), vec![PathBuf::from("/b/rootfs")]);
    }

    #[test]
    fn hostile_mounts_are_refused() {
        let b = Path::new("/b");
        assert!(lower_dirs(&[m("overlay", "x", &["upperdir=/u"])], b).is_err());
        assert!(lower_dirs(&[m("overlay", "x", &["lowerdir=rel:/abs"])], b).is_err());
        assert!(lower_dirs(&[m("nfs", "h:/x", &[])], b).is_err());
        assert!(lower_dirs(&[m("bind", "rel", &[])], b).is_err());
        assert!(lower_dirs(&[m("bind", "/a", &[]), m("bind", "/b", &[])], b).is_err());
    }

    #[test]
    fn cache_builds_once_and_keys_by_identity() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("snap");
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("etc/hello"), "hi").unwrap();
        let cache = LayerCache::new(t.path().join("cache"));
        let a = cache.disk_for(&src).unwrap();
        assert!(a.is_file());
        let mtime = fs::metadata(&a).unwrap().modified().unwrap();
        assert_eq!(cache.disk_for(&src).unwrap(), a);
        assert_eq!(fs::metadata(&a).unwrap().modified().unwrap(), mtime);
        // Re-created under the same path: a new disk.
        fs::remove_dir_all(&src).unwrap();
        fs::create_dir_all(&src).unwrap();
        assert_ne!(cache.disk_for(&src).unwrap(), a);
        assert!(cache.disk_for(&t.path().join("missing")).is_err());
    }

    #[test]
    fn flattened_disk_resolves_whiteouts() {
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(root, "needs root (a mount namespace), as the shim has; run tests as root");
        let t = tempfile::tempdir().unwrap();
        let (base, top) = (t.path().join("base"), t.path().join("top"));
        fs::create_dir_all(base.join("etc")).unwrap();
        fs::write(base.join("etc/keep"), "base").unwrap();
        fs::write(base.join("etc/gone"), "base").unwrap();
        fs::create_dir_all(top.join("etc")).unwrap();
        fs::write(top.join("etc/keep"), "top").unwrap();
        // An overlay whiteout: a 0/0 character device.
        let wh = CString::new(top.join("etc/gone").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mknod on a valid path.
        assert_eq!(unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR, 0) }, 0);
        let cache = LayerCache::new(t.path().join("cache"));
        let disk = cache.flat_disk_for(&[base.clone(), top.clone()]).unwrap();
        assert_eq!(cache.flat_disk_for(&[base.clone(), top.clone()]).unwrap(), disk);
        assert_ne!(cache.flat_disk_for(&[top.clone(), base.clone()]).unwrap(), disk);
        assert!(cache.flat_disk_for(std::slice::from_ref(&base)).is_err());
        // What the image holds, extracted by fsck.erofs (erofs-utils).
        let out_dir = t.path().join("out");
        let out = Command::new("fsck.erofs")
            .arg(format!("--extract={}", out_dir.display()))
            .arg(&disk)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(fs::read_to_string(out_dir.join("etc/keep")).unwrap(), "top");
        assert!(!out_dir.join("etc/gone").exists());
        // Nothing stayed mounted.
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(!mounts.contains(".flat-mnt"), "{mounts}");
    }
}
