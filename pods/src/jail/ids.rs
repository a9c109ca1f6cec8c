//! The unprivileged user and group each VMM runs as: one pair per running VM, taken from a
//! subordinate range (the `ironpod` lines of `/etc/subuid` and `/etc/subgid`, else
//! [`DEFAULT_RANGE`]), so the VMMs of two pods are two different users.
//!
//! A pair is claimed by making `/run/ironpod/jail-ids/<uid>` under a lock and recording the
//! VMM's pid and start time and the VMM's jail in it; it is free again once that directory
//! is gone. A launcher that was killed leaves its claim behind: every claim first frees
//! those whose process has ended, with their jails.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The range used when `/etc/subuid` (or `/etc/subgid`) has no `ironpod` line: 65536 ids
/// from 1,879,048,192 (`0x7000_0000`), far above any login user or container range.
pub const DEFAULT_RANGE: IdRange = IdRange { start: 0x7000_0000, count: 65536 };

/// Where claims live.
pub const CLAIMS_DIR: &str = "/run/ironpod/jail-ids";

/// A range of ids: `start .. start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id.
    pub start: u32,
    /// How many.
    pub count: u32,
}

/// Parses the `ironpod:START:COUNT` line of a subordinate id file (`/etc/subuid` format);
/// `None` without one. Ranges that include root or overflow are refused.
pub fn range_in(text: &str) -> Result<Option<IdRange>, String> {
    for line in text.lines() {
        let mut f = line.trim().split(':');
        if f.next() != Some("ironpod") {
            continue;
        }
        let (Some(start), Some(count), None) = (f.next(), f.next(), f.next()) else {
            return Err(format!("bad line {line:?}: want ironpod:START:COUNT"));
        };
        let start: u32 = start.parse().map_err(|_| format!("bad start in {line:?}"))?;
        let count: u32 = count.parse().map_err(|_| format!("bad count in {line:?}"))?;
        if start == 0 || count == 0 || start.checked_add(count).is_none() {
            return Err(format!("unusable range in {line:?}"));
        }
        return Ok(Some(IdRange { start, count }));
    }
    Ok(None)
}

fn range_of(file: &str) -> io::Result<IdRange> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DEFAULT_RANGE),
        Err(e) => return Err(e),
    };
    range_in(&text)
        .map(|r| r.unwrap_or(DEFAULT_RANGE))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{file}: {e}")))
}

/// A claimed uid/gid pair; dropping it frees the pair.
#[derive(Debug)]
pub struct PodIds {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    claim: PathBuf,
    jail: PathBuf,
}

impl PodIds {
    /// Claims a free pair from the configured ranges, starting the search at a place that
    /// depends on `seed` (so parallel launchers seldom meet).
    /// `jail` is the jail the pair's VMM runs in: once the owner is gone without freeing
    /// the pair (a launcher that was killed), the next claim unmounts and removes it.
    pub fn claim(jail: &Path, seed: u64) -> io::Result<PodIds> {
        let uids = range_of("/etc/subuid")?;
        let gids = range_of("/etc/subgid")?;
        Self::claim_in(Path::new(CLAIMS_DIR), jail, (uids, gids), seed)
    }

    /// Like [`PodIds::claim`], with the claims directory and the ranges given.
    pub fn claim_in(
        dir: &Path,
        jail: &Path,
        (uids, gids): (IdRange, IdRange),
        seed: u64,
    ) -> io::Result<PodIds> {
        ironpod_images::private::private_dir(dir)?;
        let _lock = lock_and_sweep(dir)?;
        let count = uids.count.min(gids.count);
        for i in 0..count {
            let slot = ((seed % u64::from(count)) as u32 + i) % count;
            let claim = dir.join(slot.to_string());
            if claim.exists() {
                continue;
            }
            fs::create_dir(&claim)?;
            let ids = PodIds {
                uid: uids.start + slot,
                gid: gids.start + slot,
                claim,
                jail: jail.to_path_buf(),
            };
            ids.record(std::process::id())?;
            return Ok(ids);
        }
        Err(io::Error::other(format!(
            "all {count} VMM user ids are in use (ranges: uids {}+{}, gids {}+{})",
            uids.start, uids.count, gids.start, gids.count
        )))
    }

    /// Frees the pairs whose launcher is gone, with their jails (unmounted and removed), as
    /// the next claim would: for a caller that just found a launcher dead.
    pub fn sweep_stale() -> io::Result<()> {
        Self::sweep_stale_in(Path::new(CLAIMS_DIR))
    }

    /// Like [`PodIds::sweep_stale`], with the claims directory given.
    pub fn sweep_stale_in(dir: &Path) -> io::Result<()> {
        if !dir.is_dir() {
            return Ok(());
        }
        lock_and_sweep(dir).map(drop)
    }

