//! A snapshot's guest memory file: one header page, then every RAM range's bytes, one after
//! the other, page-aligned so that a restore maps the file directly (`MAP_PRIVATE`: pages the
//! restored guest never writes stay the file's pages in the page cache, shared by every VM
//! restored from it). Pages of zeros are left as holes: the file is as large as the guest's
//! RAM but holds only what the guest had written.
//!
//! The header carries a random id that the state file names too, so a memory file that does
//! not belong to the state (copied over, left from an older snapshot) is refused.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use crate::virtio::GuestMemoryMmap;

/// Magic bytes at the start of a memory file.
const MAGIC: &[u8; 12] = b"IRONPOD-MEM\0";
/// Layout version of the memory file.
const VERSION: u32 = 1;
/// The header page; the RAM follows it.
pub const HEADER_LEN: u64 = 4096;
/// Bytes copied out of guest memory at a time.
const CHUNK: usize = 1 << 20;
/// The unit of holes.
const PAGE: usize = 4096;

/// A memory file could not be written or does not fit its state.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// Reading or writing the file failed.
    #[error("memory file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The file is not what the state file says it is.
    #[error("memory file {path}: {why}")]
    Mismatch {
        /// The file.
        path: String,
        /// What differs.
        why: String,
    },
    /// Guest memory could not be read or mapped.
    #[error("guest memory: {0}")]
    Memory(String),
}

/// What the state file records about its memory file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryFileInfo {
    /// Random id, also in the memory file's header.
    pub id: [u8; 16],
    /// Guest RAM size, bytes.
    pub size: u64,
}

impl MemoryFileInfo {
    /// The length of the memory file it describes (a header page, then the RAM).
    pub fn file_len(&self) -> u64 {
        HEADER_LEN + self.size
    }
}

fn header(info: &MemoryFileInfo) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN as usize];
    h[..12].copy_from_slice(MAGIC);
    h[12..16].copy_from_slice(&VERSION.to_le_bytes());
    h[16..32].copy_from_slice(&info.id);
    h[32..40].copy_from_slice(&info.size.to_le_bytes());
    h
}

/// A random id from the kernel.
fn random_id() -> io::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    // SAFETY: getrandom(2) writes at most `id.len()` bytes into `id`.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n != id.len() as isize {
        return Err(io::Error::other("getrandom returned too few bytes"));
    }
    Ok(id)
}

/// Writes `mem` (its vCPUs stopped) to a new file at `path` (which must not exist).
pub fn save(mem: &GuestMemoryMmap, path: &Path) -> Result<MemoryFileInfo, MemoryFileError> {
    let io = |source| MemoryFileError::Io { path: path.display().to_string(), source };
    let size: u64 = mem.iter().map(|r| r.len()).sum();
    let info = MemoryFileInfo { id: random_id().map_err(io)?, size };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    file.write_all_at(&header(&info), 0).map_err(io)?;
    file.set_len(HEADER_LEN + size).map_err(io)?;
    let mut buf = vec![0u8; CHUNK];
    let mut at = HEADER_LEN;
    for region in mem.iter() {
        let len = region.len() as usize;
        let mut done = 0usize;
        while done < len {
            let n = CHUNK.min(len - done);
            region
                .read_slice(&mut buf[..n], MemoryRegionAddress(done as u64))
                .map_err(|e| MemoryFileError::Memory(e.to_string()))?;
            write_non_zero(&file, &buf[..n], at + done as u64).map_err(io)?;
            done += n;
        }
        at += len as u64;
    }
    file.sync_all().map_err(io)?;
    Ok(info)
}

