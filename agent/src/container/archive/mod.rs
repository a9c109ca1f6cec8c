//! A container's files from the host: a path's facts, a tar of a path (`docker cp` out), a
//! tar extracted into a directory (`docker cp` in) and the container's changes to its image
//! (`docker diff`).
//!
//! Paths resolve the way they do for the container's processes: from the container's root
//! as its init sees it (with its volumes and tmpfs mounts), `..` and symbolic links (absolute
//! ones too) staying inside it (`openat2` with `RESOLVE_IN_ROOT`). Every file that is made
//! is made relative to a directory opened that way, never through a path the container could
//! redirect, and never through a symbolic link. Walks open every entry relative to its
//! parent's descriptor, never through a link, so a directory swapped for a link meanwhile
//! (by another container sharing a volume) leads nowhere.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use ironpod_protocol::{AgentError, Change, ChangeKind, ErrorKind, PathStat};

mod extract;

pub use extract::{extract, ExtractOptions};

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
    let base = ironpod_protocol::copy_base(path);
    Ok(InPath { rel, follow, base })
}

/// `openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
fn open_in(root: &OwnedFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    openat2(root, rel, flags, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
}

/// `openat2(dir, rel, flags, resolve)`, again when a rename raced the lookup.
fn openat2(dir: &OwnedFd, rel: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = cstr(rel.as_os_str())?;
    // SAFETY: open_how is plain data; all-zero is a valid value that the fields then set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    for _ in 0..16 {
        // SAFETY: c is a valid string, how a valid open_how of the size passed; the result
        // is checked before use.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
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
        // EAGAIN: a rename raced the lookup (RESOLVE_IN_ROOT/BENEATH are strict); again.
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
        String::from_utf8_lossy(&readlink_fd(&fd).map_err(|e| io_err(&p.rel, e))?).into_owned()
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

fn readlink_fd(fd: &OwnedFd) -> io::Result<Vec<u8>> {
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
    Ok(buf)
}

/// Opens `name` in directory `dir` as an `O_PATH` descriptor, never through a symbolic
/// link (a link is opened as itself).
fn open_nofollow(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: dir is a directory descriptor, c a valid single component; the result is
    // checked before use.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    check(fd)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The metadata of what `fd` is (a link's own, for an `O_PATH` descriptor of one).
fn meta_of(fd: &OwnedFd) -> io::Result<fs::Metadata> {
    File::from(fd.try_clone()?).metadata()
}

/// The names in directory `fd`, sorted; read through the descriptor, not a path.
fn names_in(fd: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names: Vec<_> =
        fs::read_dir(proc_fd(fd))?.filter_map(Result::ok).map(|e| e.file_name()).collect();
    names.sort();
    Ok(names)
}

/// How deep [`walk`] goes: each level keeps a descriptor open.
const MAX_DEPTH: usize = 512;

/// Visits what is under directory `dir`, depth first in name order. Each entry is opened
/// relative to its parent's descriptor without following a symbolic link, so a directory
/// swapped for a link meanwhile is never walked through and nothing outside `dir` is
/// reached. `visit` gets the path under `dir`, the entry's `O_PATH` descriptor and its
/// metadata; a directory's entries follow it. An entry gone meanwhile is left out.
fn walk(
    dir: &OwnedFd,
    mut visit: impl FnMut(&Path, &OwnedFd, &fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let mut stack = vec![(dir.try_clone()?, PathBuf::new(), names_in(dir)?.into_iter())];
    while let Some((fd, rel, names)) = stack.last_mut() {
        let Some(name) = names.next() else {
            stack.pop();
            continue;
        };
        let child = match open_nofollow(fd, &name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            r => r?,
        };
        let path = rel.join(&name);
        let meta = meta_of(&child)?;
        visit(&path, &child, &meta)?;
        if meta.is_dir() {
            if stack.len() >= MAX_DEPTH {
                let msg = format!("{}: more than {MAX_DEPTH} directory levels", path.display());
                return Err(io::Error::other(msg));
            }
            let names = names_in(&child)?.into_iter();
            stack.push((child, path, names));
        }
    }
    Ok(())
}

/// Writes a tar of `path` in the container to `out`: entry names start with its base name
/// as `docker cp` expects (`./` for `dir/.`, kept verbatim); sockets are left out, symbolic
/// links are never followed.
pub fn write_tar(root: &OwnedFd, path: &str, out: impl Write) -> Result<(), AgentError> {
    let p = in_path(path)?;
    let fd = open_object(root, &p).map_err(|e| io_err(&p.rel, e))?;
    let mut b = tar::Builder::new(out);
    let prefix = if p.base == "/" { "." } else { p.base.as_str() };
    let r = meta_of(&fd).and_then(|meta| {
        add(&mut b, &fd, &meta, prefix.as_bytes().to_vec())?;
        if !meta.is_dir() {
            return Ok(());
        }
        walk(&fd, |rel, child, meta| {
            let mut name = prefix.as_bytes().to_vec();
            name.push(b'/');
            name.extend_from_slice(rel.as_os_str().as_bytes());
            add(&mut b, child, meta, name)
        })
    });
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

/// Appends what `fd` (an `O_PATH` descriptor, metadata `meta`) is as `name` (a
/// directory's entry only: [`walk`] finds what is in it).
fn add<W: Write>(
    b: &mut tar::Builder<W>,
    fd: &OwnedFd,
    meta: &fs::Metadata,
    mut name: Vec<u8>,
) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_socket() {
        return Ok(());
    }
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    if ft.is_file() {
        // Opened again through the descriptor (the very file, not a name). Exactly the
        // size the header announces, whatever the file does meanwhile (a file that grows,
        // or one whose stat size is not its content, like /proc's, must not spill bytes
        // that a reader would take for more entries).
        let f = File::open(proc_fd(fd))?;
        return append_named(b, h, &name, None, exactly(f, meta.len()));
    }
    h.set_size(0);
    if ft.is_symlink() {
        let target = readlink_fd(fd)?;
        return append_named(b, h, &name, Some(&target), io::empty());
    }
    if ft.is_dir() {
        name.push(b'/');
    }
    append_named(b, h, &name, None, io::empty())
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn zeroed_stat() -> libc::stat {
    // SAFETY: struct stat is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Opens directory `path` of the agent (not of a container) as an `O_PATH` descriptor.
fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: c is a valid string; the result is checked before use.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    check(fd)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The container's changes: every path of its upper directory, `Deleted` for whiteouts,
/// `Modified` when a lower layer has it (reached without a symbolic link, as overlayfs
/// would merge it), else `Added`; sorted by path.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, AgentError> {
    let err = |e| io_err(Path::new("upper"), e);
    let upper = open_dir_path(upper).map_err(err)?;
    let lowers: Vec<OwnedFd> = lowers.iter().filter_map(|l| open_dir_path(l).ok()).collect();
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    let mut out = Vec::new();
    walk(&upper, |rel, _, meta| {
        let path = Path::new("/").join(rel).to_string_lossy().into_owned();
        let kind = if is_whiteout(meta) {
            ChangeKind::Deleted
        } else if lowers.iter().any(|l| openat2(l, rel, libc::O_PATH, resolve).is_ok()) {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        out.push(Change { path, kind });
        Ok(())
    })
    .map_err(err)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
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

    #[test]
    fn walks_never_pass_through_links_and_stop_at_a_depth() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "host").unwrap();
        fs::create_dir(t.path().join("a")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("a/link")).unwrap();
        let mut seen = Vec::new();
        let dir = open_dir_path(t.path()).unwrap();
        walk(&dir, |rel, _, meta| {
            seen.push((rel.to_path_buf(), meta.file_type().is_symlink()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [(PathBuf::from("a"), false), (PathBuf::from("a/link"), true)]);
        // A lower layer's link does not make a path under it "in the layer".
        let lower = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(t.path(), lower.path().join("a")).unwrap();
        let c = changes(t.path(), &[lower.path().to_path_buf()]).unwrap();
        assert_eq!(c[1].path, "/a/link");
        assert_eq!(c[1].kind, ChangeKind::Added);
        // Too deep: an error, not a crash.
        let mut p = t.path().join("deep");
        for _ in 0..MAX_DEPTH + 1 {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        let err = walk(&dir, |_, _, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("directory levels"), "{err}");
    }
}
