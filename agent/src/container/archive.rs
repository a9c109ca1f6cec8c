//! A container's files from the host: a path's facts, a tar of a path (`docker cp` out), a
//! tar extracted into a directory (`docker cp` in) and the container's changes to its image
//! (`docker diff`).
//!
//! Paths resolve the way they do for the container's processes: from the container's root
//! as its init sees it (with its volumes and tmpfs mounts), `..` and symbolic links (absolute
//! ones too) staying inside it (`openat2` with `RESOLVE_IN_ROOT`). Every file that is made
//! is made relative to a directory opened that way, never through a path the container could
//! redirect, and never through a symbolic link.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use ironpod_protocol::{AgentError, Change, ChangeKind, ErrorKind, PathStat};

fn bad(msg: impl Into<String>) -> AgentError {
    AgentError::new(ErrorKind::BadRequest, msg)
}

fn io_err(what: &Path, e: io::Error) -> AgentError {
    AgentError::new(ErrorKind::from(&e), format!("{}: {e}", Path::new("/").join(what).display()))
}

fn cstr(p: &OsStr) -> io::Result<CString> {
    CString::new(p.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A path in a container, as parts under its root: never absolute, never `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InPath {
    rel: PathBuf,
    /// The path ended in `/` or `/.`: a symbolic link at its end is followed.
    follow: bool,
    /// The name `docker cp` gives it (Go's `filepath.Base`: `.` for `dir/.`).
    base: String,
}

/// Parses an absolute container path. `..` is refused (it would resolve inside the root
/// anyway, but a client that sends it is confused).
fn in_path(path: &str) -> Result<InPath, AgentError> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(bad(format!("{path:?}: not an absolute path")));
    }
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad(format!("{path:?}: '..' is not allowed")));
            }
        }
    }
    let follow = path.ends_with('/') || path.ends_with("/.");
    let base = if path.ends_with("/.") {
        ".".to_string()
    } else {
        rel.file_name().map_or("/".into(), |n| n.to_string_lossy().into_owned())
    };
    Ok(InPath { rel, follow, base })
}

/// `openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
fn open_in(root: &OwnedFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = cstr(rel.as_os_str())?;
    // SAFETY: open_how is plain data; all-zero is a valid value that the fields then set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    for _ in 0..16 {
        // SAFETY: c is a valid string, how a valid open_how of the size passed; the result
        // is checked before use.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = io::Error::last_os_error();
        // EAGAIN: a rename raced the lookup (RESOLVE_IN_ROOT is strict); try again.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

fn proc_fd(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens the container's root directory: `/proc/<init>/root` while its init lives (so its
/// mounts count), else the overlay root.
pub fn open_root(init_pid: Option<i32>, overlay: &Path) -> Result<OwnedFd, AgentError> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if let Some(pid) = init_pid {
        if let Ok(f) = fs::File::open(format!("/proc/{pid}/root")) {
            return Ok(f.into());
        }
    }
    let c = cstr(overlay.as_os_str()).map_err(|e| io_err(overlay, e))?;
    // SAFETY: c is a valid string; the result is checked before use.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io_err(overlay, io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `p` for reading metadata: its parent resolved in the root, and the last component
/// itself unless it should be followed. Returns the opened path (an `O_PATH` descriptor
/// of the object itself, never followed when it is a symbolic link that should not be).
fn open_object(root: &OwnedFd, p: &InPath) -> io::Result<OwnedFd> {
    let nofollow = if p.follow { 0 } else { libc::O_NOFOLLOW };
    open_in(root, &p.rel, libc::O_PATH | nofollow)
}

/// `fstat` of a descriptor (an `O_PATH` one of a symbolic link gives the link's own facts).
fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st = zeroed_stat();
    // SAFETY: fd is an open descriptor and st valid to write.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Facts about `path` in the container.
pub fn stat(root: &OwnedFd, path: &str) -> Result<PathStat, AgentError> {
    let p = in_path(path)?;
    let fd = open_object(root, &p).map_err(|e| io_err(&p.rel, e))?;
    let st = fstat(&fd).map_err(|e| io_err(&p.rel, e))?;
    let link_target = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        readlink_fd(&fd).map_err(|e| io_err(&p.rel, e))?
    } else {
        String::new()
    };
    Ok(PathStat {
        name: p.base,
        size: st.st_size as u64,
        mode: st.st_mode,
        mtime_secs: st.st_mtime,
        mtime_nanos: st.st_mtime_nsec as u32,
        link_target,
    })
}

fn readlink_fd(fd: &OwnedFd) -> io::Result<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: fd is an O_PATH descriptor of a symbolic link; "" with it reads the link;
    // buf is valid for its length.
    let n = unsafe {
        libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr() as *mut _, buf.len())
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Writes a tar of `path` in the container to `out`: entry names start with its base name
/// as `docker cp` expects (`./` for `dir/.`, kept verbatim); sockets are left out, symbolic
/// links are never followed.
pub fn write_tar(root: &OwnedFd, path: &str, out: impl Write) -> Result<(), AgentError> {
    let p = in_path(path)?;
    let fd = open_object(root, &p).map_err(|e| io_err(&p.rel, e))?;
    let mut b = tar::Builder::new(out);
    let prefix = if p.base == "/" { "." } else { p.base.as_str() };
    let name = prefix.as_bytes().to_vec();
    let top = proc_fd(&fd);
    let st = fstat(&fd).map_err(|e| io_err(&p.rel, e))?;
    let r = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        readlink_fd(&fd).and_then(|target| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(st.st_mode & 0o7777);
            h.set_uid(st.st_uid.into());
            h.set_gid(st.st_gid.into());
            h.set_mtime(st.st_mtime.max(0) as u64);
            h.set_size(0);
            append_named(&mut b, h, &name, Some(target.as_bytes()), io::empty())
        })
    } else {
        // Through the descriptor's /proc link, which metadata() follows to the object.
        fs::metadata(&top).and_then(|meta| add(&mut b, &top, meta, name))
    };
    r.map_err(|e| io_err(&p.rel, e))?;
    b.into_inner().map_err(|e| io_err(&p.rel, e))?.flush().map_err(|e| io_err(&p.rel, e))
}

/// Appends an entry named `name` exactly as given (the tar crate's own path setters would
/// drop a leading `./`), with a GNU long-name (and long-link) entry before it when needed.
fn append_named<W: Write>(
    b: &mut tar::Builder<W>,
    mut h: tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: impl Read,
) -> io::Result<()> {
    for (kind, value) in
        [(tar::EntryType::GNULongName, Some(name)), (tar::EntryType::GNULongLink, link)]
    {
        let Some(value) = value.filter(|v| v.len() > 100) else { continue };
        let mut l = tar::Header::new_gnu();
        l.as_gnu_mut().expect("a GNU header").name[..13].copy_from_slice(b"././@LongLink");
        l.set_mode(0o644);
        l.set_mtime(0);
        l.set_size(value.len() as u64 + 1);
        l.set_entry_type(kind);
        l.set_cksum();
        let mut v = value.to_vec();
        v.push(0);
        b.append(&l, &v[..])?;
    }
    let old = h.as_old_mut();
    old.name.fill(0);
    let n = name.len().min(100);
    old.name[..n].copy_from_slice(&name[..n]);
    if let Some(link) = link {
        old.linkname.fill(0);
        let n = link.len().min(100);
        old.linkname[..n].copy_from_slice(&link[..n]);
    }
    h.set_cksum();
    b.append(&h, data)
}

/// Reads `size` bytes of `r`: cut there, or padded with zeros when it ends before.
fn exactly(r: impl Read, size: u64) -> impl Read {
    r.take(size).chain(io::repeat(0)).take(size)
}

/// Appends `src` (metadata `meta`) as `name`, and, for a directory, what is in it.
fn add<W: Write>(
    b: &mut tar::Builder<W>,
    src: &Path,
    meta: fs::Metadata,
    mut name: Vec<u8>,
) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_socket() {
        return Ok(());
    }
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    if ft.is_file() {
        // Exactly the size the header announces, whatever the file does meanwhile (a file
        // that grows, or one whose stat size is not its content, like /proc's, must not
        // spill bytes that a reader would take for more entries).
        return append_named(b, h, &name, None, exactly(File::open(src)?, meta.len()));
    }
    if ft.is_symlink() {
        let target = fs::read_link(src)?;
        h.set_size(0);
        return append_named(b, h, &name, Some(target.as_os_str().as_bytes()), io::empty());
    }
    h.set_size(0);
    if !ft.is_dir() {
        return append_named(b, h, &name, None, io::empty());
    }
    name.push(b'/');
    append_named(b, h, &name, None, io::empty())?;
    let mut names: Vec<_> =
        fs::read_dir(src)?.filter_map(Result::ok).map(|e| e.file_name()).collect();
    names.sort();
    for n in names {
        let child = src.join(&n);
        let meta = fs::symlink_metadata(&child)?;
        let mut child_name = name.clone();
        child_name.extend_from_slice(n.as_bytes());
        add(b, &child, meta, child_name)?;
    }
    Ok(())
}

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

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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
    match kind {
        tar::EntryType::Directory => {
            if !is_dir {
                // SAFETY: as above.
                check(unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o700) }).map_err(err)?;
            }
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW;
            // SAFETY: as above; the result is checked before use.
            let fd = unsafe { libc::openat(pfd, name.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
            check(fd).map_err(err)?;
            // SAFETY: the kernel just returned this descriptor; nothing else owns it.
            let mut f = unsafe { File::from_raw_fd(fd) };
            io::copy(entry, &mut f).map_err(err)?;
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name().map_err(err)?.unwrap_or_default();
            let target = cstr(target.as_os_str()).map_err(err)?;
            // SAFETY: as above; target is a valid string.
            check(unsafe { libc::symlinkat(target.as_ptr(), pfd, name.as_ptr()) }).map_err(err)?;
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
        }
        other => {
            return Err(AgentError::new(
                ErrorKind::Unsupported,
                format!("{}: tar entries of type {other:?} are not copied", rel.display()),
            ));
        }
    }
    let symlink = kind == tar::EntryType::Symlink;
    let nofollow = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: as above.
    check(unsafe { libc::fchownat(pfd, name.as_ptr(), uid, gid, nofollow) }).map_err(err)?;
    if !symlink {
        // SAFETY: as above (fchmodat follows links; this is not one: it was just made).
        check(unsafe { libc::fchmodat(pfd, name.as_ptr(), mode, 0) }).map_err(err)?;
    }
    let times = [
        libc::timespec { tv_sec: mtime, tv_nsec: 0 },
        libc::timespec { tv_sec: mtime, tv_nsec: 0 },
    ];
    // SAFETY: as above; times holds two timespecs.
    check(unsafe { libc::utimensat(pfd, name.as_ptr(), times.as_ptr(), nofollow) }).map_err(err)?;
    Ok(())
}

