//! Container logs in the Kubernetes CRI format: one entry per line,
//! `<RFC 3339 nano time> <stdout|stderr> <F|P> <bytes>\n`, where `P` marks a partial line
//! (its bytes continue in the next entry of the same stream). Bytes are written as they
//! came, so binary output survives (a `\n` always ends an entry).
//!
//! A log is bounded the way Docker's `--log-opt max-size=… --log-opt max-file=…` bound
//! theirs: once the file would pass `max-size` it is rotated (`ctr.log` → `ctr.log.1` → …,
//! the oldest beyond `max-file` deleted), so a container that writes without end holds at
//! most `max-size × max-file` bytes of the host's disk. The default (20 MiB × 5) is Docker's
//! `local` driver's; `max-size=-1` lifts the bound.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How large a container's log may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Bytes per file before it rotates; `None`: one file, unbounded.
    pub max_size: Option<u64>,
    /// Files kept, the one being written included (at least 1).
    pub max_file: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_size: Some(20 << 20), max_file: 5 }
    }
}

impl LogLimits {
    /// The limits `--log-opt KEY=VALUE` options ask for, over the defaults.
    pub fn parse(opts: &[String]) -> Result<Self, String> {
        let mut l = LogLimits::default();
        for o in opts {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| format!("invalid log opt {o:?}: expected KEY=VALUE"))?;
            match k {
                "max-size" if v == "-1" => l.max_size = None,
                "max-size" => {
                    let n = crate::spec::parse_size(v)
                        .map_err(|e| format!("invalid max-size {v:?}: {e}"))?;
                    if n == 0 {
                        return Err("max-size must be a positive number".into());
                    }
                    l.max_size = Some(n);
                }
                "max-file" => {
                    l.max_file =
                        v.parse::<u32>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(
                            || format!("invalid max-file {v:?}: a number from 1 to 1000"),
                        )?
                }
                _ => {
                    return Err(format!("unknown log opt '{k}' (max-size and max-file are known)"))
                }
            }
        }
        Ok(l)
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// The files of the log at `path` that exist, oldest first (`ctr.log.N` … `ctr.log`).
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        (1..=1000).map(|n| rotated(path, n)).take_while(|p| p.exists()).collect();
    out.reverse();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// Which stream an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (and a TTY's output).
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Now as RFC 3339 with nanoseconds.
pub fn timestamp() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let base = ironpod_images::time::format_rfc3339(d.as_secs());
    format!("{}.{:09}Z", base.trim_end_matches('Z'), d.subsec_nanos())
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// Appends entries to a log, rotating it within its limits.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    limits: LogLimits,
}

impl LogWriter {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path, limits: LogLimits) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter { path: path.to_path_buf(), file, size, limits })
    }

    /// Starts a new file: the current one becomes `.1`, `.1` becomes `.2`, and so on; the
    /// one past `max-file` goes. With one file allowed, a new empty file replaces it (not
    /// emptied in place: a follower holding the old one drains it, where an emptied file
    /// refilled past the follower's position between two polls would be read from the
    /// middle of an entry).
    fn rotate(&mut self) -> io::Result<()> {
        if self.limits.max_file <= 1 {
            let mut name = self.path.clone().into_os_string();
            name.push(".new");
            let next = PathBuf::from(name);
            let file = open_append(&next)?;
            file.set_len(0)?;
            std::fs::rename(&next, &self.path)?;
            self.file = file;
        } else {
            let last = self.limits.max_file - 1;
            match std::fs::remove_file(rotated(&self.path, last)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..last).rev() {
                match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = open_append(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }

    /// Writes a chunk of output: each complete line is a full entry, a trailing partial line
    /// a partial one.
    pub fn write(&mut self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        let ts = timestamp();
        let mut out = Vec::with_capacity(chunk.len() + 64);
        let mut rest = chunk;
        while !rest.is_empty() {
            let (line, tag, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], "F", &rest[i + 1..]),
                None => (rest, "P", &rest[rest.len()..]),
            };
            let head = format!("{ts} {} {tag} ", stream.name());
            let len = (head.len() + line.len() + 1) as u64;
            // Rotate between entries, so no file passes max-size (unless one entry does).
            if let Some(max) = self.limits.max_size {
                let held = self.size + out.len() as u64;
                if held > 0 && held + len > max {
                    self.file.write_all(&out)?;
                    out.clear();
                    self.rotate()?;
                }
            }
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(line);
            out.push(b'\n');
            rest = next;
        }
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        Ok(())
    }
}

/// Reads a log as it is written, across rotations: what it has, then what is added.
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    pending: Vec<u8>,
}

