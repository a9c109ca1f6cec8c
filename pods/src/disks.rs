//! A container's writable disk: a sparse ext4 file, copied from a per-root template.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use crate::error::{io, PodError};

/// Default size of a container's writable disk (sparse: only what is written takes space,
/// and a guest can never make it take more than its size).
pub const WRITABLE_DISK_BYTES: u64 = 8 << 30;
/// The smallest writable disk: room for ext4's journal and a container's first writes.
pub const MIN_WRITABLE_DISK_BYTES: u64 = 64 << 20;
/// The largest writable disk (ext4's limit with 4 KiB blocks is far above; this is a sanity
/// bound on a typo).
pub const MAX_WRITABLE_DISK_BYTES: u64 = 16 << 40;

/// Checks a writable disk size, rounded up to whole MiB.
pub fn check_disk_size(bytes: u64) -> Result<u64, String> {
    let mib = bytes.div_ceil(1 << 20) << 20;
    if !(MIN_WRITABLE_DISK_BYTES..=MAX_WRITABLE_DISK_BYTES).contains(&mib) {
        return Err(format!(
            "a writable disk of {bytes} bytes is out of range ({} MiB to {} TiB)",
            MIN_WRITABLE_DISK_BYTES >> 20,
            MAX_WRITABLE_DISK_BYTES >> 40
        ));
    }
    Ok(mib)
}

/// The writable disk size `--storage-opt KEY=VALUE` options ask for (`size=SIZE`).
pub fn parse_storage_opts(opts: &[String]) -> Result<u64, String> {
    let mut size = WRITABLE_DISK_BYTES;
    for o in opts {
        match o.split_once('=') {
            Some(("size", v)) => {
                size = check_disk_size(
                    crate::spec::parse_size(v).map_err(|e| format!("invalid storage size: {e}"))?,
                )?
            }
            _ => return Err(format!("unknown storage opt {o:?} (size=SIZE is known)")),
        }
    }
    Ok(size)
}

