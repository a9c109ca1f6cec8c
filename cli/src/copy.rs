//! `ironpod cp`: files between the host and a container (running or stopped), as `docker cp`
//! copies them: `CONTAINER:SRC DEST` and `SRC CONTAINER:DEST`, `-` for a tar stream on
//! stdin or stdout, a directory's content with `SRC/.`.
//!
//! What comes out of a container is hostile: its tar entries are checked (no `..`, no
//! absolute names) and nothing is ever written through a symbolic link on the host (each
//! directory on the way is checked not to be one).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Component, Path, PathBuf};

use ironpod_images::ImageStore;
use ironpod_pods::files::Files;

use crate::containers::{find, rt};
use crate::Failure;

/// Arguments of `ironpod cp`.
#[derive(clap::Args, Debug)]
pub struct CpArgs {
    /// Own what is copied into the container by the container's user (`--archive`).
    #[arg(short, long)]
    archive: bool,
    /// Always follow a symbolic link in SRC_PATH (copy what it points to, under its name).
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// CONTAINER:SRC_PATH, a host path, or - (a tar on stdin).
    src: String,
    /// CONTAINER:DEST_PATH, a host path, or - (a tar on stdout).
    dest: String,
}

/// `CONTAINER:PATH` split, or `None` for a host path (one with a `/` before any `:`).
fn container_path(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (c, p) = arg.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

/// `ironpod cp`.
pub fn cp(root: &Path, a: CpArgs) -> Result<i32, Failure> {
    match (container_path(&a.src), container_path(&a.dest)) {
        (Some(_), Some(_)) => Err(usage("copying between containers is not supported")),
        (None, None) => Err(usage("one of SRC and DEST must be CONTAINER:PATH")),
        (Some((c, p)), None) => copy_out(root, c, &absolute(p), &a.dest, a.follow_link),
        (None, Some((c, p))) => copy_in(root, &a.src, c, &absolute(p), a.archive, a.follow_link),
    }
}

/// A container path as Docker takes it: relative to the container's root.
fn absolute(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

fn open_files(root: &Path, container: &str) -> Result<Files, Failure> {
    let r = find(root, container)?;
    let store = ImageStore::open(root).map_err(rt)?;
    Files::open(root, &store, &r).map_err(rt)
}

fn is_dir_mode(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

/// The last component of a host or container path, as Docker's `filepath.Base`.
fn base(p: &str) -> String {
    ironpod_protocol::copy_base(p)
}

/// With `-L`, what a container path that is a symbolic link points to (one level, as
/// Docker resolves it: a relative target is taken from the link's directory); else the path.
fn followed(files: &Files, src: &str, follow: bool) -> Result<String, Failure> {
    if !follow {
        return Ok(src.to_string());
    }
    let stat = files.stat(src).map_err(rt)?;
    if stat.mode & libc::S_IFMT != libc::S_IFLNK {
        return Ok(src.to_string());
    }
    let target = &stat.link_target;
    let joined = if target.starts_with('/') {
        target.clone()
    } else {
        format!("{}/{target}", container_parent(src).trim_end_matches('/'))
    };
    Ok(clean(&joined))
}

/// A container path cleaned lexically as Go's `filepath.Clean` (`..` stops at the root).
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn copy_out(
    root: &Path,
    container: &str,
    src: &str,
    dest: &str,
    follow: bool,
) -> Result<i32, Failure> {
    let files = open_files(root, container)?;
    // Named as the link is named, whatever it points to.
    let link_name = base(src);
    let src = &followed(&files, src, follow)?;
    let stat = files.stat(src).map_err(rt)?;
    let mut tar = files.read_archive(src).map_err(rt)?;
    if dest == "-" {
        io::copy(&mut tar, &mut io::stdout().lock()).map_err(|e| rt(format!("stdout: {e}")))?;
        return Ok(0);
    }
    let src_dir = is_dir_mode(stat.mode);
    let contents = src.ends_with("/.");
    let dest_path = Path::new(dest);
    // (dir to extract into, what the archive's top entry becomes there: None keeps it,
    // Some("") drops it — a directory's content —, Some(name) renames it)
    let (into, rename): (PathBuf, Option<String>) = match fs::metadata(dest_path) {
        Ok(m) if m.is_dir() => {
            let rename = if contents {
                Some(String::new())
            } else {
                (link_name != base(src)).then(|| link_name.clone())
            };
            (dest_path.to_path_buf(), rename)
        }
        Ok(_) if src_dir => {
            return Err(rt(format!("cannot copy a directory to a file: {dest}")));
        }
        Ok(_) => (parent_of(dest_path), Some(base(dest))),
        Err(_) if dest.ends_with('/') && !src_dir => {
            return Err(rt(format!("destination directory {dest} does not exist")));
        }
        Err(_) => {
            let parent = parent_of(dest_path);
            if !parent.is_dir() {
                return Err(rt(format!(
                    "destination directory {} does not exist",
                    parent.display()
                )));
            }
            (parent, Some(base(dest)))
        }
    };
    // What the agent names the copy's top entry (`.` for a directory's content or `/`).
    let top = if contents || base(src) == "/" { ".".to_string() } else { base(src) };
    extract_on_host(&mut tar, &into, &top, rename.as_deref())
        .map_err(|e| rt(format!("{dest}: {e}")))?;
    Ok(0)
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// An entry's path with its top component replaced as `rename` says; checked to stay
/// below the extraction point and to start with `top`, the name of what was copied (a
/// container choosing other names would write elsewhere in the destination).
fn rebased(name: &Path, top: &str, rename: Option<&str>) -> io::Result<Option<PathBuf>> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_os_string()),
            Component::CurDir if parts.is_empty() => parts.push(".".into()),
            Component::CurDir => {}
            _ => return Err(bad(format!("tar entry {} leaves its directory", name.display()))),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    if parts[0] != top {
        return Err(bad(format!("tar entry {} is not under {top}", name.display())));
    }
    let mut out = PathBuf::new();
    match rename {
        None if parts[0] == "." => {}
        None => out.push(&parts[0]),
        Some(r) => out.push(r),
    }
    for p in &parts[1..] {
        out.push(p);
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Makes sure no directory between `into` and `rel`'s parent is a symbolic link (making
/// missing ones), so that nothing is written through one.
fn safe_parent(into: &Path, rel: &Path) -> io::Result<()> {
    let mut at = into.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(bad(format!("{} is a symbolic link", at.display())));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(bad(format!("{} is not a directory", at.display()))),
                Err(_) => fs::create_dir(&at)?,
            }
        }
    }
    Ok(())
}

fn extract_on_host(
    tar: &mut impl Read,
    into: &Path,
    top: &str,
    rename: Option<&str>,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(tar);
    // What this copy made: the only files a hard link may point at.
    let mut made = std::collections::HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        let Some(rel) = rebased(&name, top, rename)? else { continue };
        let kind = entry.header().entry_type();
        if !matches!(
            kind,
            tar::EntryType::Regular
                | tar::EntryType::Directory
                | tar::EntryType::Symlink
                | tar::EntryType::Link
                | tar::EntryType::Fifo
        ) {
            continue; // devices and the like are not made on the host
        }
        if kind == tar::EntryType::Link {
            // A hard link's target must be something this copy made.
            let target = entry.link_name()?.unwrap_or_default().into_owned();
            let target =
                rebased(&target, top, rename)?.ok_or_else(|| bad("bad hard link".into()))?;
            if !made.contains(&target) {
                return Err(bad(format!(
                    "hard link {} to a file this copy did not make",
                    rel.display()
                )));
            }
            safe_parent(into, &target)?;
            safe_parent(into, &rel)?;
            let dst = into.join(&rel);
            let _ = fs::remove_file(&dst);
            fs::hard_link(into.join(target), dst)?;
            continue;
        }
        safe_parent(into, &rel)?;
        let dst = into.join(&rel);
        if let Ok(m) = fs::symlink_metadata(&dst) {
            // Replaced, never written through: a link or file in the way goes first.
            if !(m.is_dir() && kind == tar::EntryType::Directory) {
                if m.is_dir() {
                    fs::remove_dir_all(&dst)?;
                } else {
                    fs::remove_file(&dst)?;
                }
            }
        }
        entry.set_preserve_mtime(true);
        entry.unpack(&dst)?;
        made.insert(rel);
    }
    Ok(())
}

