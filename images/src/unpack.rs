//! Unpacking a layer tar into a directory in overlayfs form, as root, without ever following
//! a path the archive controls: every member is reached by a walk of single names from a
//! descriptor of the root, each step opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, so a symlink anywhere on the way (one from the archive, or one put
//! there by a racing process) fails the walk instead of being followed. Owners, modes and
//! times are set through the new file's descriptor or relative to its parent's.
//!
//! OCI whiteouts (`.wh.NAME`) become 0/0 character devices, opaque markers (`.wh..wh..opq`)
//! the `trusted.overlay.opaque` xattr. No other device node is made: character and block
//! devices named by an image are skipped (the guest has its own devtmpfs), so a layer cannot
//! plant a host device node. Members whose path is absolute, climbs with `..` or is longer
//! than `PATH_MAX` are refused, and the decompressed stream and the number of members are
//! capped ([`Limits`]), so a small compressed blob cannot fill the host's disk.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
};
use rustix::io::Errno;

use crate::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// The longest member path accepted: a longer one could not be opened by name in the guest.
const PATH_MAX: usize = 4096;
/// Every walk stays beneath its starting directory and follows no link of any kind.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Upper bounds on what one layer may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of the decompressed tar stream (headers and contents).
    pub max_bytes: u64,
    /// Members (files, directories, links, whiteouts).
    pub max_members: u64,
}

impl Default for Limits {
    /// 64 GiB and two million members: far beyond any real layer, well short of a bomb.
    fn default() -> Self {
        Limits { max_bytes: 64 << 30, max_members: 2_000_000 }
    }
}

impl Limits {
    /// What a member costs the disk at least, beyond its bytes in the stream: a block (and
    /// an inode) for a header of 512 bytes.
    pub const MEMBER_COST: u64 = 4096;

    /// The limits for a layer unpacked where `free_bytes` and `free_inodes` are left (each
    /// `None` when the file system does not say): at most half of each, and never more than
    /// the fixed caps — a layer of millions of empty members compresses to almost nothing
    /// yet costs a block and an inode each.
    pub fn for_space(free_bytes: Option<u64>, free_inodes: Option<u64>) -> Limits {
        let mut l = Limits::default();
        if let Some(free) = free_bytes {
            l.max_bytes = l.max_bytes.min(free / 2);
            l.max_members = l.max_members.min(free / 2 / Self::MEMBER_COST);
        }
        if let Some(inodes) = free_inodes {
            l.max_members = l.max_members.min(inodes / 2);
        }
        l
    }
}

/// What an unpack made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Members read from the archive.
    pub members: u64,
    /// Character and block devices the archive named and that were not made.
    pub skipped_devices: u64,
}

fn bad(msg: String) -> ImageError {
    ImageError::BadTar(msg)
}

fn os(member: &Path, what: &str, e: Errno) -> ImageError {
    ImageError::io(member, io::Error::other(format!("{what}: {e}")))
}

/// The member's path as plain names below the root (empty for the root itself).
fn names(member: &Path) -> Result<Vec<&OsStr>, ImageError> {
    if member.as_os_str().len() > PATH_MAX {
        return Err(bad(format!(
            "a member path of {} bytes is too long",
            member.as_os_str().len()
        )));
    }
    let mut out = Vec::new();
    for c in member.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(bad(format!("{} climbs out of the layer with '..'", member.display())))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad(format!("{} is an absolute path", member.display())))
            }
        }
    }
    Ok(out)
}

/// Opens the directory `name` in `dir` for reading, never through a link.
fn open_dir(dir: impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    rfs::openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
}