/// Makes a sparse ext4 disk of `bytes` at `path` with mkfs.ext4.
pub fn make_writable_disk(path: &Path, bytes: u64) -> Result<(), PodError> {
    let f = fs::File::create(path).map_err(io(format!("create {}", path.display())))?;
    f.set_len(bytes).map_err(io(format!("size {}", path.display())))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        // No resize_inode: its reserved descriptor blocks are 4 MiB of the 4.2 MiB a fresh
        // 8 GiB filesystem writes, and a container's disk is never grown online.
        .args(["-q", "-F", "-m", "0", "-O", "^resize_inode"])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
        .arg(path)
        .output()
        .map_err(io("run mkfs.ext4 (install e2fsprogs)"))?;
    if !out.status.success() {
        return Err(PodError::Monitor(format!(
            "mkfs.ext4 {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Copies a sparse file: only its data ranges (SEEK_DATA/SEEK_HOLE), holes stay holes.
pub fn sparse_copy(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let from = fs::File::open(src)?;
    let to = fs::File::create(dst)?;
    let len = from.metadata()?.len();
    let fd = from.as_raw_fd();
    let mut pos: i64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while (pos as u64) < len {
        // SAFETY: lseek on an fd we own.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: only a hole is left.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        let mut off = data;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], off as u64)?;
            to.write_all_at(&buf[..n], off as u64)?;
            off += n as i64;
        }
        pos = end;
    }
    to.set_len(len)?;
    to.sync_all()
}

/// Makes a container's writable disk of `bytes` (see [`check_disk_size`]): a copy of a
/// per-root template of that size (built once with mkfs.ext4), which takes milliseconds
/// instead of a mkfs run per container.
pub fn make_writable_disk_fast(root: &Path, path: &Path, bytes: u64) -> Result<(), PodError> {
    let bytes = check_disk_size(bytes).map_err(PodError::Monitor)?;
    let dir = root.join("templates");
    // The name changes with the mkfs options (v2: no resize_inode), so an old template is
    // not reused.
    let template = dir.join(format!("rw-{}m{DISK_TEMPLATE_SUFFIX}", bytes >> 20));
    loop {
        let made = !template.is_file();
        if made {
            fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
            // Unique per maker: a service makes disks for several containers at once.
            let unique =
                ironpod_ids::random_hex(8).map_err(|e| PodError::Monitor(e.to_string()))?;
            let tmp = dir.join(format!(".rw-{}-{}-{unique}.tmp", bytes >> 20, std::process::id()));
            make_writable_disk(&tmp, bytes)?;
            fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io("sync the template"))?;
            fs::rename(&tmp, &template).map_err(io(format!("install {}", template.display())))?;
            remove_stale_disk_templates(&dir, &template);
        } else {
            // Its modification time says when it was last used (the newest are kept).
            let _ = fs::File::open(&template).and_then(|f| f.set_modified(SystemTime::now()));
        }
        match sparse_copy(&template, path) {
            // Removed (as least recently used) by another pod's start since it was looked
            // at: made again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !made && !template.exists() => {}
            r => return r.map_err(io(format!("copy the writable disk to {}", path.display()))),
        }
    }
}

/// The end of the names of writable-disk templates made with today's mkfs options.
const DISK_TEMPLATE_SUFFIX: &str = "-v2.ext4";
/// Writable-disk templates kept per state root (one per disk size; the default size's is
/// always kept): each `--storage-opt size=` would otherwise leave one behind for good.
const DISK_TEMPLATES_KEPT: usize = 4;

/// Removes, from `dir`, writable-disk templates of older mkfs options, the work files of
/// processes that are gone, and, past [`DISK_TEMPLATES_KEPT`], the least recently used
/// templates of other than the default size (`keep` and the default size's are kept). A pod
/// copying from a removed template keeps reading it; the next pod of that size makes it again.
fn remove_stale_disk_templates(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let default = dir.join(format!("rw-{}m{DISK_TEMPLATE_SUFFIX}", WRITABLE_DISK_BYTES >> 20));
    let mut current = Vec::new();
    for e in entries.flatten() {
        let (p, name) = (e.path(), e.file_name().to_string_lossy().into_owned());
        if let Some(rest) = name.strip_prefix(".rw-").and_then(|r| r.strip_suffix(".tmp")) {
            let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = fs::remove_file(&p);
            }
        } else if name.starts_with("rw-") && name.ends_with(".ext4") {
            if !name.ends_with(DISK_TEMPLATE_SUFFIX) {
                let _ = fs::remove_file(&p);
            } else if p != keep && p != default {
                let used =
                    e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
                current.push((used, p));
            }
        }
    }
    // `keep`, the default's and the newest others, up to the number kept.
    let others = DISK_TEMPLATES_KEPT.saturating_sub(2);
    current.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, p) in current.into_iter().skip(others) {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_options() {
        let o =
            |v: &[&str]| parse_storage_opts(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(o(&[]), Ok(WRITABLE_DISK_BYTES));
        assert_eq!(o(&["size=2g"]), Ok(2 << 30));
        assert_eq!(o(&["size=100.5m"]), Ok(101 << 20), "rounded up to whole MiB");
        for bad in ["size=1m", "size=lots", "size=20t", "quota=1", "size"] {
            assert!(o(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        {
            use std::os::unix::fs::FileExt;
            let f = fs::File::create(&a).unwrap();
            f.set_len(64 << 20).unwrap();
            f.write_all_at(b"head", 0).unwrap();
            f.write_all_at(b"middle", 32 << 20).unwrap();
        }
        sparse_copy(&a, &b).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        use std::os::unix::fs::MetadataExt;
        assert!(fs::metadata(&b).unwrap().blocks() * 512 < 4 << 20, "holes were filled");
    }

    #[test]
    fn stale_disk_templates_go_and_the_newest_stay() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let t = |name: &str, age_s: u64| {
            let p = dir.join(name);
            fs::write(&p, b"x").unwrap();
            let f = fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::now() - std::time::Duration::from_secs(age_s)).unwrap();
            p
        };
        let default = t(&format!("rw-{}m-v2.ext4", WRITABLE_DISK_BYTES >> 20), 900);
        let old_opts = t("rw-8192m.ext4", 1);
        let new = t("rw-100m-v2.ext4", 10);
        let recent = t("rw-200m-v2.ext4", 20);
        let older = t("rw-300m-v2.ext4", 30);
        let least = t("rw-400m-v2.ext4", 40);
        let gone_pid = t(".rw-64-999999999.tmp", 1);
        let mine = t(&format!(".rw-64-{}.tmp", std::process::id()), 1);
        let other = t("unrelated", 1);
        remove_stale_disk_templates(dir, &new);
        for (p, kept) in [
            (&default, true),
            (&old_opts, false),
            (&new, true),
            (&recent, true),
            (&older, true),
            (&least, false),
            (&gone_pid, false),
            (&mine, true),
            (&other, true),
        ] {
            assert_eq!(p.exists(), kept, "{}", p.display());
        }
    }
}
