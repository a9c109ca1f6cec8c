//! Unpacking a layer tar into a directory in overlayfs form, without ever following a path
//! the archive controls: OCI whiteouts (`.wh.NAME`) become 0/0 character devices, opaque
//! markers (`.wh..wh..opq`) become the `trusted.overlay.opaque` xattr, and any member whose
//! path is absolute, climbs with `..`, or passes through a symlink is refused.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

fn bad(msg: String) -> ImageError {
    ImageError::BadTar(msg)
}

fn cpath(p: &Path) -> Result<CString, ImageError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| bad(format!("{} contains NUL", p.display())))
}

fn sys(path: &Path, rc: libc::c_int) -> Result<(), ImageError> {
    if rc != 0 {
        return Err(ImageError::io(path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Resolves a member path to a location under `root`, checking that it stays inside and
/// that no existing parent component is a symlink. Returns None for the root itself.
fn place(root: &Path, member: &Path) -> Result<Option<PathBuf>, ImageError> {
    let mut rel = PathBuf::new();
    for c in member.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(bad(format!("{} climbs out of the layer with '..'", member.display())))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad(format!("{} is an absolute path", member.display())))
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Ok(None);
    }
    // Every parent that exists must be a real directory, never a symlink.
    let mut cur = root.to_path_buf();
    let parents: Vec<_> = rel.parent().map(|p| p.components().collect()).unwrap_or_default();
    for c in parents {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(bad(format!(
                    "{} goes through the symlink {}",
                    member.display(),
                    cur.display()
                )))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(bad(format!(
                    "{}: {} is not a directory",
                    member.display(),
                    cur.display()
                )))
            }
            Err(_) => fs::create_dir(&cur).map_err(|e| ImageError::io(&cur, e))?,
        }
    }
    Ok(Some(root.join(rel)))
}

fn remove_existing(p: &Path) {
    if let Ok(m) = fs::symlink_metadata(p) {
        if m.is_dir() && !m.file_type().is_symlink() {
            let _ = fs::remove_dir_all(p);
        } else {
            let _ = fs::remove_file(p);
        }
    }
}

fn mknod(p: &Path, mode: libc::mode_t, major: u32, minor: u32) -> Result<(), ImageError> {
    let c = cpath(p)?;
    // SAFETY: valid NUL-terminated path.
    sys(p, unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) })
}

fn lchown(p: &Path, uid: u64, gid: u64) -> Result<(), ImageError> {
    let c = cpath(p)?;
    // SAFETY: valid NUL-terminated path; lchown does not follow symlinks.
    sys(p, unsafe { libc::lchown(c.as_ptr(), uid as libc::uid_t, gid as libc::gid_t) })
}

fn set_mtime(p: &Path, secs: u64) -> Result<(), ImageError> {
    let c = cpath(p)?;
    let t = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: 0 };
    let times = [t, t];
    // SAFETY: valid path and a two-element timespec array; does not follow symlinks.
    sys(p, unsafe {
        libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    })
}

fn set_opaque(dir: &Path) -> Result<(), ImageError> {
    let c = cpath(dir)?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid strings and a one-byte value buffer.
    sys(dir, unsafe {
        libc::lsetxattr(c.as_ptr(), name.as_ptr(), b"y".as_ptr() as *const libc::c_void, 1, 0)
    })
}