/// Walks `dirs` down from `root`, making missing directories when `create`.
fn walk(
    root: &OwnedFd,
    dirs: &[&OsStr],
    member: &Path,
    create: bool,
) -> Result<OwnedFd, ImageError> {
    let mut cur = open_dir(root, OsStr::new(".")).map_err(|e| os(member, "open the root", e))?;
    for (i, name) in dirs.iter().enumerate() {
        let step = match open_dir(&cur, name) {
            Err(Errno::NOENT) if create => {
                match rfs::mkdirat(&cur, *name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(os(member, "make a parent directory", e)),
                }
                open_dir(&cur, name)
            }
            other => other,
        };
        let is_link = |e: Errno| {
            e == Errno::NOTDIR
                && rfs::statat(&cur, *name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
        };
        cur = step.map_err(|e| {
            let at: PathBuf = dirs[..=i].iter().collect();
            let e = if is_link(e) { Errno::LOOP } else { e };
            match e {
                Errno::LOOP | Errno::XDEV => {
                    bad(format!("{} goes through the link {}", member.display(), at.display()))
                }
                Errno::NOTDIR => {
                    bad(format!("{}: {} is not a directory", member.display(), at.display()))
                }
                e => os(member, &format!("open {}", at.display()), e),
            }
        })?;
    }
    Ok(cur)
}

/// Removes whatever is at `name` in `dir` (a directory with everything below it).
fn remove_existing(dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            let sub = open_dir(dir, name)?;
            let mut entries = Vec::new();
            for ent in rfs::Dir::read_from(&sub)? {
                let ent = ent?;
                let n = ent.file_name().to_bytes();
                if n != b"." && n != b".." {
                    entries.push(OsStr::from_bytes(n).to_os_string());
                }
            }
            for n in entries {
                remove_existing(&sub, &n)?;
            }
            rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
        }
        Ok(_) => rfs::unlinkat(dir, name, AtFlags::empty()),
    }
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec { tv_sec: mtime.min(i64::MAX as u64) as i64, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

fn id(v: u64, what: &str, member: &Path) -> Result<u32, ImageError> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| bad(format!("{}: {what} {v} is out of range", member.display())))
}

/// A reader that fails once more than `left` bytes have come through.
struct Capped<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(l) => {
                self.left = l;
                Ok(n)
            }
            None => {
                self.over = true;
                Err(io::Error::other("the layer is larger than allowed"))
            }
        }
    }
}

/// Unpacks the layer `archive` into the empty directory `root` within `limits`.
pub fn unpack<R: Read>(archive: R, root: &Path, limits: &Limits) -> Result<Unpacked, ImageError> {
    unpack_with(archive, root, limits, true)
}

/// Unpacks `archive`, a plain tar (a build context: `.wh.` names are files like any other),
/// into the empty directory `root` within `limits`, as hardened as a layer.
pub fn unpack_plain<R: Read>(
    archive: R,
    root: &Path,
    limits: &Limits,
) -> Result<Unpacked, ImageError> {
    unpack_with(archive, root, limits, false)
}

fn unpack_with<R: Read>(
    archive: R,
    root: &Path,
    limits: &Limits,
    whiteouts: bool,
) -> Result<Unpacked, ImageError> {
    let root_fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os(root, "open the unpack directory", e))?;
    let mut capped = Capped { inner: archive, left: limits.max_bytes, over: false };
    let result = unpack_from(&mut capped, &root_fd, limits, whiteouts);
    if capped.over {
        return Err(bad(format!(
            "the layer unpacks to more than {} bytes (limit)",
            limits.max_bytes
        )));
    }
    result
}

