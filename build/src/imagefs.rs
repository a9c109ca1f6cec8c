//! What a build knows of its image's files without running anything: every path of the
//! stacked layers (whiteouts applied) with its kind, mode and owner, and the contents of
//! `/etc/passwd` and `/etc/group` (for `COPY --chown=name`). COPY and ADD use it to tell
//! whether a destination is an existing directory, as Docker's builder looks at the
//! container's root.

use std::collections::BTreeMap;
use std::io::Read;

/// A path's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (or a hard link to one).
    File,
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
    /// A device, FIFO or socket.
    Other,
}

/// One path of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
    /// The layer (0: the bottom one) whose tar holds it (a file's contents come from there).
    pub layer: usize,
    /// For a hard link: the path (in that layer) of the file it links to.
    pub link: Option<String>,
}

impl Node {
    fn dir(layer: usize) -> Node {
        Node { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: 0, layer, link: None }
    }
}

/// The files of an image, as its layers leave them.
#[derive(Debug, Clone, Default)]
pub struct ImageFs {
    nodes: BTreeMap<String, Node>,
    passwd: Option<Vec<u8>>,
    group: Option<Vec<u8>>,
    layers: usize,
}

/// A layer that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading a layer: {0}")]
pub struct LayerError(String);

/// The biggest user or group file kept (larger ones are a sign of a hostile image).
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// `a/./b//c/` → `a/b/c`; `..` cannot climb above the root.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl ImageFs {
    /// An empty image (`FROM scratch`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Stacks a layer (an uncompressed tar) on top: its paths replace what was there, and
    /// its whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove what is below.
    pub fn apply_layer(&mut self, layer: impl Read) -> Result<(), LayerError> {
        let index = self.layers;
        self.layers += 1;
        let mut archive = tar::Archive::new(layer);
        let entries = archive.entries().map_err(|e| LayerError(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| LayerError(e.to_string()))?;
            let raw = entry.path().map_err(|e| LayerError(e.to_string()))?;
            let path = clean(&raw.to_string_lossy());
            if path.is_empty() {
                continue;
            }
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                self.remove_below(&dir);
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let target =
                    if dir.is_empty() { gone.to_string() } else { format!("{dir}/{gone}") };
                self.remove_below(&target);
                self.nodes.remove(&target);
                continue;
            }
            let h = entry.header();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(
                    entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link => {
                    Kind::File
                }
                _ => Kind::Other,
            };
            let link = match h.entry_type() {
                tar::EntryType::Link => {
                    entry.link_name().ok().flatten().map(|l| clean(&l.to_string_lossy()))
                }
                _ => None,
            };
            let node = Node {
                kind: kind.clone(),
                mode: h.mode().unwrap_or(0o644) & 0o7777,
                uid: h.uid().unwrap_or(0) as u32,
                gid: h.gid().unwrap_or(0) as u32,
                mtime: h.mtime().unwrap_or(0),
                layer: index,
                link,
            };
            if kind != Kind::Dir {
                // A file or link replacing a directory hides what was under it.
                self.remove_below(&path);
            }
            let size = entry.size();
            if kind == Kind::File
                && size <= MAX_ACCOUNT_FILE
                && (path == "etc/passwd" || path == "etc/group")
            {
                let mut data = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut data).map_err(|e| LayerError(e.to_string()))?;
                if path == "etc/passwd" {
                    self.passwd = Some(data);
                } else {
                    self.group = Some(data);
                }
            }
            // Parent directories a layer leaves out exist all the same.
            let mut parent = dir.as_str();
            while !parent.is_empty() && !self.nodes.contains_key(parent) {
                self.nodes.insert(parent.to_string(), Node::dir(index));
                parent = parent.rsplit_once('/').map_or("", |(d, _)| d);
            }
            self.nodes.insert(path, node);
        }
        Ok(())
    }

    fn remove_below(&mut self, dir: &str) {
        if dir.is_empty() {
            self.nodes.clear();
            self.passwd = None;
            self.group = None;
            return;
        }
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
        if "etc/passwd".starts_with(&prefix) || dir == "etc/passwd" {
            self.passwd = None;
        }
        if "etc/group".starts_with(&prefix) || dir == "etc/group" {
            self.group = None;
        }
    }

    /// The node at `path` as written (no links followed).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&clean(path))
    }

    /// The node at `path` with symbolic links followed inside the image (as a path inside a
    /// container resolves), and the resolved path; `None` when nothing is there.
    pub fn resolve(&self, path: &str) -> Option<(String, &Node)> {
        let real = self.real_path(path);
        if real.is_empty() {
            return Some((real, &ROOT));
        }
        let node = self.nodes.get(&real)?;
        // A link left at the end is one that loops.
        if matches!(node.kind, Kind::Symlink(_)) {
            return None;
        }
        Some((real, node))
    }

    /// The layers applied.
    pub fn layer_count(&self) -> usize {
        self.layers
    }

    /// Every path at or below `dir` (as written, no links followed), parents first.
    pub fn below<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let dir = clean(dir);
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let start = self
            .nodes
            .range(dir.clone()..)
            .take_while(move |(k, _)| **k == dir || k.starts_with(&prefix));
        start
    }

    /// Every path of the image, in order.
    pub fn paths(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// `path` with the links of its existing parts followed inside the image (as a path in
    /// a container resolves); the parts that do not exist yet follow as written. A layer
    /// must write there: a directory written over a link (`/bin` → `usr/bin`) would hide
    /// what the link leads to.
    pub fn real_path(&self, path: &str) -> String {
        let mut pending: Vec<String> =
            clean(path).split('/').filter(|c| !c.is_empty()).map(str::to_string).rev().collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            if c == ".." {
                done.pop();
                continue;
            }
            done.push(c);
            let here = done.join("/");
            match self.nodes.get(&here) {
                None => {
                    // Missing from here on: the rest as written.
                    done.extend(pending.into_iter().rev());
                    return clean(&done.join("/"));
                }
                Some(Node { kind: Kind::Symlink(target), .. }) => {
                    hops += 1;
                    if hops > 40 {
                        return here;
                    }
                    done.pop();
                    if target.starts_with('/') {
                        done.clear();
                    }
                    for t in target.split('/').filter(|c| !c.is_empty() && *c != ".").rev() {
                        pending.push(t.to_string());
                    }
                }
                Some(_) => {}
            }
        }
        done.join("/")
    }

    /// Whether `path` (links followed) is a directory.
    pub fn is_dir(&self, path: &str) -> bool {
        self.resolve(path).is_some_and(|(_, n)| n.kind == Kind::Dir)
    }

    /// A `USER[:GROUP]` of names or numbers as ids, from the image's `/etc/passwd` and
    /// `/etc/group` (a user's own group when no group is given; numbers need no entry).
    pub fn ids(&self, spec: &str) -> Result<(u32, u32), String> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if user.is_empty() {
            return Err(format!("invalid user {spec:?}"));
        }
        let passwd = self.passwd.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        let entry = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| {
            f.len() >= 4 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user))
        });
        let uid = match user.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match &entry {
                Some(f) => f[2].parse().map_err(|_| format!("bad /etc/passwd entry for {user}"))?,
                None => {
                    return Err(format!(
                        "unable to find user {user}: no matching entries in passwd file"
                    ))
                }
            },
        };
        let gid = match group {
            None => match &entry {
                Some(f) => f[3].parse().unwrap_or(uid),
                None => uid,
            },
            Some("") => return Err(format!("invalid group in {spec:?}")),
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    let groups =
                        self.group.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                    groups
                        .lines()
                        .map(|l| l.split(':').collect::<Vec<_>>())
                        .find(|f| f.len() >= 3 && f[0] == g)
                        .and_then(|f| f[2].parse().ok())
                        .ok_or_else(|| {
                            format!("unable to find group {g}: no matching entries in group file")
                        })?
                }
            },
        };
        Ok((uid, gid))
    }
}