/// Unpacks `archive` into the empty directory `root`; returns the number of members.
pub fn unpack<R: io::Read>(archive: R, root: &Path) -> Result<u64, ImageError> {
    let mut ar = tar::Archive::new(archive);
    let mut count = 0u64;
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    for entry in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut e = entry.map_err(|e| bad(format!("member {count}: {e}")))?;
        count += 1;
        let member = e.path().map_err(|er| bad(er.to_string()))?.into_owned();
        let name = member.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let h = e.header().clone();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        // Whiteouts first: they name a sibling, not themselves.
        if name == OPAQUE {
            let parent = member.parent().unwrap_or(Path::new(""));
            let dir = match place(root, &parent.join("x"))? {
                Some(p) => p.parent().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf()),
                None => root.to_path_buf(),
            };
            set_opaque(&dir)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(bad(format!("invalid whiteout {}", member.display())));
            }
            let Some(target) = place(root, &member.with_file_name(hidden))? else { continue };
            remove_existing(&target);
            mknod(&target, libc::S_IFCHR, 0, 0)?;
            continue;
        }
        let Some(dst) = place(root, &member)? else { continue };
        let kind = h.entry_type();
        if !kind.is_dir() {
            remove_existing(&dst);
        }
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() && !m.file_type().is_symlink() => {}
                    Ok(_) => {
                        remove_existing(&dst);
                        fs::create_dir(&dst).map_err(|er| ImageError::io(&dst, er))?;
                    }
                    Err(_) => fs::create_dir(&dst).map_err(|er| ImageError::io(&dst, er))?,
                }
                dirs.push((dst.clone(), mode, h.mtime().unwrap_or(0)));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dst)
                    .map_err(|er| ImageError::io(&dst, er))?;
                io::copy(&mut e, &mut f).map_err(|er| {
                    bad(format!("{}: truncated or unreadable: {er}", member.display()))
                })?;
                fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
                    .map_err(|er| ImageError::io(&dst, er))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(|er| bad(er.to_string()))?
                    .ok_or_else(|| bad(format!("{}: symlink without target", member.display())))?;
                // The target is stored as is and never followed here; at run time it resolves
                // inside the container's root.
                symlink(&*target, &dst).map_err(|er| ImageError::io(&dst, er))?;
            }
            tar::EntryType::Link => {
                let target = e.link_name().map_err(|er| bad(er.to_string()))?.ok_or_else(|| {
                    bad(format!("{}: hard link without target", member.display()))
                })?;
                let src = place(root, &target)?
                    .ok_or_else(|| bad(format!("{}: hard link to the root", member.display())))?;
                fs::hard_link(&src, &dst).map_err(|er| ImageError::io(&dst, er))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let t = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let (maj, min) = (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                mknod(&dst, t | mode, maj, min)?;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => {
                return Err(bad(format!("{}: unsupported member type {other:?}", member.display())))
            }
        }
        lchown(&dst, uid, gid)?;
        if !kind.is_dir() {
            set_mtime(&dst, h.mtime().unwrap_or(0))?;
        }
    }
    // Directory modes last, so a read-only directory does not block its own members.
    for (d, mode, mtime) in dirs.into_iter().rev() {
        fs::set_permissions(&d, fs::Permissions::from_mode(mode))
            .map_err(|er| ImageError::io(&d, er))?;
        set_mtime(&d, mtime)?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn member(b: &mut Vec<u8>, path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) {
        let mut h = tar::Header::new_gnu();
        let bytes = h.as_mut_bytes();
        bytes[..100].fill(0);
        bytes[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            bytes[157..157 + l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_entry_type(kind);
        h.set_mtime(1_000_000);
        h.set_cksum();
        b.write_all(h.as_bytes()).unwrap();
        b.write_all(data).unwrap();
        b.write_all(&vec![0u8; (512 - data.len() % 512) % 512]).unwrap();
    }

    fn finish(mut b: Vec<u8>) -> Vec<u8> {
        b.extend_from_slice(&[0u8; 1024]);
        b
    }

    #[test]
    fn whiteouts_opaque_links_and_modes() {
        use tar::EntryType as T;
        let mut b = Vec::new();
        member(&mut b, "etc/", T::Directory, b"", None);
        member(&mut b, "etc/hosts", T::Regular, b"127.0.0.1 localhost\n", None);
        member(&mut b, "etc/.wh.passwd", T::Regular, b"", None);
        member(&mut b, "var/cache/.wh..wh..opq", T::Regular, b"", None);
        member(&mut b, "bin/sh", T::Symlink, b"", Some("/bin/busybox"));
        member(&mut b, "etc/hosts.link", T::Link, b"", Some("etc/hosts"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(unpack(&finish(b)[..], dir.path()).unwrap(), 6);
        let r = dir.path();
        assert_eq!(fs::read(r.join("etc/hosts")).unwrap(), b"127.0.0.1 localhost\n");
        let wh = fs::symlink_metadata(r.join("etc/passwd")).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "whiteout is a 0/0 char device");
        assert_eq!(fs::read_link(r.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
        assert_eq!(
            fs::metadata(r.join("etc/hosts.link")).unwrap().ino(),
            fs::metadata(r.join("etc/hosts")).unwrap().ino()
        );
        assert_eq!(fs::metadata(r.join("etc/hosts")).unwrap().mtime(), 1_000_000);
        let c = cpath(&r.join("var/cache")).unwrap();
        let mut v = [0u8; 4];
        // SAFETY: valid path, name and buffer.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                v.as_mut_ptr() as *mut libc::c_void,
                4,
            )
        };
        assert_eq!((n, v[0]), (1, b'y'), "opaque directory marked");
    }

    #[test]
    fn escapes_are_refused() {
        use tar::EntryType as T;
        let cases: Vec<Vec<u8>> = vec![
            {
                let mut b = Vec::new();
                member(&mut b, "../evil", T::Regular, b"x", None);
                b
            },
            {
                let mut b = Vec::new();
                member(&mut b, "/abs", T::Regular, b"x", None);
                b
            },
            {
                // A symlink to the host's /etc, then a file "through" it.
                let mut b = Vec::new();
                member(&mut b, "etc", T::Symlink, b"", Some("/tmp"));
                member(&mut b, "etc/escaped", T::Regular, b"x", None);
                b
            },
            {
                let mut b = Vec::new();
                member(&mut b, "h", T::Link, b"", Some("../../etc/shadow"));
                b
            },
            {
                let mut b = Vec::new();
                member(&mut b, "a/.wh...", T::Regular, b"", None);
                b
            },
        ];
        for (i, c) in cases.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let e = unpack(&finish(c)[..], dir.path()).unwrap_err();
            assert!(matches!(e, ImageError::BadTar(_)), "case {i}: {e}");
        }
        assert!(!Path::new("/tmp/escaped").exists());
    }
}
