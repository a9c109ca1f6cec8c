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

    /// The disk of `dir`, built now if the cache does not have it.
    pub fn disk_for(&self, dir: &Path) -> Result<PathBuf, RootfsError> {
        let disk = self.dir.join(format!("{}.erofs", Self::key(dir)?));
        if disk.is_file() {
            return Ok(disk);
        }
        fs::create_dir_all(&self.dir).map_err(io(format!("create {}", self.dir.display())))?;
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            disk.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let out = Command::new("mkfs.erofs")
            .arg("--quiet")
            .arg("--preserve-mtime")
            .arg(&tmp)
            .arg(dir)
            .output()
            .map_err(io("run mkfs.erofs (install erofs-utils)"))?;
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
        fs::rename(&tmp, &disk).map_err(io(format!("install {}", disk.display())))?;
        Ok(disk)
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
}