/// A pipe (read end, write end).
fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds is valid for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these descriptors; nothing else owns them.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Writes a tar of host path `src` named `name` (a directory's content for `.`).
fn write_host_tar(src: &Path, name: &str, out: impl Write) -> io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let meta = fs::symlink_metadata(src)?;
    if meta.is_dir() {
        b.append_dir_all(name, src)?;
    } else {
        b.append_path_with_name(src, name)?;
    }
    b.into_inner()?.flush()
}

fn copy_in(
    root: &Path,
    src: &str,
    container: &str,
    dest: &str,
    archive: bool,
    follow: bool,
) -> Result<i32, Failure> {
    let files = open_files(root, container)?;
    let put = |dir: &str, tar: &mut dyn Read| {
        files.write_archive(dir, &mut ReadDyn(tar), true, archive).map_err(rt)
    };
    if src == "-" {
        let stat = files.stat(dest).map_err(rt)?;
        if !is_dir_mode(stat.mode) {
            return Err(rt(format!("destination {container}:{dest} must be a directory")));
        }
        put(dest, &mut io::stdin().lock())?;
        return Ok(0);
    }
    // With -L a link is copied as what it points to, under the link's name.
    let src_path = if follow {
        fs::canonicalize(src).map_err(|e| rt(format!("{src}: {e}")))?
    } else {
        PathBuf::from(src)
    };
    let src_meta = fs::symlink_metadata(&src_path).map_err(|e| rt(format!("{src}: {e}")))?;
    let contents = src.ends_with("/.");
    let (dir, name) = match files.stat(dest) {
        Ok(s) if is_dir_mode(s.mode) => {
            (dest.to_string(), if contents { ".".to_string() } else { base(src) })
        }
        Ok(_) if src_meta.is_dir() => {
            return Err(rt(format!("cannot copy a directory to a file: {container}:{dest}")));
        }
        Ok(_) => (container_parent(dest), base(dest)),
        Err(_) if dest.ends_with('/') && !src_meta.is_dir() => {
            return Err(rt(format!("destination directory {container}:{dest} does not exist")));
        }
        Err(_) => (container_parent(dest), base(dest)),
    };
    let (mut r, w) = pipe().map_err(|e| rt(format!("pipe: {e}")))?;
    let (from, as_name) = (src_path, name);
    let writer = std::thread::spawn(move || write_host_tar(&from, &as_name, w));
    let result = put(&dir, &mut r);
    drop(r);
    let written = writer.join().unwrap_or_else(|_| Err(io::Error::other("tar thread panicked")));
    result?;
    written.map_err(|e| rt(format!("{src}: {e}")))?;
    Ok(0)
}

