//! Content-addressed blobs: `<root>/blobs/sha256/<hex>`. A blob only ever appears complete
//! and verified: it is written to `<root>/tmp`, hashed while written, fsynced, checked
//! against the expected digest and size, then renamed into place.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::ImageError;

/// The largest blob read into memory: manifests, indexes and image configs.
pub const MAX_METADATA: u64 = 8 << 20;

/// Bytes free for an unprivileged writer on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Inodes an unprivileged user may still make on the file system of `dir`; `None` where it
/// keeps no count (btrfs and others report zero inodes in all).
pub(crate) fn free_inodes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    (st.f_files > 0).then_some(st.f_favail)
}

/// A sha256 content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        match s.strip_prefix("sha256:") {
            Some(hex)
                if hex.len() == 64
                    && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(Digest(hex.to_string()))
            }
            _ => Err(ImageError::InvalidDigest(s.chars().take(100).collect())),
        }
    }

    /// From an OCI descriptor digest.
    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Self, ImageError> {
        Self::parse(d.as_ref())
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// As an OCI digest.
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        self.to_string().parse().expect("a validated sha256 digest is a valid OCI digest")
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(hex(&Sha256::digest(data)))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), count: 0 }
    }

    /// (digest, bytes, inner writer).
    pub fn finish(self) -> (Digest, u64, W) {
        (Digest(hex(&self.hasher.finalize())), self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The blob directory.
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

/// The file under a pending blob: writes in 1 MiB batches, and starts the kernel's writeback
/// of every 8 MiB written right away, so the fsync before publishing finds little left to do
/// (downloads and disk writes overlap instead of adding up).
struct BlobFile {
    file: File,
    buf: Vec<u8>,
    written: u64,
    kicked: u64,
}

const BATCH: usize = 1 << 20;
const WRITEBACK_EVERY: u64 = 8 << 20;

impl BlobFile {
    fn new(file: File) -> Self {
        BlobFile { file, buf: Vec::with_capacity(BATCH), written: 0, kicked: 0 }
    }

    fn drain(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        if self.written - self.kicked >= WRITEBACK_EVERY {
            use std::os::fd::AsRawFd;
            // SAFETY: plain syscall on an fd we own; a failure only loses the head start.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.kicked as libc::off64_t,
                    (self.written - self.kicked) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.kicked = self.written;
        }
        Ok(())
    }

    fn into_file(mut self) -> io::Result<File> {
        self.drain()?;
        Ok(self.file)
    }
}

impl Write for BlobFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BATCH {
            self.drain()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()
    }
}

/// A blob being written; becomes visible only through [`BlobStore::commit`].
pub struct PendingBlob {
    writer: Option<HashingWriter<BlobFile>>,
    path: PathBuf,
}

impl PendingBlob {
    fn w(&mut self) -> io::Result<&mut HashingWriter<BlobFile>> {
        self.writer.as_mut().ok_or_else(|| io::Error::other("blob already committed"))
    }
}

impl Write for PendingBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w()?.flush()
    }
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        // Committed blobs were renamed away; anything left is an abandoned write.
        let _ = fs::remove_file(&self.path);
    }
}