/// Writes the pages of `data` that are not all zeros at `offset` (runs of them at once).
fn write_non_zero(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut run: Option<usize> = None;
    for (i, page) in data.chunks(PAGE).enumerate() {
        let zero = page.iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(i * PAGE),
            (true, Some(start)) => {
                file.write_all_at(&data[start..i * PAGE], offset + start as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

/// Maps the memory file at `path` as guest RAM (copy on write), after checking that it is
/// the one `info` describes. With `shared` the RAM is a copy in a memory file of its own,
/// mapped shared (for vhost-user backends, which map guest memory too).
pub fn restore(
    path: &Path,
    info: &MemoryFileInfo,
    shared: bool,
) -> Result<GuestMemoryMmap, MemoryFileError> {
    let p = path.display().to_string();
    let io = |source| MemoryFileError::Io { path: p.clone(), source };
    let mismatch = |why: String| MemoryFileError::Mismatch { path: p.clone(), why };
    let file =
        OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(path).map_err(io)?;
    let mut h = vec![0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            mismatch("shorter than its header".into())
        } else {
            io(e)
        }
    })?;
    if &h[..12] != MAGIC {
        return Err(mismatch("not an ironpod memory file".into()));
    }
    let version = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(mismatch(format!("layout version {version}, this VMM reads {VERSION}")));
    }
    if h[16..32] != info.id {
        return Err(mismatch("belongs to another snapshot (its id differs)".into()));
    }
    let size = u64::from_le_bytes(h[32..40].try_into().expect("8 bytes"));
    let len = file.metadata().map_err(io)?.len();
    if size != info.size || len != HEADER_LEN + size {
        return Err(mismatch(format!(
            "holds {len} bytes for {size} bytes of RAM; the state says {} bytes",
            info.size
        )));
    }
    if shared {
        return crate::memory::guest_memory_copied(size, &file, HEADER_LEN)
            .map_err(MemoryFileError::Memory);
    }
    crate::memory::guest_memory_from_file(size, Arc::new(file), HEADER_LEN)
        .map_err(MemoryFileError::Memory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn round_trip_is_sparse_copy_on_write_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mem = crate::memory::guest_memory(8 << 20, false).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x1000)).unwrap();
        mem.write_slice(&[7u8; 3 * PAGE], GuestAddress(5 << 20)).unwrap();
        let path = dir.path().join("mem");
        let info = save(&mem, &path).unwrap();
        assert!(save(&mem, &path).is_err(), "an existing file is not overwritten");
        // Only the written pages take space.
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), HEADER_LEN + (8 << 20));
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 64 * 1024, "{} bytes allocated", meta.blocks() * 512);

        let copy = restore(&path, &info, false).unwrap();
        let mut b = [0u8; 5];
        copy.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(&b, b"hello");
        let mut c = vec![0u8; 3 * PAGE];
        copy.read_slice(&mut c, GuestAddress(5 << 20)).unwrap();
        assert!(c.iter().all(|&x| x == 7));
        // Writes go to the copy only.
        copy.write_slice(b"HELLO", GuestAddress(0x1000)).unwrap();
        let again = restore(&path, &info, false).unwrap();
        again.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(&b, b"hello", "the file is unchanged");

        let other = MemoryFileInfo { id: [9; 16], ..info.clone() };
        let e = restore(&path, &other, false).unwrap_err().to_string();
        assert!(e.contains("another snapshot"), "{e}");
        let bigger = MemoryFileInfo { size: 16 << 20, ..info.clone() };
        assert!(restore(&path, &bigger, false).is_err());
        std::fs::write(dir.path().join("junk"), b"junk").unwrap();
        let e = restore(&dir.path().join("junk"), &info, false).unwrap_err().to_string();
        assert!(e.contains("shorter than its header"), "{e}");
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(HEADER_LEN + (4 << 20)).unwrap();
        assert!(restore(&path, &info, false).is_err(), "a cut file is refused");
    }

    /// The inode behind each 2 MiB chunk of the mapping at `base` (0: anonymous memory).
    fn chunk_inodes(base: usize, chunks: usize) -> Vec<u64> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        (0..chunks)
            .map(|i| {
                let at = base + i * (2 << 20);
                maps.lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        let (a, b) = f[0].split_once('-')?;
                        let (a, b) = (
                            usize::from_str_radix(a, 16).ok()?,
                            usize::from_str_radix(b, 16).ok()?,
                        );
                        (a <= at && at < b).then(|| f[4].parse().unwrap())
                    })
                    .expect("the chunk is mapped")
            })
            .collect()
    }

    #[test]
    fn ram_the_snapshot_never_used_is_anonymous_after_a_restore() {
        let dir = tempfile::tempdir().unwrap();
        let mem = crate::memory::guest_memory(8 << 20, false).unwrap();
        mem.write_slice(b"data", GuestAddress(0x1000)).unwrap();
        mem.write_slice(b"more", GuestAddress((5 << 20) + 0x3000)).unwrap();
        let path = dir.path().join("mem");
        let info = save(&mem, &path).unwrap();
        let copy = restore(&path, &info, false).unwrap();
        let region = copy.iter().next().unwrap();
        let inodes = chunk_inodes(region.as_ptr() as usize, 4);
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&path).unwrap().ino();
        // Chunks with data are the file's; the others anonymous (the file system reports
        // holes: tmpfs and ext4 do).
        assert_eq!(inodes, [ino, 0, ino, 0]);
        let mut b = [0u8; 4];
        copy.read_slice(&mut b, GuestAddress((5 << 20) + 0x3000)).unwrap();
        assert_eq!(&b, b"more");
        copy.write_slice(b"anon", GuestAddress(3 << 20)).unwrap();
        copy.read_slice(&mut b, GuestAddress(3 << 20)).unwrap();
        assert_eq!(&b, b"anon");
        let mut z = vec![1u8; 4096];
        copy.read_slice(&mut z, GuestAddress(7 << 20)).unwrap();
        assert!(z.iter().all(|&x| x == 0));
    }
}
