//! Commit: a container's overlayfs upper directory written as an OCI layer tar. Whiteouts
//! (0/0 character devices) become `.wh.NAME` files and opaque directories get a
//! `.wh..wh..opq` entry, as the OCI image spec's layer format says.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ironpod_protocol::{AgentError, CommitResult, ErrorKind};
use sha2::{Digest, Sha256};

struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut buf = [0u8; 4];
    for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
        // SAFETY: c and name are valid strings; buf is valid for its length.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if n == 1 && buf[0] == b'y' {
            return true;
        }
    }
    false
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

struct Writer<W: Write> {
    tar: tar::Builder<W>,
    /// (dev, ino) of files with several links → the first name written.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Writer<W> {
    fn empty_file(&mut self, name: &Path, like: &fs::Metadata) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(like.mtime().max(0) as u64);
        self.tar.append_data(&mut h, name, io::empty())
    }

    fn entry(&mut self, full: &Path, name: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(full)?;
        if is_whiteout(&meta) {
            let file = name.file_name().map(|f| f.to_os_string()).unwrap_or_default();
            let mut wh = std::ffi::OsString::from(".wh.");
            wh.push(file);
            let path = name.parent().map(|p| p.join(&wh)).unwrap_or_else(|| PathBuf::from(&wh));
            return self.empty_file(&path, &meta);
        }
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        let ft = meta.file_type();
        if ft.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                return self.tar.append_link(&mut h, name, first);
            }
            self.links.insert(key, name.to_path_buf());
        }
        if ft.is_dir() {
            self.tar.append_data(&mut h, name, io::empty())?;
            if is_opaque(full) {
                self.empty_file(&name.join(".wh..wh..opq"), &meta)?;
            }
            let mut children: Vec<_> = fs::read_dir(full)?.collect::<Result<Vec<_>, _>>()?;
            children.sort_by_key(|e| e.file_name());
            for c in children {
                self.entry(&c.path(), &name.join(c.file_name()))?;
            }
            Ok(())
        } else if ft.is_symlink() {
            let target = fs::read_link(full)?;
            h.set_size(0);
            self.tar.append_link(&mut h, name, target)
        } else if ft.is_file() {
            let f = File::open(full)?;
            self.tar.append_data(&mut h, name, f)
        } else {
            // Devices, fifos and sockets: header only.
            h.set_size(0);
            if ft.is_char_device() || ft.is_block_device() {
                let rdev = meta.rdev();
                h.set_device_major(libc::major(rdev))?;
                h.set_device_minor(libc::minor(rdev))?;
            }
            if ft.is_socket() {
                return Ok(()); // tar cannot carry sockets; nor do image layers.
            }
            self.tar.append_data(&mut h, name, io::empty())
        }
    }
}

/// Writes `upper` as an uncompressed layer tar in `dir` and returns its path, size and
/// sha256 (the layer's diff id).
pub fn write_layer(upper: &Path, dir: &Path) -> Result<CommitResult, AgentError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!("commit-{}.tar", SEQ.fetch_add(1, Ordering::Relaxed)));
    let io_err = |e: io::Error| AgentError::new(ErrorKind::Io, format!("commit: {e}"));
    let file = File::create(&path).map_err(io_err)?;
    let mut w = Writer {
        tar: tar::Builder::new(Hashing {
            inner: BufWriter::new(file),
            hash: Sha256::new(),
            size: 0,
        }),
        links: HashMap::new(),
    };
    w.tar.mode(tar::HeaderMode::Complete);
    w.tar.follow_symlinks(false);
    let result = (|| -> io::Result<Hashing<BufWriter<File>>> {
        let mut children: Vec<_> = fs::read_dir(upper)?.collect::<Result<Vec<_>, _>>()?;
        children.sort_by_key(|e| e.file_name());
        for c in children {
            w.entry(&c.path(), Path::new(&c.file_name()))?;
        }
        let mut inner = w.tar.into_inner()?;
        inner.flush()?;
        inner.inner.get_ref().sync_all()?;
        Ok(inner)
    })();
    match result {
        Ok(h) => Ok(CommitResult {
            path: path.to_string_lossy().into_owned(),
            size: h.size,
            sha256: format!("{:x}", h.hash.finalize()),
        }),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(io_err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn upper_dir_becomes_a_layer() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        fs::create_dir_all(upper.join("etc/sub")).unwrap();
        fs::write(upper.join("etc/new"), b"hello").unwrap();
        fs::hard_link(upper.join("etc/new"), upper.join("etc/again")).unwrap();
        std::os::unix::fs::symlink("/etc/new", upper.join("link")).unwrap();
        // A whiteout, as overlayfs writes one (needs CAP_MKNOD: we run as root).
        let c = CString::new(upper.join("etc/gone").as_os_str().as_bytes()).unwrap();
        // SAFETY: c is a valid path.
        let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) } == 0;
        let r = write_layer(&upper, dir.path()).unwrap();
        let bytes = fs::read(&r.path).unwrap();
        assert_eq!(bytes.len() as u64, r.size);
        assert_eq!(format!("{:x}", Sha256::digest(&bytes)), r.sha256);
        let mut a = tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if (name == "etc/new" || name == "etc/again") && e.header().entry_type().is_file() {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert_eq!(s, "hello");
            }
            names.push((name, e.header().entry_type()));
        }
        assert!(names.iter().any(|(n, t)| n == "link" && *t == tar::EntryType::Symlink));
        assert!(names.iter().any(|(_, t)| *t == tar::EntryType::Link));
        assert!(names.iter().any(|(n, _)| n == "etc/sub"));
        if made {
            assert!(names.iter().any(|(n, _)| n == "etc/.wh.gone"), "{names:?}");
            assert!(!names.iter().any(|(n, _)| n == "etc/gone"));
        }
    }
}