impl Follower {
    /// Everything the log holds now (its rotated files oldest first, then the current one),
    /// and a follower that goes on from there.
    pub fn read_all(path: &Path) -> io::Result<(Vec<u8>, Follower)> {
        let mut data = Vec::new();
        for f in files(path).iter().filter(|f| f.as_path() != path) {
            match File::open(f) {
                Ok(mut f) => {
                    f.read_to_end(&mut data)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut follower =
            Follower { path: path.to_path_buf(), file: None, pos: 0, pending: Vec::new() };
        data.extend(follower.poll()?);
        Ok((data, follower))
    }

    /// The complete entries added since the last call (a half-written one waits).
    pub fn poll(&mut self) -> io::Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.pending);
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => (self.file, self.pos) = (Some(f), 0),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(f) = self.file.as_mut() {
            if f.metadata()?.len() < self.pos {
                // Emptied in place (a one-file log of an older version): start again from its top.
                self.pos = 0;
            }
            self.pos += read_rest(f, self.pos, &mut out)?;
            // Rotated away: the old file is drained (once more: the writer may have added
            // to it between that read and its rename), then the files rotated after it,
            // oldest first, then the new one from its start.
            let ours = f.metadata()?.ino();
            let now = std::fs::metadata(&self.path).ok().map(|m| m.ino());
            if now != Some(ours) {
                self.pos += read_rest(f, self.pos, &mut out)?;
                let older: Vec<PathBuf> =
                    files(&self.path).into_iter().filter(|p| *p != self.path).collect();
                // Every rotated file still there is newer than ours unless it is ours.
                let newer = older
                    .iter()
                    .position(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == ours))
                    .map_or(0, |i| i + 1);
                for p in &older[newer..] {
                    if let Ok(mut r) = File::open(p) {
                        read_rest(&mut r, 0, &mut out)?;
                    }
                }
                self.file = None;
                if let Ok(mut f) = File::open(&self.path) {
                    self.pos = read_rest(&mut f, 0, &mut out)?;
                    self.file = Some(f);
                }
            }
        }
        let cut = out.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.pending = out.split_off(cut);
        Ok(out)
    }
}

fn read_rest(f: &mut File, from: u64, out: &mut Vec<u8>) -> io::Result<u64> {
    f.seek(SeekFrom::Start(from))?;
    Ok(f.read_to_end(out)? as u64)
}

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Timestamp text.
    pub time: String,
    /// Stream.
    pub stream: Stream,
    /// Whether the line is complete (ends with a newline in the original output).
    pub full: bool,
    /// The bytes (without the newline).
    pub bytes: Vec<u8>,
}

impl Entry {
    /// The original output bytes this entry stands for.
    pub fn output(&self) -> Vec<u8> {
        let mut v = self.bytes.clone();
        if self.full {
            v.push(b'\n');
        }
        v
    }
}

/// Parses one log line (without its final newline). Malformed lines give `None`.
pub fn parse(line: &[u8]) -> Option<Entry> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(Entry { time, stream, full, bytes: parts.next().unwrap_or_default().to_vec() })
}

/// Reads every entry from `reader` (malformed lines are skipped).
pub fn read_entries<R: io::Read>(reader: R) -> io::Result<Vec<Entry>> {
    let mut r = BufReader::new(reader);
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(out);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if let Some(e) = parse(&line) {
            out.push(e);
        }
    }
}

