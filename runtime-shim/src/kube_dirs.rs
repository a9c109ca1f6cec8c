//! Kubernetes' read-only volume directories (configMap, secret, projected — the service
//! account token — and downward API), copied into the guest and kept current.
//!
//! A kubelet writes such a volume with its atomic writer: the files live in a hidden
//! directory named after the time of writing, `..data` is a symbolic link to it, and each
//! top-level name is a link through `..data`. An update writes a new hidden directory,
//! replaces `..data` in one rename and removes the old one, so a reader never sees half of
//! an update. The pod's guest gets the same layout in its memory (see [`crate::copies`]
//! for why not the share): the current version is copied, and a watcher of the pod looks at
//! each copied volume's `..data` every [`WATCH_PERIOD`] and replays an update the same way
//! in the guest (new directory, `..data` replaced by a rename, old directory removed). A
//! kubelet itself refreshes these volumes about once a minute.
//!
//! A directory without `..data`, one that is not read-only, or one larger than
//! [`MAX_VOLUME_BYTES`] or [`MAX_VOLUME_FILES`] goes through the share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ironpod_protocol::FileAttrs;
use sha2::{Digest, Sha256};

/// How often the copied volumes are compared with the host's.
pub const WATCH_PERIOD: Duration = Duration::from_secs(2);
/// Largest volume copied (all its files): a configMap or a secret holds at most 1 MiB.
pub const MAX_VOLUME_BYTES: u64 = 4 << 20;
/// Most files (and directories) of a volume copied.
pub const MAX_VOLUME_FILES: usize = 1024;

/// The volume plugins whose directories the kubelet writes atomically.
const PLUGINS: [&str; 4] = [
    "kubernetes.io~configmap",
    "kubernetes.io~secret",
    "kubernetes.io~projected",
    "kubernetes.io~downward-api",
];

/// Whether a read-only bind of host directory `source` is such a volume (by where the
/// kubelet keeps it: `…/volumes/<plugin>/<name>`, and its `..data` link).
pub fn is_kube_volume(source: &Path) -> bool {
    let plugin = source.parent().and_then(Path::file_name).and_then(|n| n.to_str());
    plugin.is_some_and(|p| PLUGINS.contains(&p))
        && source.join("..data").symlink_metadata().is_ok_and(|m| m.is_symlink())
}

/// A memory-backed emptyDir (`medium: Memory`): the kubelet mounts a tmpfs at the volume's
/// directory. The pod gets a tmpfs of the same size in its guest instead of the host's
/// through the share (as Kata does): its containers share it, its pages are the VM's, and
/// nothing on the host reads an emptyDir's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryDir {
    /// The tmpfs's size in bytes.
    pub bytes: u64,
    /// Its root's permission bits and owner.
    pub attrs: FileAttrs,
}

/// `statfs(2)` magic of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Whether host directory `source` is a memory-backed emptyDir, still empty: a tmpfs mounted
/// at `…/volumes/kubernetes.io~empty-dir/<name>` itself (not a directory on a tmpfs that
/// holds more).
pub fn memory_empty_dir(source: &Path) -> Option<MemoryDir> {
    use std::os::unix::fs::MetadataExt;
    let plugin = source.parent().and_then(Path::file_name).and_then(|n| n.to_str());
    if plugin != Some("kubernetes.io~empty-dir") {
        return None;
    }
    let meta = std::fs::symlink_metadata(source).ok().filter(|m| m.is_dir())?;
    let parent = std::fs::metadata(source.parent()?).ok()?;
    if meta.dev() == parent.dev() || std::fs::read_dir(source).ok()?.next().is_some() {
        return None;
    }
    let c = std::ffi::CString::new(source.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs into a zeroed struct we own, with a NUL-terminated path.
    let st = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st) == 0).then_some(st)?
    };
    if st.f_type as i64 != TMPFS_MAGIC {
        return None;
    }
    let bytes = (st.f_blocks as u64).saturating_mul(st.f_bsize as u64);
    let attrs = FileAttrs { mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid() };
    Some(MemoryDir { bytes, attrs })
}