    /// Records `pid` (with its start time) as the process holding the pair.
    pub fn record(&self, pid: u32) -> io::Result<()> {
        let start = ironpod_ids::process_start(pid as i32).unwrap_or(0);
        let tmp = self.claim.join("owner.tmp");
        fs::write(&tmp, format!("{pid} {start}\n{}\n", self.jail.display()))?;
        fs::rename(tmp, self.claim.join("owner"))
    }
}

impl Drop for PodIds {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.claim);
    }
}

/// The owner and jail a claim at `dir` records; `None` when it names no live process (a
/// claim without a readable owner could only be in the making under the lock, so it is
/// stale).
fn live_owner(dir: &Path) -> (bool, Option<PathBuf>) {
    let Ok(text) = fs::read_to_string(dir.join("owner")) else { return (false, None) };
    let mut lines = text.lines();
    let mut f = lines.next().unwrap_or_default().split_whitespace();
    let jail = lines.next().filter(|l| l.starts_with('/')).map(PathBuf::from);
    let (Some(Ok(pid)), Some(Ok(start))) =
        (f.next().map(str::parse::<i32>), f.next().map(str::parse::<i64>))
    else {
        return (false, jail);
    };
    (ironpod_ids::process_alive(pid, (start != 0).then_some(start)), jail)
}

/// Frees the claims whose owner is gone, unmounting and removing the jails they name (what a
/// killed launcher left). Runs under the lock.
fn sweep(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let claim = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let (alive, jail) = live_owner(&claim);
        if alive {
            continue;
        }
        if let Some(jail) = jail.filter(|j| j.starts_with(crate::vm::RUN_DIR)) {
            if let Ok(c) = std::ffi::CString::new(jail.as_os_str().as_encoded_bytes()) {
                // SAFETY: umount2 with a valid C string; MNT_DETACH takes the mounts below.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = fs::remove_dir_all(&jail);
        }
        tracing::info!(claim = %claim.display(), "freeing a VMM user id its launcher left");
        let _ = fs::remove_dir_all(&claim);
    }
}

/// Takes the claims directory's lock (held until the file returned is dropped) and frees
/// what dead launchers left.
fn lock_and_sweep(dir: &Path) -> io::Result<fs::File> {
    let lock =
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".lock"))?;
    flock(&lock)?;
    sweep(dir);
    Ok(lock)
}

fn flock(f: &fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an open descriptor; released when the file is closed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_from_subuid_text() {
        assert_eq!(range_in("root:100000:65536\n").unwrap(), None);
        assert_eq!(
            range_in("a:1:2\nironpod:300000:1000\n").unwrap(),
            Some(IdRange { start: 300000, count: 1000 })
        );
        for bad in
            ["ironpod:0:10", "ironpod:5", "ironpod:x:1", "ironpod:4294967295:2", "ironpod:1:0"]
        {
            assert!(range_in(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pairs_are_distinct_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        let uids = IdRange { start: 5000, count: 2 };
        let gids = IdRange { start: 7000, count: 2 };
        let claim = |seed| PodIds::claim_in(dir.path(), Path::new("/nowhere"), (uids, gids), seed);
        let a = claim(0).unwrap();
        let b = claim(0).unwrap();
        assert_eq!((a.uid, a.gid), (5000, 7000));
        assert_eq!((b.uid, b.gid), (5001, 7001));
        let full = claim(0).unwrap_err();
        assert!(full.to_string().contains("in use"), "{full}");
        drop(a);
        let c = claim(1).unwrap();
        assert_eq!(c.uid, 5000);
        drop((b, c));
    }

    #[test]
    fn a_dead_owner_frees_its_pair() {
        let dir = tempfile::tempdir().unwrap();
        let r = IdRange { start: 5000, count: 1 };
        let claim = || PodIds::claim_in(dir.path(), Path::new("/nowhere"), (r, r), 0);
        let a = claim().unwrap();
        assert!(live_owner(&dir.path().join("0")).0, "this process holds it");
        // No process has pid 0x7fff_fff0: the claim is stale.
        fs::write(dir.path().join("0/owner"), "2147483632 12\n/nowhere\n").unwrap();
        std::mem::forget(a);
        let b = claim().unwrap();
        assert_eq!(b.uid, 5000);
    }

    #[test]
    fn a_sweep_frees_only_dead_owners_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let r = IdRange { start: 5000, count: 2 };
        let claim = || PodIds::claim_in(dir.path(), Path::new("/nowhere"), (r, r), 0);
        let (live, dead) = (claim().unwrap(), claim().unwrap());
        fs::write(dead.claim.join("owner"), "2147483632 12\n/nowhere\n").unwrap();
        let dead_claim = dead.claim.clone();
        std::mem::forget(dead);
        PodIds::sweep_stale_in(dir.path()).unwrap();
        assert!(!dead_claim.exists(), "the dead launcher's pair is free");
        assert!(live.claim.exists(), "a live one's is not");
        PodIds::sweep_stale_in(&dir.path().join("absent")).unwrap();
    }
}