/// The entries that make up the last `n` lines of output.
pub fn tail(entries: &[Entry], n: usize) -> &[Entry] {
    if n == 0 {
        return &entries[entries.len()..];
    }
    let mut lines = 0;
    for (i, e) in entries.iter().enumerate().rev() {
        if e.full {
            lines += 1;
            if lines > n {
                return &entries[i + 1..];
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_partial_lines_and_binary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut w = LogWriter::open(&p, LogLimits::default()).unwrap();
        w.write(Stream::Stdout, b"one\ntw").unwrap();
        w.write(Stream::Stderr, b"err\n").unwrap();
        w.write(Stream::Stdout, b"o\n\x00\xff\r bin").unwrap();
        let entries = read_entries(File::open(&p).unwrap()).unwrap();
        let out: Vec<u8> = entries
            .iter()
            .filter(|e| e.stream == Stream::Stdout)
            .flat_map(|e| e.output())
            .collect();
        assert_eq!(out, b"one\ntwo\n\x00\xff\r bin");
        let err: Vec<u8> = entries
            .iter()
            .filter(|e| e.stream == Stream::Stderr)
            .flat_map(|e| e.output())
            .collect();
        assert_eq!(err, b"err\n");
        assert!(entries[0].time.ends_with('Z') && entries[0].time.contains('.'));
    }

    #[test]
    fn tails_and_garbage() {
        let e = |s: &str, full| Entry {
            time: "t".into(),
            stream: Stream::Stdout,
            full,
            bytes: s.as_bytes().to_vec(),
        };
        let v = vec![e("a", true), e("b", false), e("c", true), e("d", true)];
        assert_eq!(tail(&v, 1), &v[3..]);
        assert_eq!(tail(&v, 2), &v[1..]);
        assert_eq!(tail(&v, 10), &v[..]);
        assert!(tail(&v, 0).is_empty());
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"t stdout X y"), None);
        assert_eq!(parse(b"t stdout F").unwrap().bytes, b"");
    }

    fn lines(data: &[u8]) -> Vec<String> {
        read_entries(data)
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(e.bytes.clone()).unwrap())
            .collect()
    }

    #[test]
    fn options_parse_like_dockers() {
        assert_eq!(LogLimits::parse(&[]).unwrap(), LogLimits::default());
        let o = |v: &[&str]| LogLimits::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            o(&["max-size=10k", "max-file=3"]).unwrap(),
            LogLimits { max_size: Some(10 << 10), max_file: 3 }
        );
        assert_eq!(o(&["max-size=-1"]).unwrap().max_size, None);
        for bad in ["max-size=0", "max-size=lots", "max-file=0", "max-file=x", "compress=true", "x"]
        {
            assert!(o(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn rotation_keeps_the_newest_within_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctr.log");
        let mut w = LogWriter::open(&p, LogLimits { max_size: Some(1000), max_file: 3 }).unwrap();
        for i in 0..250 {
            w.write(Stream::Stdout, format!("line{i}\n").as_bytes()).unwrap();
        }
        // Many lines in one chunk rotate between entries too.
        let chunk: String = (250..500).map(|i| format!("line{i}\n")).collect();
        w.write(Stream::Stdout, chunk.as_bytes()).unwrap();
        let fs = files(&p);
        assert_eq!(fs, vec![rotated(&p, 2), rotated(&p, 1), p.clone()]);
        for f in &fs {
            assert!(std::fs::metadata(f).unwrap().len() <= 1000);
        }
        let (all, _) = Follower::read_all(&p).unwrap();
        let got = lines(&all);
        assert_eq!(got.last().unwrap(), "line499");
        assert!(got.len() > 30 && got.len() < 100, "{}", got.len());
        // In order, without gaps.
        let first: usize = got[0][4..].parse().unwrap();
        assert!(got.iter().enumerate().all(|(i, l)| *l == format!("line{}", first + i)));
        // One file allowed: replaced by an empty one.
        let q = dir.path().join("one.log");
        let mut w = LogWriter::open(&q, LogLimits { max_size: Some(100), max_file: 1 }).unwrap();
        for i in 0..50 {
            w.write(Stream::Stdout, format!("l{i}\n").as_bytes()).unwrap();
        }
        assert_eq!(files(&q), vec![q.clone()]);
        assert!(std::fs::metadata(&q).unwrap().len() <= 100);
        assert_eq!(lines(&Follower::read_all(&q).unwrap().0).last().unwrap(), "l49");
    }

    #[test]
    fn a_follower_sees_every_line_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        // Polled at least once per rotation, or (with more files kept) after several, it
        // loses nothing: the files rotated in between are read in order.
        for (max_file, every) in [(2, 3), (4, 3), (4, 14)] {
            let p = dir.path().join(format!("ctr{max_file}-{every}.log"));
            let mut w = LogWriter::open(&p, LogLimits { max_size: Some(300), max_file }).unwrap();
            let (start, mut f) = Follower::read_all(&p).unwrap();
            assert!(start.is_empty());
            let mut seen = Vec::new();
            for i in 0..200 {
                w.write(Stream::Stdout, format!("n{i}\n").as_bytes()).unwrap();
                if i % every == 0 {
                    seen.extend(lines(&f.poll().unwrap()));
                }
            }
            seen.extend(lines(&f.poll().unwrap()));
            let want: Vec<String> = (0..200).map(|i| format!("n{i}")).collect();
            assert_eq!(seen, want, "max-file {max_file}, a poll every {every} lines");
        }
        // With one file: polled once per replacement, every line; polled less often, the
        // files replaced in between are gone, but nothing is seen twice, out of order or cut
        // (a file refilled past the follower's position is read from its start), and the
        // newest line arrives.
        for every in [3, 14] {
            let p = dir.path().join(format!("one-{every}.log"));
            let mut w =
                LogWriter::open(&p, LogLimits { max_size: Some(300), max_file: 1 }).unwrap();
            let (_, mut f) = Follower::read_all(&p).unwrap();
            let mut seen = Vec::new();
            for i in 0..200 {
                w.write(Stream::Stdout, format!("{i}\n").as_bytes()).unwrap();
                if i % every == 0 {
                    seen.extend(lines(&f.poll().unwrap()));
                }
            }
            seen.extend(lines(&f.poll().unwrap()));
            let n: Vec<u32> = seen.iter().map(|l| l.parse().unwrap()).collect();
            if every == 3 {
                assert_eq!(n, (0..200).collect::<Vec<u32>>());
            }
            assert!(n.windows(2).all(|w| w[0] < w[1]) && n.last() == Some(&199), "{n:?}");
            assert_eq!(files(&p), vec![p.clone()], "no file left beside the log");
        }
    }
}