impl BlobStore {
    /// Opens the blob directories under `root`.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let dir = root.join("blobs/sha256");
        let tmp = root.join("tmp");
        for d in [&dir, &tmp] {
            fs::create_dir_all(d).map_err(|e| ImageError::io(d, e))?;
        }
        Ok(BlobStore { dir, tmp })
    }

    /// Path of a blob (whether or not it exists).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    /// Whether the blob is present.
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Starts writing a new blob.
    pub fn begin(&self) -> Result<PendingBlob, ImageError> {
        let name = format!("blob-{}-{:x}", std::process::id(), rand_u64());
        let path = self.tmp.join(name);
        let f = File::create(&path).map_err(|e| ImageError::io(&path, e))?;
        Ok(PendingBlob { writer: Some(HashingWriter::new(BlobFile::new(f))), path })
    }

    /// Verifies and publishes a written blob. With `expected`, a digest or size mismatch is
    /// an error and nothing is published.
    pub fn commit(
        &self,
        mut p: PendingBlob,
        expected: Option<(&Digest, u64)>,
    ) -> Result<(Digest, u64), ImageError> {
        p.flush().map_err(|e| ImageError::io(&p.path, e))?;
        let path = p.path.clone();
        let writer = p
            .writer
            .take()
            .ok_or_else(|| ImageError::io(&path, io::Error::other("blob already committed")))?;
        let (digest, size, file) = writer.finish();
        let file = file.into_file().map_err(|e| ImageError::io(&path, e))?;
        if let Some((want, want_size)) = expected {
            if *want != digest || want_size != size {
                return Err(ImageError::DigestMismatch {
                    expected: format!("{want} ({want_size} bytes)"),
                    actual: format!("{digest} ({size} bytes)"),
                });
            }
        }
        file.sync_all().map_err(|e| ImageError::io(&path, e))?;
        let dst = self.path(&digest);
        fs::rename(&path, &dst).map_err(|e| ImageError::io(&dst, e))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok((digest, size))
    }

    /// Stores bytes, returning their digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest, ImageError> {
        let d = Digest::of(data);
        if self.contains(&d) {
            return Ok(d);
        }
        let mut p = self.begin()?;
        p.write_all(data).map_err(|e| ImageError::io(&self.tmp, e))?;
        self.commit(p, Some((&d, data.len() as u64)))?;
        Ok(d)
    }

    /// Reads a whole metadata blob (manifest, index, config), verifying it; one larger than
    /// [`MAX_METADATA`] is refused before it is read.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, ImageError> {
        let path = self.path(d);
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|f| {
                let len = f.metadata()?.len();
                if len > MAX_METADATA {
                    return Err(io::Error::other(format!(
                        "{len} bytes is too large for a manifest or config (limit {MAX_METADATA})"
                    )));
                }
                f.take(MAX_METADATA).read_to_end(&mut data)
            })
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ImageError::MissingBlob(d.to_string()),
                _ => ImageError::io(&path, e),
            })?;
        let actual = Digest::of(&data);
        if actual != *d {
            return Err(ImageError::DigestMismatch {
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(data)
    }

    /// Deletes every blob `keep` rejects, and abandoned temporary files; returns what was
    /// deleted.
    pub fn sweep(&self, keep: impl Fn(&Digest) -> bool) -> Result<Vec<String>, ImageError> {
        let mut deleted = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(|e| ImageError::io(&self.dir, e))? {
            let e = e.map_err(|e| ImageError::io(&self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = Digest::parse(&format!("sha256:{name}")) else { continue };
            if !keep(&d) {
                fs::remove_file(e.path()).map_err(|err| ImageError::io(&e.path(), err))?;
                deleted.push(d.to_string());
            }
        }
        // Temporary files of writers that died (we hold the exclusive lock: no live writer).
        if let Ok(rd) = fs::read_dir(&self.tmp) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        deleted.sort();
        Ok(deleted)
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.as_nanos() as u64;
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        for bad in ["", "sha256:", "sha256:XYZ", "md5:abc", &format!("sha256:{}", "A".repeat(64))] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verified_commit_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let d = s.put(b"hello").unwrap();
        assert_eq!(s.read(&d).unwrap(), b"hello");
        // A writer that lies about the digest publishes nothing.
        let mut p = s.begin().unwrap();
        p.write_all(b"evil").unwrap();
        let want = Digest::of(b"good");
        assert!(matches!(s.commit(p, Some((&want, 4))), Err(ImageError::DigestMismatch { .. })));
        assert!(!s.contains(&want) && !s.contains(&Digest::of(b"evil")));
        // Wrong size.
        let mut p = s.begin().unwrap();
        p.write_all(b"good").unwrap();
        assert!(s.commit(p, Some((&want, 5))).is_err());
        // An abandoned write leaves nothing in tmp.
        let p = s.begin().unwrap();
        drop(p);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        // Only metadata is read into memory, and never more than its limit.
        let big = s.put(&vec![0u8; MAX_METADATA as usize + 1]).unwrap();
        let e = s.read(&big).unwrap_err();
        assert!(e.to_string().contains("too large for a manifest or config"), "{e}");
        // Corruption on disk is detected on read.
        fs::write(s.path(&d), b"tampered").unwrap();
        assert!(matches!(s.read(&d), Err(ImageError::DigestMismatch { .. })));
        let deleted = s.sweep(|_| false).unwrap();
        let mut want = vec![d.to_string(), big.to_string()];
        want.sort();
        assert_eq!(deleted, want);
    }
}
