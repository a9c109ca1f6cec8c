//! The build context: a directory on the host (the CLI's, or the service's unpacked upload)
//! and its `.dockerignore`. COPY and ADD sources name entries in it; nothing outside it is
//! ever read, and nothing of it is mounted into a guest.

use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::BuildError;
use crate::glob;
use crate::ignore::DockerIgnore;
use crate::imagefs::clean;

/// A build context.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    ignore: DockerIgnore,
}

/// An entry a source names.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its path relative to the context root (`""`: the root itself).
    pub rel: String,
    /// Its path on the host (links of the named path followed, inside the context).
    pub path: PathBuf,
    /// `path` relative to the context root: what the `.dockerignore` is asked about.
    pub resolved: String,
    /// Whether it is a directory (whose contents are what is copied).
    pub is_dir: bool,
}

/// One entry met walking a source: its path below the source (`""` for a file source
/// itself), its host path and metadata (links not followed).
pub struct Entry<'a> {
    /// Path below the source, `/`-separated.
    pub sub: &'a str,
    /// Host path.
    pub path: &'a Path,
    /// Metadata (of a link, not its target).
    pub meta: &'a Metadata,
}

impl Context {
    /// The context at `root`, with its `.dockerignore` if it has one.
    pub fn open(root: &Path) -> Result<Self, BuildError> {
        let root = fs::canonicalize(root)
            .map_err(BuildError::io(format!("build context {}", root.display())))?;
        if !root.is_dir() {
            return Err(BuildError::io(format!("build context {}", root.display()))(
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let ignore = match read_small(&root, ".dockerignore") {
            Ok(text) => DockerIgnore::parse(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
            Err(e) => return Err(BuildError::io(".dockerignore")(e)),
        };
        Ok(Context { root, ignore })
    }

    /// The context's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The entries one (expanded) COPY/ADD source names, in a stable order; why not, in
    /// Docker's words.
    pub fn sources(&self, src: &str) -> Result<Vec<Source>, String> {
        let rel = clean(src);
        if escapes(src) {
            return Err(format!("forbidden path outside the build context: {src} ()"));
        }
        let missing = || {
            format!(
                "file not found in build context or excluded by .dockerignore: stat {src}: file does not exist"
            )
        };
        if glob::is_glob(&rel) {
            let mut names = Vec::new();
            let root = self.root.clone();
            self.walk_all(&root, "", &mut |sub, _, _| {
                let hit = glob::matches(&rel, sub)
                    .map_err(|e| BuildError::io(src.to_string())(std::io::Error::other(e)))?;
                if hit {
                    names.push(sub.to_string());
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            if names.is_empty() {
                return Err(format!("no source files were specified (nothing matches {src})"));
            }
            // A match that is a link is followed as a named source is: inside the context.
            return names.into_iter().map(|n| self.named(n).ok_or_else(missing)).collect();
        }
        if !rel.is_empty() && self.ignore.excludes(&rel) {
            return Err(missing());
        }
        Ok(vec![self.named(rel).ok_or_else(missing)?])
    }

    /// The entry `rel` names, its links followed inside the context; `None` when it is
    /// missing, left out by the `.dockerignore` (as resolved), or not a file or directory.
    fn named(&self, rel: String) -> Option<Source> {
        let path = resolve_in(&self.root, &rel)?;
        let resolved = path.strip_prefix(&self.root).ok()?.to_string_lossy().into_owned();
        if !resolved.is_empty() && self.ignore.excludes(&resolved) {
            return None;
        }
        let meta = fs::symlink_metadata(&path).ok()?;
        if !(meta.is_file() || meta.is_dir()) {
            return None;
        }
        Some(Source { rel, path, resolved, is_dir: meta.is_dir() })
    }

    /// Calls `f` for a source and, for a directory, everything below it that the
    /// `.dockerignore` keeps, parents before children, names in byte order.
    pub fn walk(
        &self,
        source: &Source,
        f: &mut dyn FnMut(Entry<'_>) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        if !source.is_dir {
            // A named file (its links were followed when it was named: no more following).
            let meta =
                fs::symlink_metadata(&source.path).map_err(BuildError::io(source.rel.clone()))?;
            if !meta.is_file() {
                return Err(BuildError::io(source.rel.clone())(std::io::Error::other(
                    "not a regular file",
                )));
            }
            return f(Entry { sub: "", path: &source.path, meta: &meta });
        }
        let skip = if source.resolved.is_empty() { 0 } else { source.resolved.len() + 1 };
        self.walk_all(&source.path, &source.resolved, &mut |rel, path, meta| {
            f(Entry { sub: &rel[skip..], path, meta })
        })
    }

    /// Walks below `dir` (context-relative `rel`), skipping what the `.dockerignore`
    /// leaves out.
    fn walk_all(
        &self,
        dir: &Path,
        rel: &str,
        f: &mut dyn FnMut(&str, &Path, &Metadata) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(BuildError::io(format!("{}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let Some(name) = name.to_str() else {
                return Err(BuildError::io(format!("{}", dir.display()))(std::io::Error::other(
                    "a file name that is not UTF-8",
                )));
            };
            let sub = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            let path = dir.join(name);
            let meta = fs::symlink_metadata(&path).map_err(BuildError::io(sub.clone()))?;
            let excluded = self.ignore.excludes(&sub);
            if !excluded {
                f(&sub, &path, &meta)?;
            }
            if meta.is_dir() && !(excluded && self.ignore.can_skip_dir(&sub)) {
                self.walk_all(&path, &sub, f)?;
            }
        }
        Ok(())
    }

    /// A digest of what `sources` would copy (names, kinds, modes, sizes, contents, link
    /// targets; not times): the cache key part of COPY and ADD.
    pub fn digest(&self, sources: &[Source]) -> Result<String, BuildError> {
        let mut h = Sha256::new();
        for s in sources {
            h.update(s.rel.as_bytes());
            h.update([0]);
            self.walk(s, &mut |e| {
                h.update(e.sub.as_bytes());
                h.update([0]);
                h.update(e.meta.permissions().mode().to_le_bytes());
                h.update(e.meta.size().to_le_bytes());
                if e.meta.file_type().is_symlink() {
                    let t = fs::read_link(e.path).map_err(BuildError::io(e.sub.to_string()))?;
                    h.update(t.as_os_str().as_encoded_bytes());
                } else if e.meta.is_file() {
                    let mut file =
                        fs::File::open(e.path).map_err(BuildError::io(e.sub.to_string()))?;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = file.read(&mut buf).map_err(BuildError::io(e.sub.to_string()))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                    }
                }
                h.update([1]);
                Ok(())
            })?;
        }
        Ok(format!("{:x}", h.finalize()))
    }
}

/// The most a Dockerfile or `.dockerignore` may hold.
pub const MAX_SMALL_FILE: u64 = 4 << 20;

/// Opens a regular file without following a link at its last component, and without
/// blocking on a FIFO.
pub fn open_nofollow(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// Reads `rel` under `root` (links followed inside `root`): a regular file of at most
/// [`MAX_SMALL_FILE`] bytes (a Dockerfile, a `.dockerignore`).
pub fn read_small(root: &Path, rel: &str) -> std::io::Result<String> {
    let path = resolve_in(root, rel).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{rel}: not found"))
    })?;
    read_small_file(&path)
}

/// Reads a regular file of at most [`MAX_SMALL_FILE`] bytes.
pub fn read_small_file(path: &Path) -> std::io::Result<String> {
    let f = match open_nofollow(path) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            // A link here is the user's own (`-f`): followed, still a regular file.
            let f = fs::File::open(path)?;
            if !f.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            f
        }
        other => other?,
    };
    let mut text = String::new();
    f.take(MAX_SMALL_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SMALL_FILE {
        return Err(std::io::Error::other(format!("larger than {MAX_SMALL_FILE} bytes")));
    }
    Ok(text)
}

/// Whether a source climbs out of the context (`../x`, `a/../../x`).
fn escapes(src: &str) -> bool {
    let mut depth = 0i32;
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// `rel` under `root` with symbolic links followed but kept inside `root` (an absolute
/// target starts again at `root`; `..` stops there), as Docker scopes a source's links to
/// the context. `None` when a part is missing or links loop.
pub fn resolve_in(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> =
        rel.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        done.push(c);
        let here = root.join(done.join("/"));
        let meta = fs::symlink_metadata(&here).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = fs::read_link(&here).ok()?;
            let target = target.to_str()?.to_string();
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            for t in target.split('/').filter(|c| !c.is_empty() && *c != ".").rev() {
                pending.push(t.to_string());
            }
        }
    }
    Some(root.join(done.join("/")))
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
