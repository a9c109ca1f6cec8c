//! COPY and ADD make their layer on the host, running nothing: a tar of the sources laid
//! out at the destination as Docker's builder lays them out (a directory's contents go into
//! the destination; a file goes into it when it is, or ends like, a directory; several
//! sources need a directory), with missing parent directories, owners and modes. ADD
//! unpacks local tar archives (plain, gzip, zstd) into the destination.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::context::{Context, Source};
use crate::error::BuildError;
use crate::imagefs::{clean, ImageFs};

/// What a COPY or ADD copies.
pub enum Input<'a> {
    /// Entries of a context.
    Context {
        /// The context.
        context: &'a Context,
        /// The entries the sources named.
        sources: Vec<Source>,
    },
    /// Paths of another stage's or an image's files (`COPY --from`), with their owners.
    Image {
        /// The image's files.
        fs: &'a ImageFs,
        /// Opens its layers' tars, bottom first (where file contents are read).
        layers: &'a LayerOpener<'a>,
        /// The paths the sources named (see [`crate::copy_from::image_sources`]).
        paths: Vec<String>,
    },
    /// A here-document: a file named after its delimiter.
    HereDoc {
        /// The file's name.
        name: String,
        /// Its contents.
        body: String,
    },
}

/// Opens layer `i` of an image (decompressed).
pub type LayerOpener<'a> = dyn Fn(usize) -> Result<Box<dyn Read>, BuildError> + 'a;

/// How it copies.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// The destination (expanded), absolute or relative to `workdir`.
    pub dest: String,
    /// The working directory.
    pub workdir: String,
    /// `--chown` as ids (`None`: everything copied is 0:0).
    pub ids: Option<(u32, u32)>,
    /// `--chmod` (`None`: modes as in the context).
    pub chmod: Option<u32>,
    /// ADD: unpack local tar archives.
    pub unpack: bool,
    /// Times no later than this (seconds since the epoch), for reproducible layers.
    pub clamp_mtime: Option<u64>,
}

pub(crate) fn other(m: impl Into<String>) -> BuildError {
    BuildError::Io { what: "copy".into(), source: io::Error::other(m.into()) }
}

/// Parses `--chmod`: octal digits only (as Docker's classic builder).
pub fn parse_chmod(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o7777 && !s.is_empty() => Ok(m),
        _ => Err(format!("invalid chmod parameter {s:?}: it must be an octal mode")),
    }
}

pub(crate) struct Writer<'a> {
    tar: tar::Builder<File>,
    fs: &'a ImageFs,
    pub(crate) made: HashSet<String>,
    pub(crate) opts: &'a CopyOptions,
}