fn container_parent(p: &str) -> String {
    match Path::new(p.trim_end_matches('/')).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_string_lossy().into_owned(),
        _ => "/".into(),
    }
}

/// A `&mut dyn Read` as a sized reader.
struct ReadDyn<'a>(&'a mut dyn Read);

impl Read for ReadDyn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followed_links_are_cleaned_as_go_cleans_them() {
        assert_eq!(clean("/usr/bin/../lib/x"), "/usr/lib/x");
        assert_eq!(clean("/a/./b//c"), "/a/b/c");
        assert_eq!(clean("/../../etc"), "/etc");
        assert_eq!(clean("/"), "/");
    }

    #[test]
    fn arguments_name_a_container_or_a_host_path() {
        assert_eq!(container_path("web:/etc"), Some(("web", "/etc")));
        assert_eq!(container_path("web:etc"), Some(("web", "etc")));
        assert_eq!(container_path("/tmp/a:b"), None);
        assert_eq!(container_path("./a:b"), None);
        assert_eq!(container_path("plain"), None);
        assert_eq!(
            (base("/a/b/"), base("/a/b/."), base("x")),
            ("b".into(), ".".into(), "x".into())
        );
        assert_eq!((container_parent("/a/b"), container_parent("/a")), ("/a".into(), "/".into()));
    }

    #[test]
    fn entries_are_rebased_and_checked() {
        let r = |n: &str, top: &str, to: Option<&str>| rebased(Path::new(n), top, to).unwrap();
        assert_eq!(r("data/a", "data", None), Some(PathBuf::from("data/a")));
        assert_eq!(r("data/a", "data", Some("out")), Some(PathBuf::from("out/a")));
        assert_eq!(r("./a", ".", Some("")), Some(PathBuf::from("a")));
        assert_eq!(r("./", ".", Some("")), None);
        assert_eq!(r("./a", ".", None), Some(PathBuf::from("a")));
        assert!(rebased(Path::new("../x"), "..", None).is_err());
        assert!(rebased(Path::new("a/../../x"), "a", None).is_err());
        // A container naming other things than what was asked for.
        assert!(rebased(Path::new("cron.d/x"), "nginx", None).is_err());
    }

    #[test]
    fn nothing_is_written_through_a_link_on_the_host() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "d/link", outside.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "d/link/x", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let e = extract_on_host(&mut &tar[..], t.path(), "d", None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!outside.path().join("x").exists());
        assert!(t.path().join("d/link").is_symlink());
    }
}
