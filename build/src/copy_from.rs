//! `COPY --from=STAGE|IMAGE`: files of another stage or image, found in what the build
//! knows of its files ([`ImageFs`]) and read from the layers that hold them, each layer
//! once. Owners, modes and times are the source's (unless `--chown`/`--chmod`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::copy::{join, other, LayerOpener, Writer};
use crate::error::BuildError;
use crate::imagefs::{clean, ImageFs, Kind, Node};

/// The paths (in the image; links of a named path followed) one expanded source names;
/// why not, in Docker's words.
pub fn image_sources(fs: &ImageFs, src: &str) -> Result<Vec<String>, String> {
    let rel = clean(src);
    if crate::glob::is_glob(&rel) {
        let mut found = Vec::new();
        for (p, _) in fs.paths() {
            if crate::glob::matches(&rel, p).map_err(|e| e.to_string())? {
                found.push(p.clone());
            }
        }
        if found.is_empty() {
            return Err(format!("no source files were specified (nothing matches {src})"));
        }
        return Ok(found);
    }
    match fs.resolve(&rel) {
        Some((path, _)) => Ok(vec![path]),
        None => Err(format!("stat {src}: file does not exist")),
    }
}

/// A file to read from a layer: where it goes and how.
struct Wanted {
    at: String,
    mode: u32,
    owner: (u32, u32),
    mtime: u64,
}

/// Places one source node at `at`: directories and links at once, files noted in
/// `wanted` under the layer and path that hold their contents.
fn place(
    w: &mut Writer<'_>,
    src: &ImageFs,
    wanted: &mut BTreeMap<(usize, String), Vec<Wanted>>,
    at: String,
    node: &Node,
    path: &str,
) -> Result<(), BuildError> {
    let owner = w.owner(node.uid, node.gid);
    let mtime = w.mtime(node.mtime as i64);
    w.parents(&at)?;
    match &node.kind {
        Kind::Dir => {
            let mode = w.opts.chmod.unwrap_or(node.mode);
            w.dir(&at, mode, owner, mtime)
        }
        Kind::Symlink(t) => w.link(&at, Path::new(t), owner, mtime),
        Kind::File => {
            // A hard link's contents are its target's.
            let (layer, from) = match &node.link {
                Some(t) => match src.get(t) {
                    Some(n) => (n.layer, t.clone()),
                    None => return Err(other(format!("/{path}: a hard link to a missing /{t}"))),
                },
                None => (node.layer, path.to_string()),
            };
            let mode = w.opts.chmod.unwrap_or(node.mode);
            wanted.entry((layer, from)).or_default().push(Wanted { at, mode, owner, mtime });
            Ok(())
        }
        Kind::Other => Err(other(format!("/{path}: cannot copy a device, FIFO or socket"))),
    }
}

/// Writes `paths` of the image whose files are `src` to `dest` (a layer path), Docker's
/// destination rules as for the context.
pub(crate) fn write(
    w: &mut Writer<'_>,
    src: &ImageFs,
    layers: &LayerOpener<'_>,
    paths: &[String],
    dest: &str,
    dest_is_dir: bool,
    dest_written: &str,
) -> Result<(), BuildError> {
    if paths.len() > 1 && !dest_written.ends_with('/') {
        return Err(other(
            "When using COPY with more than one source file, the destination must be a directory and end with a /",
        ));
    }
    let mut wanted: BTreeMap<(usize, String), Vec<Wanted>> = BTreeMap::new();
    for p in paths {
        let Some((_, node)) = src.resolve(p) else { continue };
        if node.kind == Kind::Dir {
            w.dest_dir(dest)?;
            let below: Vec<(String, Node)> = src
                .below(p)
                .filter(|(k, _)| *k != p)
                .map(|(k, n)| (k.clone(), n.clone()))
                .collect();
            for (sub, n) in below {
                let rel = if p.is_empty() { sub.as_str() } else { &sub[p.len() + 1..] };
                place(w, src, &mut wanted, join(dest, rel), &n, &sub)?;
            }
            continue;
        }
        let name = p.rsplit('/').next().unwrap_or(p);
        let at = if dest_is_dir || paths.len() > 1 {
            w.dest_dir(dest)?;
            join(dest, name)
        } else {
            dest.to_string()
        };
        if at.is_empty() {
            return Err(other("cannot copy a file onto the root directory"));
        }
        let node = node.clone();
        place(w, src, &mut wanted, at, &node, p)?;
    }
    // File contents: one pass over each layer that holds some.
    let mut by_layer: BTreeMap<usize, HashMap<String, Vec<Wanted>>> = BTreeMap::new();
    for ((layer, path), list) in wanted {
        by_layer.entry(layer).or_default().insert(path, list);
    }
    for (layer, mut files) in by_layer {
        let mut archive = tar::Archive::new(layers(layer)?);
        for entry in archive.entries().map_err(BuildError::io("a source layer"))? {
            let mut entry = entry.map_err(BuildError::io("a source layer"))?;
            let raw = entry.path().map_err(BuildError::io("a source layer"))?;
            let path = clean(&raw.to_string_lossy());
            let Some(list) = files.remove(&path) else { continue };
            let size = entry.size();
            // One copy of the contents; further destinations are hard links to it (never
            // the whole file in memory).
            if let Some((first, rest)) = list.split_first() {
                w.file(&first.at, first.mode, first.owner, first.mtime, size, &mut entry)?;
                for f in rest {
                    w.hard_link(&f.at, &first.at, f.owner, f.mtime)?;
                }
            }
            if files.is_empty() {
                break;
            }
        }
        if let Some(missing) = files.keys().next() {
            return Err(other(format!("/{missing}: not found in the layer that should hold it")));
        }
    }
    Ok(())
}
