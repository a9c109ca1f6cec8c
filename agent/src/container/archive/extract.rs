//! Extraction of a tar into a directory of a container (`docker cp` in): every entry is
//! made relative to a directory opened in the container's root, never through a path the
//! container could redirect, and never through a symbolic link.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use ironpod_protocol::{AgentError, ErrorKind};

use super::{bad, check, cstr, in_path, io_err, open_in, proc_fd, zeroed_stat};

/// How an extraction treats what it finds in the way.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Refuse to replace a directory with a non-directory or the other way round.
    pub no_overwrite_dir_non_dir: bool,
    /// Owner of everything extracted (`None`: the tar's owners).
    pub owner: Option<(u32, u32)>,
}

/// Extracts the tar read from `input` into directory `path` of the container.
pub fn extract(
    root: &OwnedFd,
    path: &str,
    input: impl Read,
    opts: ExtractOptions,
) -> Result<(), AgentError> {
    let dest = in_path(path)?;
    let dir = open_in(root, &dest.rel, libc::O_PATH).map_err(|e| io_err(&dest.rel, e))?;
    let meta = fs::metadata(proc_fd(&dir)).map_err(|e| io_err(&dest.rel, e))?;
    if !meta.is_dir() {
        return Err(bad(format!("{path}: extraction point is not a directory")));
    }
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(|e| bad(format!("not a tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("bad tar: {e}")))?;
        let name = entry.path().map_err(|e| bad(format!("bad tar entry name: {e}")))?;
        let Some(rel) = entry_path(&name)? else { continue };
        let rel = dest.rel.join(rel);
        extract_one(root, &rel, &mut entry, &dest.rel, opts)?;
    }
    Ok(())
}

/// An entry's path under the extraction point (`None` for the point itself).
fn entry_path(name: &Path) -> Result<Option<PathBuf>, AgentError> {
    let mut rel = PathBuf::new();
    for c in name.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad(format!("tar entry {} leaves its directory", name.display())));
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// Opens directory `rel` (resolved in the root), making missing directories on the way.
fn open_dir(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    match open_in(root, rel, flags) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        r => return r,
    }
    let mut at = PathBuf::new();
    for c in rel.components() {
        at.push(c);
        match open_in(root, &at, flags) {
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let parent = open_in(root, at.parent().unwrap_or(Path::new("")), flags)?;
        let name = cstr(c.as_os_str())?;
        // SAFETY: parent is a directory descriptor and name a valid single component.
        if unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
    }
    open_in(root, rel, flags)
}

fn extract_one<R: Read>(
    root: &OwnedFd,
    rel: &Path,
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
    opts: ExtractOptions,
) -> Result<(), AgentError> {
    let err = |e: io::Error| io_err(rel, e);
    let kind = entry.header().entry_type();
    if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
        return Ok(());
    }
    let parent = open_dir(root, rel.parent().unwrap_or(Path::new(""))).map_err(err)?;
    let pfd = parent.as_raw_fd();
    let name = cstr(rel.file_name().unwrap_or_default()).map_err(err)?;
    let h = entry.header();
    let mode = h.mode().map_err(err)? & 0o7777;
    let (uid, gid) = match opts.owner {
        Some(o) => o,
        None => (h.uid().map_err(err)? as u32, h.gid().map_err(err)? as u32),
    };
    let mtime = h.mtime().unwrap_or(0) as i64;
    // What is there now, not followed.
    let mut st = zeroed_stat();
    // SAFETY: pfd is a directory descriptor, name a valid component, st valid to write.
    let exists =
        unsafe { libc::fstatat(pfd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0;
    let is_dir = exists && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let want_dir = kind == tar::EntryType::Directory;
    if exists && is_dir != want_dir && opts.no_overwrite_dir_non_dir {
        return Err(bad(format!(
            "cannot overwrite {} {} with a {}",
            if is_dir { "directory" } else { "non-directory" },
            Path::new("/").join(rel).display(),
            if want_dir { "directory" } else { "non-directory" }
        )));
    }
    if exists && !(is_dir && want_dir) {
        if is_dir {
            fs::remove_dir_all(proc_fd(&parent).join(rel.file_name().unwrap_or_default()))
                .map_err(err)?;
        } else {
            // SAFETY: pfd is a directory descriptor, name a valid component.
            check(unsafe { libc::unlinkat(pfd, name.as_ptr(), 0) }).map_err(err)?;
        }
    }
    let base = rel.file_name().unwrap_or_default();
    // What was made, as a descriptor (none for a symbolic link): its owner, mode and times
    // are set through it, so nothing swapped in under its name meanwhile (by a process
    // sharing the directory: a volume of another container) gets them.
    let made: Option<OwnedFd> = match kind {
        tar::EntryType::Directory => {
            if !is_dir {
                // SAFETY: as above.
                check(unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o700) }).map_err(err)?;
            }
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            Some(super::openat2(&parent, Path::new(base), flags, NO_LINKS).map_err(err)?)
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW;
            // SAFETY: as above; the result is checked before use.
            let fd = unsafe { libc::openat(pfd, name.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
            check(fd).map_err(err)?;
            // SAFETY: the kernel just returned this descriptor; nothing else owns it.
            let mut f = unsafe { File::from_raw_fd(fd) };
            io::copy(entry, &mut f).map_err(err)?;
            Some(f.into())
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name().map_err(err)?.unwrap_or_default();
            let target = cstr(target.as_os_str()).map_err(err)?;
            // SAFETY: as above; target is a valid string.
            check(unsafe { libc::symlinkat(target.as_ptr(), pfd, name.as_ptr()) }).map_err(err)?;
            None
        }
        tar::EntryType::Link => {
            let target = entry.link_name().map_err(err)?.unwrap_or_default();
            let target = entry_path(&target)?.ok_or_else(|| bad("hard link to nothing"))?;
            let src =
                open_in(root, &dest.join(target), libc::O_PATH | libc::O_NOFOLLOW).map_err(err)?;
            // SAFETY: src is an O_PATH descriptor; AT_EMPTY_PATH links the file it names.
            check(unsafe {
                libc::linkat(src.as_raw_fd(), c"".as_ptr(), pfd, name.as_ptr(), libc::AT_EMPTY_PATH)
            })
            .map_err(err)?;
            return Ok(());
        }
        tar::EntryType::Fifo => {
            // SAFETY: as above.
            check(unsafe { libc::mknodat(pfd, name.as_ptr(), libc::S_IFIFO | 0o600, 0) })
                .map_err(err)?;
            Some(super::openat2(&parent, Path::new(base), libc::O_PATH, NO_LINKS).map_err(err)?)
        }
        other => {
            return Err(AgentError::new(
                ErrorKind::Unsupported,
                format!("{}: tar entries of type {other:?} are not copied", rel.display()),
            ));
        }
    };
    let times = [
        libc::timespec { tv_sec: mtime, tv_nsec: 0 },
        libc::timespec { tv_sec: mtime, tv_nsec: 0 },
    ];
    match made {
        Some(fd) => {
            // /proc/self/fd/N leads to the very object (the kernel's link, no lookup).
            let at = cstr(proc_fd(&fd).as_os_str()).map_err(err)?;
            // SAFETY: at is a valid string naming an open descriptor's object.
            check(unsafe { libc::chown(at.as_ptr(), uid, gid) }).map_err(err)?;
            // After chown, which clears set-id bits.
            fs::set_permissions(proc_fd(&fd), fs::Permissions::from_mode(mode)).map_err(err)?;
            // SAFETY: as above; times holds two timespecs.
            check(unsafe { libc::utimensat(libc::AT_FDCWD, at.as_ptr(), times.as_ptr(), 0) })
                .map_err(err)?;
        }
        None => {
            // A symbolic link: its own owner and times, by name, never followed.
            let nofollow = libc::AT_SYMLINK_NOFOLLOW;
            // SAFETY: pfd is a directory descriptor, name a valid component.
            check(unsafe { libc::fchownat(pfd, name.as_ptr(), uid, gid, nofollow) })
                .map_err(err)?;
            // SAFETY: as above; times holds two timespecs.
            check(unsafe { libc::utimensat(pfd, name.as_ptr(), times.as_ptr(), nofollow) })
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Resolution that never goes through a link or out of the directory.
const NO_LINKS: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::archive::open_root;
    use std::os::unix::fs::MetadataExt;

    fn root_of(dir: &Path) -> OwnedFd {
        open_root(None, dir).unwrap()
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o640);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_000_000);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            // set_path refuses `..`: write the raw name for hostile entries.
            let raw = name.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    const OPTS: ExtractOptions = ExtractOptions { no_overwrite_dir_non_dir: true, owner: None };

    #[test]
    fn extraction_makes_files_links_and_directories_inside_the_root_only() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("dst")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("dst/link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", t.path().join("dst/dangling")).unwrap();
        // The root's own copy of the outside path, where the link leads when resolved in it.
        fs::create_dir_all(t.path().join(outside.path().strip_prefix("/").unwrap())).unwrap();
        let root = root_of(t.path());
        let tar = tar_of(&[
            ("d/", tar::EntryType::Directory, b"", ""),
            ("d/f", tar::EntryType::Regular, b"data", ""),
            ("d/h", tar::EntryType::Link, b"", "d/f"),
            ("d/s", tar::EntryType::Symlink, b"", "/etc/passwd"),
            // Through an absolute symlink: lands in the root's copy of that path.
            ("link/x", tar::EntryType::Regular, b"in", ""),
        ]);
        extract(&root, "/dst", &tar[..], OPTS).unwrap();
        let d = t.path().join("dst/d");
        assert_eq!(fs::read_to_string(d.join("f")).unwrap(), "data");
        assert_eq!(fs::metadata(d.join("f")).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(d.join("f")).unwrap().mtime(), 1_000_000);
        assert_eq!(
            fs::metadata(d.join("h")).unwrap().ino(),
            fs::metadata(d.join("f")).unwrap().ino()
        );
        assert_eq!(fs::read_link(d.join("s")).unwrap(), Path::new("/etc/passwd"));
        assert!(!outside.path().join("x").exists(), "wrote through a link out of the root");
        let inside = t.path().join(outside.path().strip_prefix("/").unwrap()).join("x");
        assert_eq!(fs::read_to_string(inside).unwrap(), "in");
        // Hostile names and wrong targets.
        let dangling = tar_of(&[("dangling/x", tar::EntryType::Regular, b"x", "")]);
        assert!(extract(&root, "/dst", &dangling[..], OPTS).is_err());
        assert!(!Path::new("/nowhere").exists());
        let up = tar_of(&[("../evil", tar::EntryType::Regular, b"x", "")]);
        let e = extract(&root, "/dst", &up[..], OPTS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{e}");
        let e = extract(&root, "/dst/d/f", &tar[..], OPTS).unwrap_err();
        assert!(e.message.contains("not a directory"), "{e}");
        let e = extract(&root, "/nope", &tar[..], OPTS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        let dir_over_file = tar_of(&[("d/f/", tar::EntryType::Directory, b"", "")]);
        let e = extract(&root, "/dst", &dir_over_file[..], OPTS).unwrap_err();
        assert!(e.message.contains("cannot overwrite"), "{e}");
        let opts = ExtractOptions { no_overwrite_dir_non_dir: false, ..OPTS };
        extract(&root, "/dst", &dir_over_file[..], opts).unwrap();
        assert!(d.join("f").is_dir());
        assert!(extract(&root, "/dst", &b"not a tar at all, just some text"[..], OPTS).is_err());
    }
}
