//! Container logs in the Kubernetes CRI format: one entry per line,
//! `<RFC 3339 nano time> <stdout|stderr> <F|P> <bytes>\n`, where `P` marks a partial line
//! (its bytes continue in the next entry of the same stream). Bytes are written as they
//! came, so binary output survives (a `\n` always ends an entry).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Appends entries to a log file.
pub struct LogWriter {
    file: File,
}

impl LogWriter {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(LogWriter { file: OpenOptions::new().create(true).append(true).open(path)? })
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
            out.extend_from_slice(format!("{ts} {} {tag} ", stream.name()).as_bytes());
            out.extend_from_slice(line);
            out.push(b'\n');
            rest = next;
        }
        self.file.write_all(&out)
    }
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
        let mut w = LogWriter::open(&p).unwrap();
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
}
