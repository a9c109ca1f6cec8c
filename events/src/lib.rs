//! The event log of a state root: one JSON line per thing that happened to a container, an
//! image, a network or a volume, appended by whichever process did it (the CLI, a pod's
//! monitor, the shim, the service) to `<root>/events.jsonl`. A line is written with one
//! `write` on an `O_APPEND` descriptor, so writers never interleave. The log keeps its last
//! two files of at most [`MAX_FILE`] bytes each (`events.jsonl.1` is the older).
//!
//! Readers take what happened between two times ([`read`]) and follow what happens next
//! ([`Follower`]); [`Filter`] selects events as Docker's `events --filter` does.

mod filter;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use filter::{Filter, FilterError};

/// The size past which the log starts a new file.
pub const MAX_FILE: u64 = 4 << 20;
/// The longest line written (attributes past it are dropped).
const MAX_LINE: usize = 16 << 10;

/// The kind of ironpod's own events about pods (how long a pod took to start, or that it
/// failed to): in the log for the service's metrics, never shown as Docker events.
pub const POD_KIND: &str = "pod";

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `container`, `image`, `network` or `volume`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What happened: `create`, `start`, `die`, `pull`, `connect`…
    pub action: String,
    /// The object: a container's, network's or image's id or name, a volume's name.
    pub id: String,
    /// Details: `name`, `image`, `exitCode`, `signal`, labels…
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// When, in nanoseconds since the epoch.
    pub time_nano: i64,
}

impl Event {
    /// An event that happens now.
    pub fn now(kind: &str, action: &str, id: &str) -> Self {
        Event {
            kind: kind.into(),
            action: action.into(),
            id: id.into(),
            attributes: BTreeMap::new(),
            time_nano: now_nanos(),
        }
    }

    /// With one more attribute.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// With more attributes.
    pub fn with_all<K: Into<String>, V: Into<String>>(
        mut self,
        attrs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.attributes.extend(attrs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }
}

/// A time as `--since`/`--until` take it: unix seconds (`1700000000.5`) or a Go duration
/// (`24h`, `1h30m`, `90s`, `500ms`) back from `now` (unix seconds). (RFC 3339 is the
/// caller's: it has its own parser.)
pub fn parse_time(v: &str, now: f64) -> Result<f64, String> {
    let bad = || format!("invalid time {v:?}");
    if let Ok(secs) = v.parse::<f64>() {
        return Ok(secs);
    }
    let (mut total, mut rest) = (0f64, v);
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(now - total)
}

/// Nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn log_path(root: &Path) -> PathBuf {
    root.join("events.jsonl")
}

fn old_path(root: &Path) -> PathBuf {
    root.join("events.jsonl.1")
}

/// Appends `e` to the log of `root`. Recording an event never fails what caused it: an
/// error is returned for the caller to log or drop.
pub fn record(root: &Path, e: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
    if line.len() > MAX_LINE {
        let mut short = e.clone();
        short.attributes.retain(|k, _| k == "name" || k == "image" || k == "exitCode");
        line = serde_json::to_vec(&short).map_err(std::io::Error::other)?;
    }
    line.push(b'\n');
    let path = log_path(root);
    let mut f = OpenOptions::new().append(true).create(true).mode(0o600).open(&path)?;
    f.write_all(&line)?;
    if f.metadata()?.len() > MAX_FILE {
        rotate(root, &f)?;
    }
    Ok(())
}

/// Starts a new file: the full one becomes `events.jsonl.1` (under a lock, once).
fn rotate(root: &Path, full: &File) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor we own; released when it closes.
    if unsafe { libc::flock(full.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(()); // another writer rotates it
    }
    let same = std::fs::metadata(log_path(root))
        .is_ok_and(|m| m.ino() == full.metadata().map(|f| f.ino()).unwrap_or(0));
    if same {
        std::fs::rename(log_path(root), old_path(root))?;
    }
    Ok(())
}