fn unpack_from<R: Read>(
    archive: R,
    root: &OwnedFd,
    limits: &Limits,
    whiteouts: bool,
) -> Result<Unpacked, ImageError> {
    let mut ar = tar::Archive::new(archive);
    let mut done = Unpacked { members: 0, skipped_devices: 0 };
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    for entry in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut e = entry.map_err(|e| bad(format!("member {}: {e}", done.members)))?;
        done.members += 1;
        if done.members > limits.max_members {
            return Err(bad(format!(
                "the layer has more than {} members (limit)",
                limits.max_members
            )));
        }
        let member = e.path().map_err(|er| bad(er.to_string()))?.into_owned();
        let h = e.header().clone();
        let kind = h.entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let path = names(&member)?;
        let Some((leaf, parents)) = path.split_last() else { continue };
        let leaf = *leaf;
        let leaf_str = leaf.to_string_lossy();
        let mode = Mode::from_raw_mode(h.mode().unwrap_or(0o644) & 0o7777);
        let uid = rfs::Uid::from_raw(id(h.uid().unwrap_or(0), "uid", &member)?);
        let gid = rfs::Gid::from_raw(id(h.gid().unwrap_or(0), "gid", &member)?);
        let mtime = h.mtime().unwrap_or(0);
        let parent = walk(root, parents, &member, true)?;
        let m = member.as_path();
        let fail = |what: &'static str| move |er: Errno| os(m, what, er);
        // Whiteouts first: they name a sibling, not themselves.
        if whiteouts && leaf_str == OPAQUE {
            rfs::fsetxattr(&parent, "trusted.overlay.opaque", b"y", rfs::XattrFlags::empty())
                .map_err(fail("mark the directory opaque"))?;
            continue;
        }
        if let Some(hidden) = leaf_str.strip_prefix(WHITEOUT_PREFIX).filter(|_| whiteouts) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(bad(format!("invalid whiteout {}", member.display())));
            }
            let hidden = &leaf.as_bytes()[WHITEOUT_PREFIX.len()..];
            let hidden = OsStr::from_bytes(hidden);
            remove_existing(&parent, hidden).map_err(fail("remove what the whiteout hides"))?;
            rfs::mknodat(&parent, hidden, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(fail("make a whiteout"))?;
            continue;
        }
        match kind {
            tar::EntryType::Directory => {
                let keep = matches!(
                    rfs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW),
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory
                );
                if !keep {
                    remove_existing(&parent, leaf).map_err(fail("replace"))?;
                    rfs::mkdirat(&parent, leaf, Mode::from_raw_mode(0o700))
                        .map_err(fail("make the directory"))?;
                }
                let d = open_dir(&parent, leaf).map_err(fail("open the directory"))?;
                rfs::fchown(&d, Some(uid), Some(gid)).map_err(fail("set the owner"))?;
                dirs.push((path.iter().collect(), mode.bits(), mtime));
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&parent, leaf).map_err(fail("replace"))?;
                let fd = rfs::openat2(
                    &parent,
                    leaf,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                    RESOLVE,
                )
                .map_err(fail("create"))?;
                let mut f = std::fs::File::from(fd);
                io::copy(&mut e, &mut f).map_err(|er| {
                    bad(format!("{}: truncated or unreadable: {er}", member.display()))
                })?;
                // Owner before mode: chown clears the set-id bits.
                rfs::fchown(&f, Some(uid), Some(gid)).map_err(fail("set the owner"))?;
                rfs::fchmod(&f, mode).map_err(fail("set the mode"))?;
                rfs::futimens(&f, &times(mtime)).map_err(fail("set the time"))?;
                continue;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(|er| bad(er.to_string()))?
                    .ok_or_else(|| bad(format!("{}: symlink without target", member.display())))?;
                remove_existing(&parent, leaf).map_err(fail("replace"))?;
                // The target is stored as is and never followed here; at run time it resolves
                // inside the container's root.
                rfs::symlinkat(&*target, &parent, leaf).map_err(fail("make the symlink"))?;
            }
            tar::EntryType::Link => {
                let target = e.link_name().map_err(|er| bad(er.to_string()))?.ok_or_else(|| {
                    bad(format!("{}: hard link without target", member.display()))
                })?;
                let tpath = names(&target)?;
                let Some((tleaf, tparents)) = tpath.split_last() else {
                    return Err(bad(format!("{}: hard link to the root", member.display())));
                };
                let tdir = walk(root, tparents, &target, false)?;
                remove_existing(&parent, leaf).map_err(fail("replace"))?;
                // Without AT_SYMLINK_FOLLOW a symlink target is linked itself, never followed.
                rfs::linkat(&tdir, *tleaf, &parent, leaf, AtFlags::empty())
                    .map_err(fail("make the hard link"))?;
                // The link is its target's inode, which has its owner, mode and time already
                // (a chown here would clear the target's set-id bits).
                continue;
            }
            tar::EntryType::Fifo => {
                remove_existing(&parent, leaf).map_err(fail("replace"))?;
                rfs::mknodat(&parent, leaf, FileType::Fifo, mode, 0)
                    .map_err(fail("make the fifo"))?;
                // mknod's mode passed through the umask: owner, then the mode, through a
                // handle on the new node itself.
                let node = rfs::openat(
                    &parent,
                    leaf,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(fail("open the fifo"))?;
                rfs::chownat(&node, "", Some(uid), Some(gid), AtFlags::EMPTY_PATH)
                    .map_err(fail("set the owner"))?;
                let proc_path = format!("/proc/self/fd/{}", node.as_raw_fd());
                rfs::chmod(proc_path.as_str(), mode).map_err(fail("set the mode"))?;
                rfs::utimensat(&parent, leaf, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(fail("set the time"))?;
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                done.skipped_devices += 1;
                continue;
            }
            other => {
                return Err(bad(format!("{}: unsupported member type {other:?}", member.display())))
            }
        }
        // Symlinks: owner and time by name, never through the link.
        rfs::chownat(&parent, leaf, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(fail("set the owner"))?;
        rfs::utimensat(&parent, leaf, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(fail("set the time"))?;
    }
    // Directory modes and times last: members created inside change a directory's time. A
    // directory named twice takes its last header's; one that a later member replaced or
    // whited out is gone.
    let mut seen = std::collections::HashSet::new();
    for (d, mode, mtime) in dirs.into_iter().rev() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let path = names(&d)?;
        // Not reachable as a directory any more (replaced, removed, or under a link now):
        // nothing of it to set, and nothing is ever followed to find it.
        let Ok(fd) = walk(root, &path, &d, false) else { continue };
        rfs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| os(&d, "set the mode", e))?;
        rfs::futimens(&fd, &times(mtime)).map_err(|e| os(&d, "set the time", e))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    fn member(b: &mut Vec<u8>, path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) {
        let mode = if kind.is_dir() { 0o755 } else { 0o644 };
        member_owned(b, path, kind, data, link, (mode, 0, 0));
    }

    /// A member with its mode, uid and gid.
    fn member_owned(
        b: &mut Vec<u8>,
        path: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
        (mode, uid, gid): (u32, u64, u64),
    ) {
        let mut h = tar::Header::new_gnu();
        let bytes = h.as_mut_bytes();
        bytes[..100].fill(0);
        bytes[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            bytes[157..157 + l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
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
    fn a_plain_tar_keeps_whiteout_names_as_files() {
        use tar::EntryType as T;
        let mut b = Vec::new();
        member(&mut b, "ctx/.wh.notes", T::Regular, b"mine\n", None);
        member(&mut b, "ctx/.wh..wh..opq", T::Regular, b"", None);
        let dir = tempfile::tempdir().unwrap();
        unpack_plain(&finish(b)[..], dir.path(), &Limits::default()).unwrap();
        assert_eq!(fs::read(dir.path().join("ctx/.wh.notes")).unwrap(), b"mine\n");
        assert!(dir.path().join("ctx/.wh..wh..opq").is_file());
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
        assert_eq!(unpack(&finish(b)[..], dir.path(), &Limits::default()).unwrap().members, 6);
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
        let mut v = [0u8; 4];
        let n = rfs::lgetxattr(r.join("var/cache"), "trusted.overlay.opaque", &mut v).unwrap();
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
            let e = unpack(&finish(c)[..], dir.path(), &Limits::default()).unwrap_err();
            assert!(matches!(e, ImageError::BadTar(_)), "case {i}: {e}");
        }
        assert!(!Path::new("/tmp/escaped").exists());
    }

    #[test]
    fn owners_modes_devices_and_fifos() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        use tar::EntryType as T;
        let mut b = Vec::new();
        member_owned(&mut b, "bin/su", T::Regular, b"\x7fELF", None, (0o4755, 0, 0));
        member_owned(&mut b, "home/u/", T::Directory, b"", None, (0o700, 1000, 1001));
        member_owned(&mut b, "home/u/f", T::Regular, b"x", None, (0o2640, 1000, 50));
        member_owned(&mut b, "dev/sda", T::Block, b"", None, (0o660, 0, 6));
        member_owned(&mut b, "dev/mem", T::Char, b"", None, (0o640, 0, 15));
        member_owned(&mut b, "run/fifo", T::Fifo, b"", None, (0o666, 7, 7));
        member_owned(&mut b, "l", T::Symlink, b"", Some("/etc/shadow"), (0o777, 3, 4));
        member_owned(&mut b, "bin/su2", T::Link, b"", Some("bin/su"), (0o644, 5, 5));
        // A directory named twice takes its last header's mode; one replaced later is gone.
        member_owned(&mut b, "twice/", T::Directory, b"", None, (0o755, 0, 0));
        member_owned(&mut b, "twice/", T::Directory, b"", None, (0o710, 0, 0));
        member_owned(&mut b, "gone/", T::Directory, b"", None, (0o755, 0, 0));
        member_owned(&mut b, "gone", T::Regular, b"now a file", None, (0o644, 0, 0));
        let dir = tempfile::tempdir().unwrap();
        let done = unpack(&finish(b)[..], dir.path(), &Limits::default()).unwrap();
        assert_eq!(done, Unpacked { members: 12, skipped_devices: 2 });
        let r = dir.path();
        let m = |p: &str| std::fs::symlink_metadata(r.join(p)).unwrap();
        // The set-id bits survive the chown, which would have cleared them.
        assert_eq!((m("bin/su").mode() & 0o7777, m("bin/su").uid()), (0o4755, 0));
        assert_eq!(
            (m("home/u").mode() & 0o7777, m("home/u").uid(), m("home/u").gid()),
            (0o700, 1000, 1001)
        );
        assert_eq!((m("home/u/f").mode() & 0o7777, m("home/u/f").gid()), (0o2640, 50));
        assert!(!r.join("dev/sda").exists() && !r.join("dev/mem").exists(), "no device node made");
        assert!(m("run/fifo").file_type().is_fifo());
        // The fifo's mode is the header's, whatever the umask.
        assert_eq!(m("run/fifo").mode() & 0o7777, 0o666);
        assert_eq!((m("run/fifo").uid(), m("l").uid(), m("l").gid()), (7, 3, 4));
        // A hard link is its target: the set-id bit and owner stay the target's.
        assert_eq!(m("bin/su2").ino(), m("bin/su").ino());
        assert_eq!((m("bin/su").mode() & 0o7777, m("bin/su").uid()), (0o4755, 0));
        assert_eq!(m("twice").mode() & 0o7777, 0o710);
        assert!(m("gone").is_file());
        assert_eq!(m("l").mtime(), 1_000_000, "the link's own time, not its target's");
    }

    #[test]
    fn links_are_never_followed() {
        use tar::EntryType as T;
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"host file").unwrap();
        let v = victim.to_str().unwrap();
        let cases: Vec<Vec<u8>> = vec![
            {
                // A file written "through" a symlinked directory deep in the path.
                let mut b = Vec::new();
                member(&mut b, "a/b/", T::Directory, b"", None);
                member(&mut b, "a/b/c", T::Symlink, b"", Some(outside.path().to_str().unwrap()));
                member(&mut b, "a/b/c/victim", T::Regular, b"pwned", None);
                b
            },
            {
                // A whiteout through a symlink would delete a host file.
                let mut b = Vec::new();
                member(&mut b, "d", T::Symlink, b"", Some(outside.path().to_str().unwrap()));
                member(&mut b, "d/.wh.victim", T::Regular, b"", None);
                b
            },
            {
                // An opaque marker through a symlink would set an xattr on a host directory.
                let mut b = Vec::new();
                member(&mut b, "d", T::Symlink, b"", Some(outside.path().to_str().unwrap()));
                member(&mut b, "d/.wh..wh..opq", T::Regular, b"", None);
                b
            },
            {
                // A hard link whose target path goes through a symlink.
                let mut b = Vec::new();
                member(&mut b, "d", T::Symlink, b"", Some(outside.path().to_str().unwrap()));
                member(&mut b, "h", T::Link, b"", Some("d/victim"));
                b
            },
        ];
        for (i, c) in cases.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let e = unpack(&finish(c)[..], dir.path(), &Limits::default()).unwrap_err();
            assert!(matches!(e, ImageError::BadTar(_)), "case {i}: {e}");
            assert!(e.to_string().contains("goes through the link"), "case {i}: {e}");
            assert_eq!(std::fs::read(&victim).unwrap(), b"host file", "case {i}");
            assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1, "case {i}");
        }
        // A hard link to a symlink links the symlink itself; a regular file then written over
        // the symlink's name replaces it rather than writing through it.
        let mut b = Vec::new();
        member(&mut b, "s", T::Symlink, b"", Some(v));
        member(&mut b, "h", T::Link, b"", Some("s"));
        member(&mut b, "s", T::Regular, b"inside", None);
        let dir = tempfile::tempdir().unwrap();
        unpack(&finish(b)[..], dir.path(), &Limits::default()).unwrap();
        assert_eq!(std::fs::read_link(dir.path().join("h")).unwrap(), victim);
        assert_eq!(std::fs::read(dir.path().join("s")).unwrap(), b"inside");
        assert_eq!(std::fs::read(&victim).unwrap(), b"host file");
        let _ = v;
    }

    #[test]
    fn limits_follow_the_free_space_and_inodes() {
        let d = Limits::default();
        let l = Limits::for_space(None, None);
        assert_eq!((l.max_bytes, l.max_members), (d.max_bytes, d.max_members));
        // 1 GiB free: half of it, and as many members as half of it holds at a block each.
        let l = Limits::for_space(Some(1 << 30), None);
        assert_eq!((l.max_bytes, l.max_members), (512 << 20, (512 << 20) / 4096));
        let l = Limits::for_space(Some(1 << 40), Some(1000));
        assert_eq!((l.max_bytes, l.max_members), (d.max_bytes, 500));
    }

    #[test]
    fn bombs_and_oversized_layers_are_refused() {
        use std::io::Write as _;
        use tar::EntryType as T;
        // 64 MiB of zeros compress to ~64 KiB; the cap stops the stream at 8 MiB.
        let mut b = Vec::new();
        let mut h = tar::Header::new_gnu();
        h.set_path("zeros").unwrap();
        h.set_size(64 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(h.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        gz.write_all(&[0u8; 1024]).unwrap();
        b.extend(gz.finish().unwrap());
        assert!(b.len() < 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { max_bytes: 8 << 20, max_members: 100 };
        let e = unpack(flate2::read::GzDecoder::new(&b[..]), dir.path(), &limits).unwrap_err();
        assert!(e.to_string().contains("more than 8388608 bytes"), "{e}");

        // Too many members.
        let mut b = Vec::new();
        for i in 0..5 {
            member(&mut b, &format!("f{i}"), T::Regular, b"", None);
        }
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { max_bytes: 1 << 20, max_members: 4 };
        let e = unpack(&finish(b)[..], dir.path(), &limits).unwrap_err();
        assert!(e.to_string().contains("more than 4 members"), "{e}");

        // A path no program could open by name.
        let mut b = Vec::new();
        let mut h = tar::Header::new_gnu();
        let long = "d/".repeat(2100) + "f";
        h.set_size(0);
        h.set_mode(0o644);
        let mut ar = tar::Builder::new(&mut b);
        ar.append_data(&mut h, &long, &[][..]).unwrap();
        ar.finish().unwrap();
        drop(ar);
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(&b[..], dir.path(), &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
    }

    /// A process racing the unpack swaps a directory it is filling for a symlink to a host
    /// directory, again and again: nothing may land outside.
    #[test]
    fn racing_symlink_swaps_never_escape() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tar::EntryType as T;
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut b = Vec::new();
        member(&mut b, "a/", T::Directory, b"", None);
        for i in 0..3000 {
            member(&mut b, &format!("a/f{i}"), T::Regular, b"data", None);
        }
        let b = finish(b);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let racer = {
            let (a, moved, target) =
                (dir.path().join("a"), dir.path().join("a.real"), outside.path().to_path_buf());
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut swaps = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if std::fs::rename(&a, &moved).is_ok() {
                        if std::os::unix::fs::symlink(&target, &a).is_ok() {
                            swaps += 1;
                            std::thread::yield_now();
                            let _ = std::fs::remove_file(&a);
                        }
                        let _ = std::fs::rename(&moved, &a);
                    }
                    std::thread::yield_now();
                }
                swaps
            })
        };
        let mut failures = 0;
        for _ in 0..5 {
            let _ = std::fs::remove_dir_all(dir.path().join("a"));
            if let Err(e) = unpack(&b[..], dir.path(), &Limits::default()) {
                assert!(matches!(e, ImageError::BadTar(_) | ImageError::Io { .. }), "{e}");
                failures += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = racer.join().unwrap();
        assert!(swaps > 0, "the racer never swapped");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "{failures} failures");
    }
}