impl Writer<'_> {
    pub(crate) fn mtime(&self, t: i64) -> u64 {
        let t = t.max(0) as u64;
        self.opts.clamp_mtime.map_or(t, |c| t.min(c))
    }

    pub(crate) fn owner(&self, uid: u32, gid: u32) -> (u32, u32) {
        self.opts.ids.unwrap_or((uid, gid))
    }

    /// Adds missing parents of `path` (a layer path) as 0755 directories.
    pub(crate) fn parents(&mut self, path: &str) -> Result<(), BuildError> {
        let mut todo = Vec::new();
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if self.made.contains(parent) || self.fs.is_dir(parent) {
                break;
            }
            todo.push(parent.to_string());
            p = parent;
        }
        // Owned by `--chown`'s user when there is one, as Docker's and buildah's copiers
        // make them.
        let owner = self.owner(0, 0);
        for d in todo.into_iter().rev() {
            self.dir(&d, 0o755, owner, self.mtime(0))?;
        }
        Ok(())
    }

    /// A layer's `.wh.` names delete files of the layers below: a file of the context (or
    /// of an ADDed archive) named so is refused, not turned into a deletion.
    fn check_name(path: &str) -> Result<(), BuildError> {
        let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
        if name.starts_with(".wh.") {
            return Err(other(format!(
                "{path}: a name starting with .wh. marks a deleted file in an image layer; it cannot be copied"
            )));
        }
        Ok(())
    }

    fn header(
        &self,
        kind: tar::EntryType,
        mode: u32,
        (uid, gid): (u32, u32),
        mtime: u64,
    ) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(mtime);
        h.set_size(0);
        h
    }

    pub(crate) fn dir(
        &mut self,
        path: &str,
        mode: u32,
        owner: (u32, u32),
        mtime: u64,
    ) -> Result<(), BuildError> {
        Self::check_name(path)?;
        let mut h = self.header(tar::EntryType::Directory, mode, owner, mtime);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
            .map_err(BuildError::io(path.to_string()))?;
        self.made.insert(path.to_string());
        Ok(())
    }

    pub(crate) fn file(
        &mut self,
        path: &str,
        mode: u32,
        owner: (u32, u32),
        mtime: u64,
        size: u64,
        data: impl Read,
    ) -> Result<(), BuildError> {
        Self::check_name(path)?;
        let mut h = self.header(tar::EntryType::Regular, mode, owner, mtime);
        h.set_size(size);
        self.tar.append_data(&mut h, path, data).map_err(BuildError::io(path.to_string()))?;
        self.made.insert(path.to_string());
        Ok(())
    }

    pub(crate) fn link(
        &mut self,
        path: &str,
        target: &Path,
        owner: (u32, u32),
        mtime: u64,
    ) -> Result<(), BuildError> {
        Self::check_name(path)?;
        let mut h = self.header(tar::EntryType::Symlink, 0o777, owner, mtime);
        self.tar.append_link(&mut h, path, target).map_err(BuildError::io(path.to_string()))?;
        self.made.insert(path.to_string());
        Ok(())
    }

    /// A hard link at `path` to `target` (a path this layer wrote).
    pub(crate) fn hard_link(
        &mut self,
        path: &str,
        target: &str,
        owner: (u32, u32),
        mtime: u64,
    ) -> Result<(), BuildError> {
        Self::check_name(path)?;
        let mut h = self.header(tar::EntryType::Link, 0o644, owner, mtime);
        self.tar.append_link(&mut h, path, target).map_err(BuildError::io(path.to_string()))?;
        self.made.insert(path.to_string());
        Ok(())
    }

    /// The destination directory itself, when it is not there yet.
    pub(crate) fn dest_dir(&mut self, dir: &str) -> Result<(), BuildError> {
        if dir.is_empty() || self.made.contains(dir) || self.fs.is_dir(dir) {
            return Ok(());
        }
        self.parents(dir)?;
        let owner = self.owner(0, 0);
        self.dir(dir, 0o755, owner, self.mtime(0))
    }

    /// Copies one context entry to `at` (a layer path).
    fn entry(&mut self, at: &str, path: &Path, meta: &std::fs::Metadata) -> Result<(), BuildError> {
        let owner = self.owner(0, 0);
        let mode = meta.permissions().mode() & 0o7777;
        let mtime = self.mtime(meta.mtime());
        let ft = meta.file_type();
        if ft.is_dir() {
            let mode = self.opts.chmod.unwrap_or(mode);
            self.dir(at, mode, owner, mtime)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(BuildError::io(at.to_string()))?;
            self.link(at, &target, owner, mtime)
        } else if ft.is_file() {
            let mode = self.opts.chmod.unwrap_or(mode);
            let f = crate::context::open_nofollow(path).map_err(BuildError::io(at.to_string()))?;
            self.file(at, mode, owner, mtime, meta.len(), f.take(meta.len()))
        } else {
            Err(other(format!("{}: cannot copy a device, FIFO or socket", path.display())))
        }
    }

    /// ADD: unpacks a tar archive into the directory `dir` (a layer path); its entries keep
    /// their owners unless `--chown` says otherwise. `Ok(false)` when it is no archive.
    fn unpack(&mut self, dir: &str, path: &Path) -> Result<bool, BuildError> {
        let Some(reader) = open_archive(path)? else { return Ok(false) };
        self.dest_dir(dir)?;
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(BuildError::io(format!("{}", path.display())))?;
        for entry in entries {
            let mut entry = entry.map_err(BuildError::io(format!("{}", path.display())))?;
            let raw =
                entry.path().map_err(BuildError::io(format!("{}", path.display())))?.into_owned();
            let rel = clean(&raw.to_string_lossy());
            if rel.is_empty() {
                continue;
            }
            let at = if dir.is_empty() { rel.clone() } else { format!("{dir}/{rel}") };
            self.parents(&at)?;
            let h = entry.header().clone();
            let owner = self.owner(h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
            let mode = self.opts.chmod.unwrap_or(h.mode().unwrap_or(0o644) & 0o7777);
            let mtime = self.mtime(h.mtime().unwrap_or(0) as i64);
            match h.entry_type() {
                tar::EntryType::Directory => self.dir(&at, mode, owner, mtime)?,
                tar::EntryType::Symlink => {
                    let t = entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    self.link(&at, &t, owner, mtime)?
                }
                tar::EntryType::Link => {
                    // A hard link inside the archive: to the same file of this layer.
                    let t = entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|t| clean(&t.to_string_lossy()))
                        .unwrap_or_default();
                    let target = if dir.is_empty() { t } else { format!("{dir}/{t}") };
                    Self::check_name(&at)?;
                    let mut lh = self.header(tar::EntryType::Link, mode, owner, mtime);
                    self.tar
                        .append_link(&mut lh, &at, &target)
                        .map_err(BuildError::io(at.clone()))?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    self.file(&at, mode, owner, mtime, size, &mut entry)?
                }
                _ => {
                    return Err(other(format!(
                        "{}: {at}: devices and FIFOs are not unpacked",
                        path.display()
                    )))
                }
            }
        }
        Ok(true)
    }
}