fn parse_lines(bytes: &[u8], out: &mut Vec<Event>) {
    for line in bytes.split(|b| *b == b'\n') {
        if let Ok(e) = serde_json::from_slice::<Event>(line) {
            out.push(e);
        }
    }
}

/// The events logged between `since` and `until` (nanoseconds, both inclusive), oldest
/// first.
pub fn read(root: &Path, since: Option<i64>, until: Option<i64>) -> std::io::Result<Vec<Event>> {
    let mut out = Vec::new();
    for p in [old_path(root), log_path(root)] {
        match std::fs::read(&p) {
            Ok(b) => parse_lines(&b, &mut out),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    out.retain(|e| {
        since.is_none_or(|s| e.time_nano >= s) && until.is_none_or(|u| e.time_nano <= u)
    });
    out.sort_by_key(|e| e.time_nano);
    Ok(out)
}

/// Follows the log from its current end: each [`Follower::poll`] returns what was
/// appended since the last one (across a rotation too).
pub struct Follower {
    root: PathBuf,
    file: Option<File>,
    inode: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the log's end now.
    pub fn new(root: &Path) -> Self {
        let mut f =
            Follower { root: root.to_path_buf(), file: None, inode: 0, partial: Vec::new() };
        if let Ok(mut file) = File::open(log_path(root)) {
            if file.seek(SeekFrom::End(0)).is_ok() {
                f.inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
                f.file = Some(file);
            }
        }
        f
    }

    fn drain(&mut self, out: &mut Vec<Event>) {
        if let Some(f) = &mut self.file {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_ok() {
                self.partial.extend_from_slice(&buf);
            }
            if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
                let whole: Vec<u8> = self.partial.drain(..=end).collect();
                parse_lines(&whole, out);
            }
        }
    }

    /// The events appended since the last call.
    pub fn poll(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        self.drain(&mut out);
        // A new file (rotated, or the first one): read the rest of the old, then the new.
        let inode = std::fs::metadata(log_path(&self.root)).map(|m| m.ino()).unwrap_or(0);
        if inode != 0 && inode != self.inode {
            if let Ok(f) = File::open(log_path(&self.root)) {
                self.file = Some(f);
                self.inode = inode;
                self.partial.clear();
                self.drain(&mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_read_follow_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut follow = Follower::new(root);
        assert!(follow.poll().is_empty());
        record(root, &Event::now("container", "create", "abc").with("name", "web")).unwrap();
        record(root, &Event::now("container", "start", "abc")).unwrap();
        let got = follow.poll();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].action.as_str(), got[0].attributes["name"].as_str()), ("create", "web"));
        assert!(follow.poll().is_empty());
        let all = read(root, None, None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(read(root, Some(all[1].time_nano), None).unwrap().len(), 1);
        assert_eq!(read(root, None, Some(all[0].time_nano)).unwrap().len(), 1);
        // Past the size limit the log rotates; a follower reads on across it.
        let big = "x".repeat(8 << 10);
        let n = (MAX_FILE / (8 << 10)) as usize + 2;
        for i in 0..n {
            record(root, &Event::now("image", "pull", &format!("i{i}")).with("pad", big.clone()))
                .unwrap();
        }
        assert!(old_path(root).exists());
        let got = follow.poll();
        assert_eq!(got.len(), n, "every event, across the rotation");
        assert_eq!(got.last().unwrap().id, format!("i{}", n - 1));
        assert_eq!(read(root, None, None).unwrap().len(), n + 2);
        // A torn line (a writer that died mid-write) is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(log_path(root))
            .unwrap()
            .write_all(b"{\"ty")
            .unwrap();
        record(root, &Event::now("volume", "create", "v")).unwrap();
        assert!(read(root, None, None).is_ok());
    }

    #[test]
    fn long_attributes_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let e = Event::now("container", "create", "a")
            .with("name", "n")
            .with("label", "y".repeat(MAX_LINE * 2));
        record(dir.path(), &e).unwrap();
        let got = read(dir.path(), None, None).unwrap();
        assert_eq!(got[0].attributes.keys().collect::<Vec<_>>(), ["name"]);
    }
}