/// A short name for host directory `source`.
fn key(source: &Path) -> String {
    let sum = Sha256::digest(source.as_os_str().as_encoded_bytes());
    sum.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The guest directory holding the copy of volume `source`.
pub fn guest_dir(source: &Path) -> String {
    format!("{}/vol-{}", crate::copies::COPIES_DIR, key(source))
}

/// Where the guest mounts the tmpfs standing for memory-backed emptyDir `source`.
pub fn tmpfs_dir(source: &Path) -> String {
    format!("{}/emptydir-{}", crate::copies::COPIES_DIR, key(source))
}

/// One version of a volume as the host holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The hidden directory `..data` points at.
    pub name: String,
    /// Its files: path inside it, bytes, mode and owner.
    pub files: Vec<(String, Vec<u8>, FileAttrs)>,
    /// The volume's top-level names (links through `..data`).
    pub top: Vec<String>,
}

/// The name `..data` of volume `dir` points at now.
pub fn current(dir: &Path) -> Result<String, String> {
    let link = dir.join("..data");
    let target = std::fs::read_link(&link).map_err(|e| format!("{}: {e}", link.display()))?;
    let name = target.to_str().unwrap_or("");
    if !name.starts_with("..") || name.contains('/') || name == ".." || name == "..data" {
        return Err(format!("{} points at {}, not a version", link.display(), target.display()));
    }
    Ok(name.to_string())
}

/// Reads the current version of volume `dir` (within the limits; symbolic links inside
/// the version are refused, as the kubelet writes none).
pub fn read_version(dir: &Path) -> Result<Version, String> {
    let name = current(dir)?;
    let mut files = Vec::new();
    let (mut bytes, mut count) = (0u64, 0usize);
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let here = dir.join(&name).join(&rel);
        let entries = std::fs::read_dir(&here).map_err(|e| format!("{}: {e}", here.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", here.display()))?;
            let Some(n) = e.file_name().to_str().map(str::to_string) else {
                return Err(format!("{}: a name that is not UTF-8", here.display()));
            };
            count += 1;
            if count > MAX_VOLUME_FILES {
                return Err(format!("{} has more than {MAX_VOLUME_FILES} files", dir.display()));
            }
            let path = if rel.is_empty() { n } else { format!("{rel}/{n}") };
            let kind = e.file_type().map_err(|e| format!("{}: {e}", here.display()))?;
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file() {
                let (data, attrs) = crate::copies::read_host_file(&dir.join(&name).join(&path))?;
                bytes += data.len() as u64;
                if bytes > MAX_VOLUME_BYTES {
                    return Err(format!(
                        "{} is larger than {MAX_VOLUME_BYTES} bytes",
                        dir.display()
                    ));
                }
                files.push((path, data, attrs));
            } else {
                return Err(format!("{}/{path}: not a file or directory", dir.display()));
            }
        }
    }
    let mut top = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        match e.file_name().to_str() {
            Some(n) if !n.starts_with("..") => top.push(n.to_string()),
            Some(_) => {}
            None => return Err(format!("{}: a name that is not UTF-8", dir.display())),
        }
    }
    top.sort();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    // The version may have been replaced while it was read: read it again then.
    if current(dir)? != name {
        return Err(format!("{} changed while it was read", dir.display()));
    }
    Ok(Version { name, files, top })
}

/// What the guest copy of a volume needs: the agent calls that write a version into it.
pub trait GuestFiles {
    /// Writes a file with its mode and owner (parents made).
    fn write(&mut self, path: &str, data: &[u8], attrs: FileAttrs) -> Result<(), String>;
    /// Makes a symbolic link.
    fn symlink(&mut self, target: &str, path: &str) -> Result<(), String>;
    /// Renames in one step.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), String>;
    /// Removes a file or link.
    fn remove(&mut self, path: &str) -> Result<(), String>;
    /// Removes a directory tree.
    fn remove_tree(&mut self, path: &str) -> Result<(), String>;
}