/// A tar archive (plain, gzip or zstd, told by content) or `None`.
fn open_archive(path: &Path) -> Result<Option<Box<dyn Read>>, BuildError> {
    let what = || format!("{}", path.display());
    // Only a regular file can be an archive (a FIFO would block the build).
    let mut f = crate::context::open_nofollow(path).map_err(BuildError::io(what()))?;
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        let k = f.read(&mut head[n..]).map_err(BuildError::io(what()))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    head.truncate(n);
    let reopen =
        || crate::context::open_nofollow(path).map(BufReader::new).map_err(BuildError::io(what()));
    let reader: Box<dyn Read> = match head.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(reopen()?)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            Box::new(zstd::Decoder::with_buffer(reopen()?).map_err(BuildError::io(what()))?)
        }
        _ => Box::new(reopen()?),
    };
    // A tar archive's first header reads as one, with a good checksum.
    let mut reader = reader;
    let mut first = [0u8; 512];
    let mut got = 0;
    while got < 512 {
        match reader.read(&mut first[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(_) => return Ok(None),
        }
    }
    if got < 512 || !is_tar_header(&first) {
        return Ok(None);
    }
    Ok(Some(Box::new(io::Cursor::new(first).chain(reader))))
}

fn is_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let h = tar::Header::from_byte_slice(block);
    match h.cksum() {
        Ok(sum) => {
            let computed: u32 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { b as u32 })
                .sum();
            sum == computed
        }
        Err(_) => false,
    }
}