static ROOT: Node =
    Node { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: 0, layer: 0, link: None };

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        F(&'a str, &'a [u8]),
        D(&'a str),
        L(&'a str, &'a str),
    }

    fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::F(p, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    h.set_mode(0o640);
                    h.set_uid(7);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::D(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o750);
                    b.append_data(&mut h, p, std::io::empty()).unwrap();
                }
                E::L(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    b.append_link(&mut h, p, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_stack_with_whiteouts() {
        let mut fs = ImageFs::new();
        fs.apply_layer(
            &layer(&[
                E::D("etc"),
                E::F("etc/a", b"a"),
                E::D("opt/x"),
                E::F("opt/x/y", b"y"),
                E::F("gone", b"g"),
            ])[..],
        )
        .unwrap();
        let a = fs.get("/etc/a").unwrap();
        assert_eq!((&a.kind, a.mode, a.uid, a.gid, a.layer), (&Kind::File, 0o640, 7, 0, 0));
        assert!(fs.is_dir("opt"), "a parent a layer leaves out exists");
        fs.apply_layer(
            &layer(&[
                E::F(".wh.gone", b""),
                E::F("opt/x/.wh..wh..opq", b""),
                E::F("opt/x/new", b"n"),
            ])[..],
        )
        .unwrap();
        assert!(fs.get("gone").is_none());
        assert!(fs.get("opt/x/y").is_none());
        assert!(fs.get("opt/x/new").is_some());
        assert!(fs.is_dir("opt/x"));
        // A file replacing a directory hides its contents.
        fs.apply_layer(&layer(&[E::F("opt", b"file now")])[..]).unwrap();
        assert!(fs.get("opt/x/new").is_none());
        assert!(!fs.is_dir("opt"));
    }

    #[test]
    fn links_resolve_inside_the_image() {
        let mut fs = ImageFs::new();
        fs.apply_layer(
            &layer(&[
                E::D("usr/lib"),
                E::L("lib", "usr/lib"),
                E::L("abs", "/usr"),
                E::L("loop", "loop"),
                E::L("up", "../../../usr"),
            ])[..],
        )
        .unwrap();
        assert!(fs.is_dir("/lib"));
        assert_eq!(fs.resolve("/abs/lib").unwrap().0, "usr/lib");
        assert!(fs.resolve("/loop").is_none());
        assert!(fs.is_dir("/up"), "`..` stops at the root");
        assert!(fs.is_dir("/"));
        assert!(!fs.is_dir("/missing"));
    }

    #[test]
    fn users_and_groups_by_name_or_number() {
        let mut fs = ImageFs::new();
        fs.apply_layer(
            &layer(&[
                E::F(
                    "etc/passwd",
                    b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
                ),
                E::F("etc/group", b"root:x:0:\nstaff:x:50:\n"),
            ])[..],
        )
        .unwrap();
        assert_eq!(fs.ids("app"), Ok((1000, 1001)));
        assert_eq!(fs.ids("app:staff"), Ok((1000, 50)));
        assert_eq!(fs.ids("1000"), Ok((1000, 1001)));
        assert_eq!(fs.ids("5:6"), Ok((5, 6)));
        assert_eq!(fs.ids("77"), Ok((77, 77)));
        assert!(fs.ids("nobody").unwrap_err().contains("unable to find user nobody"));
        assert!(fs.ids("app:nogroup").unwrap_err().contains("unable to find group"));
        assert!(fs.ids(":1").is_err());
        fs.apply_layer(&layer(&[E::F("etc/.wh.passwd", b"")])[..]).unwrap();
        assert!(fs.ids("app").is_err(), "a removed passwd names no one");
    }

    #[test]
    fn real_paths_follow_existing_links() {
        let mut fs = ImageFs::new();
        fs.apply_layer(&layer(&[E::D("usr/bin"), E::L("bin", "usr/bin"), E::L("abs", "/usr")])[..])
            .unwrap();
        assert_eq!(fs.real_path("/bin/tool"), "usr/bin/tool");
        assert_eq!(fs.real_path("/bin"), "usr/bin");
        assert_eq!(fs.real_path("/abs/new/dir/"), "usr/new/dir");
        assert_eq!(fs.real_path("/opt/x"), "opt/x");
        assert_eq!(fs.real_path("/"), "");
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/a/./b//c/"), "a/b/c");
        assert_eq!(clean("../../a/../b"), "b");
        assert_eq!(clean("/"), "");
    }
}