/// Puts version `new` into the guest copy at `base`, which holds `old` (or nothing), the
/// way the kubelet does: the new directory, `..data` replaced in one rename, the new
/// top-level links, then the old names and directory removed.
pub fn install(
    guest: &mut dyn GuestFiles,
    base: &str,
    old: Option<&Version>,
    new: &Version,
) -> Result<(), String> {
    if old.is_some_and(|o| o.name == new.name) {
        return Ok(());
    }
    for (path, data, attrs) in &new.files {
        guest.write(&format!("{base}/{}/{path}", new.name), data, *attrs)?;
    }
    let tmp = format!("{base}/..data_tmp");
    let _ = guest.remove(&tmp);
    guest.symlink(&new.name, &tmp)?;
    guest.rename(&tmp, &format!("{base}/..data"))?;
    let had = |n: &String| old.is_some_and(|o| o.top.contains(n));
    for n in new.top.iter().filter(|n| !had(n)) {
        guest.symlink(&format!("..data/{n}"), &format!("{base}/{n}"))?;
    }
    if let Some(old) = old {
        for n in old.top.iter().filter(|n| !new.top.contains(n)) {
            guest.remove(&format!("{base}/{n}"))?;
        }
        guest.remove_tree(&format!("{base}/{}", old.name))?;
    }
    Ok(())
}

/// A volume the pod's watcher keeps current.
#[derive(Debug)]
pub struct Watched {
    /// The host directory.
    pub source: PathBuf,
    /// Its copy in the guest.
    pub base: String,
    /// The version the guest holds.
    pub version: Version,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A guest as a map of path to content (`->target` for links).
    #[derive(Default)]
    struct FakeGuest(BTreeMap<String, String>);

    impl GuestFiles for FakeGuest {
        fn write(&mut self, path: &str, data: &[u8], _a: FileAttrs) -> Result<(), String> {
            self.0.insert(path.into(), String::from_utf8_lossy(data).into_owned());
            Ok(())
        }
        fn symlink(&mut self, target: &str, path: &str) -> Result<(), String> {
            match self.0.contains_key(path) {
                true => Err(format!("{path} exists")),
                false => {
                    self.0.insert(path.into(), format!("->{target}"));
                    Ok(())
                }
            }
        }
        fn rename(&mut self, from: &str, to: &str) -> Result<(), String> {
            let v = self.0.remove(from).ok_or("no such file")?;
            self.0.insert(to.into(), v);
            Ok(())
        }
        fn remove(&mut self, path: &str) -> Result<(), String> {
            self.0.remove(path).map(drop).ok_or_else(|| "no such file".into())
        }
        fn remove_tree(&mut self, path: &str) -> Result<(), String> {
            self.0.retain(|k, _| !k.starts_with(&format!("{path}/")));
            Ok(())
        }
    }

