//! Listing and removing pod templates (`ironpod vm template ls|rm|prune`).
//!
//! A template in use stays usable by its pods after it is removed: each restored VMM maps
//! its memory file, which lives on until the last of them ends. The next pod of its shape
//! makes it again.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use super::{io_err, lock, templates_dir, Inputs, TemplateError};

/// A template on disk, as `ironpod vm template ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateInfo {
    /// Its key (its directory's name).
    pub key: String,
    /// Its directory.
    pub dir: PathBuf,
    /// vCPUs of its VM.
    pub vcpus: u8,
    /// Guest memory.
    pub memory_mib: u64,
    /// A network card.
    pub card: bool,
    /// A share (virtio-fs).
    pub share: bool,
    /// Bytes its files take on disk (the memory file is sparse).
    pub disk_bytes: u64,
    /// When it was made.
    #[serde(skip)]
    pub created: Option<SystemTime>,
    /// Whether the kernel, initramfs and VMM it was made from are still the current ones
    /// (a stale template is never used again, and is removed when the next one is made).
    pub current: bool,
    /// Processes (restored VMMs) that map its memory file now.
    pub users: usize,
}

/// The templates under state root `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<TemplateInfo>, TemplateError> {
    let base = templates_dir(root);
    let entries = match fs::read_dir(&base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("read {}", base.display()))(e)),
    };
    let users = mapped_files();
    let mut out = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        let key = e.file_name().to_string_lossy().into_owned();
        if key.starts_with('.') || !dir.is_dir() {
            continue;
        }
        let Some(inputs) = fs::read(dir.join("inputs.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<Inputs>(&t).ok())
        else {
            continue;
        };
        let memory = fs::metadata(dir.join("memory")).ok();
        let disk_bytes = ["state", "memory", "inputs.json"]
            .iter()
            .filter_map(|f| fs::metadata(dir.join(f)).ok())
            .map(|m| m.blocks() * 512)
            .sum();
        let id = memory.as_ref().map(|m| (m.dev(), m.ino()));
        out.push(TemplateInfo {
            users: id.map_or(0, |id| users.iter().filter(|u| **u == id).count()),
            created: fs::metadata(dir.join("state")).and_then(|m| m.modified()).ok(),
            current: inputs.format == super::FORMAT && inputs.current(),
            vcpus: inputs.vcpus,
            memory_mib: inputs.memory_mib,
            card: inputs.card,
            share: inputs.share,
            disk_bytes,
            key,
            dir,
        });
    }
    out.sort_by_key(|t| t.created);
    Ok(out)
}

/// Removes the template `key` (or the one whose key starts with it, when only one does).
/// Returns its full key.
pub fn remove(root: &Path, key: &str) -> Result<String, TemplateError> {
    if key.is_empty() {
        return Err(TemplateError::NotFound(key.to_string()));
    }
    let all = list(root)?;
    let found: Vec<&TemplateInfo> = all.iter().filter(|t| t.key.starts_with(key)).collect();
    let t = match found.as_slice() {
        [t] => *t,
        [] => return Err(TemplateError::NotFound(key.to_string())),
        _ => return Err(TemplateError::Ambiguous(key.to_string())),
    };
    remove_dir(root, &t.key)?;
    Ok(t.key.clone())
}

/// Removes every template no VMM maps now (and those made from files that changed);
/// returns their keys.
pub fn prune(root: &Path) -> Result<Vec<String>, TemplateError> {
    let mut removed = Vec::new();
    for t in list(root)? {
        if t.users == 0 || !t.current {
            remove_dir(root, &t.key)?;
            removed.push(t.key);
        }
    }
    Ok(removed)
}

/// Removes a template's directory while holding its lock (no pod makes it meanwhile).
fn remove_dir(root: &Path, key: &str) -> Result<(), TemplateError> {
    let base = templates_dir(root);
    let _lock = lock(&base.join(format!("{key}.lock")))?;
    let dir = base.join(key);
    fs::remove_dir_all(&dir).map_err(io_err(format!("remove {}", dir.display())))?;
    let _ = fs::remove_file(base.join(format!("{key}.failed")));
    Ok(())
}

/// (device, inode) of every file some process maps, once per process and file: from
/// `/proc/PID/maps`, whose device is `major:minor` in hex (the restored VMMs see the
/// template under another path, in their jail).
fn mapped_files() -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let name = p.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(maps) = fs::read_to_string(p.path().join("maps")) else { continue };
        let mut mine: Vec<(u64, u64)> = maps.lines().filter_map(parse_maps_line).collect();
        mine.sort_unstable();
        mine.dedup();
        out.extend(mine);
    }
    out
}

/// The (device, inode) of a `/proc/PID/maps` line that maps a file.
fn parse_maps_line(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace();
    let dev = f.nth(3)?;
    let ino: u64 = f.next()?.parse().ok()?;
    if ino == 0 {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let (major, minor) =
        (u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?);
    Some((libc::makedev(major, minor), ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let l = "7f1c2a400000-7f1c32400000 r--p 00001000 fd:01 1835090    /template.memory";
        assert_eq!(parse_maps_line(l), Some((libc::makedev(0xfd, 1), 1835090)));
        assert_eq!(parse_maps_line("7ffd-7ffe rw-p 00000000 00:00 0    [stack]"), None);
        assert_eq!(parse_maps_line("garbage"), None);
    }

    #[test]
    fn this_process_maps_its_own_binary() {
        let exe = fs::metadata("/proc/self/exe").unwrap();
        assert!(mapped_files().contains(&(exe.dev(), exe.ino())));
    }

    #[test]
    fn list_remove_and_prune() {
        let d = tempfile::tempdir().unwrap();
        let base = templates_dir(d.path());
        fs::create_dir_all(&base).unwrap();
        let inputs = super::super::tests::inputs(d.path());
        for key in ["aaa111", "aaa222", "bbb333"] {
            fs::create_dir(base.join(key)).unwrap();
            fs::write(base.join(key).join("inputs.json"), serde_json::to_vec(&inputs).unwrap())
                .unwrap();
            fs::write(base.join(key).join("memory"), vec![1u8; 8192]).unwrap();
        }
        fs::create_dir(base.join(".new-1-x")).unwrap();
        let all = list(d.path()).unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all.iter().all(|t| t.current && t.users == 0 && t.memory_mib == 256));
        assert!(all[0].disk_bytes >= 8192);
        assert!(matches!(remove(d.path(), "aaa"), Err(TemplateError::Ambiguous(_))));
        assert!(matches!(remove(d.path(), "ccc"), Err(TemplateError::NotFound(_))));
        assert!(matches!(remove(d.path(), ""), Err(TemplateError::NotFound(_))));
        assert_eq!(remove(d.path(), "bbb").unwrap(), "bbb333");
        // Mapped by this process: in use, kept by prune.
        let f = fs::File::open(base.join("aaa111/memory")).unwrap();
        // SAFETY: a new private read-only mapping of a file we hold, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                {
                    use std::os::fd::AsRawFd;
                    f.as_raw_fd()
                },
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let used: Vec<_> = list(d.path()).unwrap().into_iter().map(|t| (t.key, t.users)).collect();
        assert_eq!(used, [("aaa111".to_string(), 1), ("aaa222".to_string(), 0)]);
        assert_eq!(prune(d.path()).unwrap(), ["aaa222"]);
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, 8192) };
        assert_eq!(prune(d.path()).unwrap(), ["aaa111"]);
        assert!(list(d.path()).unwrap().is_empty());
    }
}