fn zeroed_stat() -> libc::stat {
    // SAFETY: struct stat is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// The container's changes: every path of its upper directory, `Deleted` for whiteouts,
/// `Modified` when a lower layer has it, else `Added`; sorted by path.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, AgentError> {
    let mut out = Vec::new();
    walk_changes(upper, Path::new(""), lowers, &mut out)
        .map_err(|e| io_err(Path::new("upper"), e))?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk_changes(
    upper: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    out: &mut Vec<Change>,
) -> io::Result<()> {
    let mut names: Vec<_> =
        fs::read_dir(upper.join(rel))?.filter_map(Result::ok).map(|e| e.file_name()).collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let meta = fs::symlink_metadata(upper.join(&r))?;
        let path = Path::new("/").join(&r).to_string_lossy().into_owned();
        if is_whiteout(&meta) {
            out.push(Change { path, kind: ChangeKind::Deleted });
            continue;
        }
        let in_lower = lowers.iter().any(|l| fs::symlink_metadata(l.join(&r)).is_ok());
        let kind = if in_lower { ChangeKind::Modified } else { ChangeKind::Added };
        out.push(Change { path, kind });
        if meta.is_dir() {
            walk_changes(upper, &r, lowers, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_of(dir: &Path) -> OwnedFd {
        open_root(None, dir).unwrap()
    }

    #[test]
    fn container_paths_are_parsed_like_docker_cp_names_them() {
        let p = in_path("/etc/hosts").unwrap();
        assert_eq!(
            (p.rel, p.follow, p.base.as_str()),
            (PathBuf::from("etc/hosts"), false, "hosts")
        );
        let p = in_path("/etc/").unwrap();
        assert_eq!((p.follow, p.base.as_str()), (true, "etc"));
        let p = in_path("/etc/.").unwrap();
        assert_eq!((p.rel, p.follow, p.base.as_str()), (PathBuf::from("etc"), true, "."));
        assert_eq!(in_path("/").unwrap().base, "/");
        assert!(in_path("etc").is_err());
        assert!(in_path("/etc/../x").is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", t.path().join("up")).unwrap();
        let root = root_of(t.path());
        assert!(stat(&root, "/escape/secret").is_err(), "an absolute link left the root");
        let s = stat(&root, "/escape").unwrap();
        assert_eq!(s.link_target, outside.path().to_string_lossy());
        assert_eq!(s.mode & libc::S_IFMT, libc::S_IFLNK);
        // `up` is the root itself: listing it shows the root's own entries.
        let mut tar = Vec::new();
        write_tar(&root, "/up/", &mut tar).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"up/escape".to_string()), "{names:?}");
        // `dir/.` keeps its `./`; long names survive.
        let long = "n".repeat(150);
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d").join(&long), "x").unwrap();
        let mut tar = Vec::new();
        write_tar(&root, "/d/.", &mut tar).unwrap();
        let raw: Vec<Vec<u8>> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(raw, [b"./".to_vec(), format!("./{long}").into_bytes()]);
        assert!(!names.iter().any(|n| n.contains("secret")), "{names:?}");
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

    #[test]
    fn a_file_is_read_at_exactly_its_announced_size() {
        let mut out = Vec::new();
        exactly(&b"abcdef"[..], 3).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
        out.clear();
        exactly(&b"ab"[..], 4).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab\0\0");
    }

    #[test]
    fn changes_compare_the_upper_directory_with_the_layers() {
        let t = tempfile::tempdir().unwrap();
        let (upper, lower) = (t.path().join("upper"), t.path().join("lower"));
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/gone"), "").unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("new/sub")).unwrap();
        fs::write(upper.join("etc/added"), "").unwrap();
        let c = changes(&upper, &[lower]).unwrap();
        let got: Vec<(&str, ChangeKind)> = c.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        assert_eq!(
            got,
            [
                ("/etc", ChangeKind::Modified),
                ("/etc/added", ChangeKind::Added),
                ("/new", ChangeKind::Added),
                ("/new/sub", ChangeKind::Added)
            ]
        );
    }
}