    /// Writes a version of a volume under `dir` the way the kubelet's atomic writer does.
    fn kubelet_write(dir: &Path, version: &str, files: &[(&str, &str)]) {
        let v = dir.join(version);
        for (name, data) in files {
            let p = v.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        for (name, _) in files {
            let top = name.split('/').next().unwrap();
            let _ = std::os::unix::fs::symlink(format!("..data/{top}"), dir.join(top));
        }
    }

    #[test]
    fn memory_empty_dirs_are_tmpfs_mounts_at_the_volume_itself() {
        // Not at an emptyDir's place, or not a mount of its own: not one.
        let t = tempfile::tempdir().unwrap();
        let vol = t.path().join("volumes/kubernetes.io~empty-dir/cache");
        std::fs::create_dir_all(&vol).unwrap();
        assert_eq!(memory_empty_dir(&vol), None);
        assert_eq!(memory_empty_dir(Path::new("/dev/shm")), None);
        assert_eq!(memory_empty_dir(Path::new("/nonexistent/kubernetes.io~empty-dir/x")), None);
    }

    #[test]
    fn volumes_are_recognised_by_place_and_layout() {
        let t = tempfile::tempdir().unwrap();
        let vol = t.path().join("volumes/kubernetes.io~configmap/settings");
        std::fs::create_dir_all(&vol).unwrap();
        assert!(!is_kube_volume(&vol), "no ..data yet");
        kubelet_write(&vol, "..2026_12_05_01", &[("app.conf", "a")]);
        assert!(is_kube_volume(&vol));
        let other = t.path().join("volumes/kubernetes.io~empty-dir/settings");
        std::fs::create_dir_all(&other).unwrap();
        kubelet_write(&other, "..2026_12_05_01", &[("app.conf", "a")]);
        assert!(!is_kube_volume(&other), "an emptyDir is shared");
    }

    #[test]
    fn versions_are_read_and_replayed_in_the_guest() {
        let t = tempfile::tempdir().unwrap();
        let vol = t.path().join("volumes/kubernetes.io~projected/token");
        std::fs::create_dir_all(&vol).unwrap();
        kubelet_write(&vol, "..v1", &[("token", "t1"), ("ca.crt", "ca"), ("sub/ns", "default")]);
        let v1 = read_version(&vol).unwrap();
        assert_eq!(v1.name, "..v1");
        assert_eq!(v1.top, vec!["ca.crt", "sub", "token"]);
        assert_eq!(v1.files.len(), 3);
        let mut g = FakeGuest::default();
        install(&mut g, "/b", None, &v1).unwrap();
        assert_eq!(g.0["/b/..data"], "->..v1");
        assert_eq!(g.0["/b/..v1/token"], "t1");
        assert_eq!(g.0["/b/token"], "->..data/token");
        assert_eq!(g.0["/b/..v1/sub/ns"], "default");
        // An update: a new token, ca.crt gone; the old version leaves the guest.
        kubelet_write(&vol, "..v2", &[("token", "t2"), ("sub/ns", "default")]);
        std::fs::remove_file(vol.join("ca.crt")).unwrap();
        std::fs::remove_dir_all(vol.join("..v1")).unwrap();
        let v2 = read_version(&vol).unwrap();
        install(&mut g, "/b", Some(&v1), &v2).unwrap();
        assert_eq!(g.0["/b/..data"], "->..v2");
        assert_eq!(g.0["/b/..v2/token"], "t2");
        assert!(!g.0.contains_key("/b/ca.crt") && !g.0.contains_key("/b/..v1/token"));
        assert!(!g.0.contains_key("/b/..data_tmp"));
        // The same version again changes nothing.
        let before = g.0.clone();
        install(&mut g, "/b", Some(&v2), &v2).unwrap();
        assert_eq!(g.0, before);
    }

    #[test]
    fn hostile_volumes_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let vol = t.path().join("v");
        std::fs::create_dir_all(vol.join("..v1")).unwrap();
        // ..data pointing out of the volume, at itself, nowhere.
        for target in ["../../etc", "/etc", "..data", "v1"] {
            let _ = std::fs::remove_file(vol.join("..data"));
            std::os::unix::fs::symlink(target, vol.join("..data")).unwrap();
            assert!(read_version(&vol).is_err(), "{target}");
        }
        std::fs::remove_file(vol.join("..data")).unwrap();
        std::os::unix::fs::symlink("..v1", vol.join("..data")).unwrap();
        // A link inside the version, too many bytes.
        std::os::unix::fs::symlink("/etc/shadow", vol.join("..v1/evil")).unwrap();
        assert!(read_version(&vol).unwrap_err().contains("not a file"));
        std::fs::remove_file(vol.join("..v1/evil")).unwrap();
        for i in 0..5 {
            std::fs::write(vol.join(format!("..v1/f{i}")), vec![0u8; 1 << 20]).unwrap();
        }
        assert!(read_version(&vol).unwrap_err().contains("larger"));
    }
}