/// Writes the layer of a COPY or ADD to `out`.
pub fn write_layer(
    input: &Input<'_>,
    opts: &CopyOptions,
    fs: &ImageFs,
    out: &Path,
) -> Result<(), BuildError> {
    let file = File::create(out).map_err(BuildError::io(format!("{}", out.display())))?;
    let mut w = Writer { tar: tar::Builder::new(file), fs, made: HashSet::new(), opts };
    w.tar.mode(tar::HeaderMode::Complete);
    let dest_abs = if opts.dest.starts_with('/') {
        opts.dest.clone()
    } else {
        format!("{}/{}", opts.workdir.trim_end_matches('/'), opts.dest)
    };
    let dest = fs.real_path(&dest_abs);
    let dest_is_dir = opts.dest.ends_with('/')
        || opts.dest == "."
        || opts.dest.ends_with("/.")
        || fs.is_dir(&dest);
    match input {
        Input::HereDoc { name, body } => {
            let at = if dest_is_dir { join(&dest, name) } else { dest.clone() };
            if dest_is_dir {
                w.dest_dir(&dest)?;
            }
            w.parents(&at)?;
            let owner = w.owner(0, 0);
            let mode = opts.chmod.unwrap_or(0o644);
            let mtime = w.mtime(now());
            w.file(&at, mode, owner, mtime, body.len() as u64, body.as_bytes())?;
        }
        Input::Context { context, sources } => {
            let count = sources.len();
            if count > 1 && !opts.dest.ends_with('/') {
                return Err(other("When using COPY with more than one source file, the destination must be a directory and end with a /"));
            }
            for s in sources {
                if s.is_dir {
                    w.dest_dir(&dest)?;
                    context.walk(s, &mut |e| {
                        if e.sub.is_empty() {
                            return Ok(());
                        }
                        let at = join(&dest, e.sub);
                        w.parents(&at)?;
                        w.entry(&at, e.path, e.meta)
                    })?;
                    continue;
                }
                let name = s.rel.rsplit('/').next().unwrap_or(&s.rel).to_string();
                if opts.unpack {
                    let dir = dest.clone();
                    if w.unpack(&dir, &s.path)? {
                        continue;
                    }
                }
                let at = if dest_is_dir || count > 1 { join(&dest, &name) } else { dest.clone() };
                if dest_is_dir || count > 1 {
                    w.dest_dir(&dest)?;
                }
                if at.is_empty() {
                    return Err(other("cannot copy a file onto the root directory"));
                }
                w.parents(&at)?;
                context.walk(s, &mut |e| w.entry(&at, e.path, e.meta))?;
            }
        }
        Input::Image { fs: src, layers, paths } => {
            crate::copy_from::write(&mut w, src, layers, paths, &dest, dest_is_dir, &opts.dest)?;
        }
    }
    w.tar.finish().map_err(BuildError::io(format!("{}", out.display())))?;
    Ok(())
}

/// Writes a layer with the directory `opts.dest` and its missing parents (root-owned,
/// 0755): a WORKDIR that is not there yet.
pub fn write_dirs(opts: &CopyOptions, fs: &ImageFs, out: &Path) -> Result<(), BuildError> {
    let file = File::create(out).map_err(BuildError::io(format!("{}", out.display())))?;
    let mut w = Writer { tar: tar::Builder::new(file), fs, made: HashSet::new(), opts };
    let dir = fs.real_path(&opts.dest);
    if !dir.is_empty() {
        w.parents(&dir)?;
        let mtime = w.mtime(now());
        w.dir(&dir, 0o755, (0, 0), mtime)?;
    }
    w.tar.finish().map_err(BuildError::io(format!("{}", out.display())))
}

/// Copies the layer tar `src` to `dst` with every time no later than `epoch` (a RUN's
/// layer, for a reproducible build).
pub fn clamp_times(src: &Path, dst: &Path, epoch: u64) -> Result<(), BuildError> {
    let what = || format!("{}", src.display());
    let mut input =
        tar::Archive::new(BufReader::new(File::open(src).map_err(BuildError::io(what()))?));
    let out = File::create(dst).map_err(BuildError::io(format!("{}", dst.display())))?;
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    for entry in input.entries().map_err(BuildError::io(what()))? {
        let mut entry = entry.map_err(BuildError::io(what()))?;
        let path = entry.path().map_err(BuildError::io(what()))?.into_owned();
        let mut h = entry.header().clone();
        h.set_mtime(h.mtime().unwrap_or(0).min(epoch));
        let link = entry.link_name().map_err(BuildError::io(what()))?.map(|l| l.into_owned());
        match (h.entry_type(), link) {
            (tar::EntryType::Symlink | tar::EntryType::Link, Some(target)) => {
                b.append_link(&mut h, &path, &target).map_err(BuildError::io(what()))?
            }
            _ => b.append_data(&mut h, &path, &mut entry).map_err(BuildError::io(what()))?,
        }
    }
    b.finish().map_err(BuildError::io(format!("{}", dst.display())))
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
