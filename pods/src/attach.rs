//! The attach protocol between a pod monitor and `ironpod run` / `ironpod attach`: frames of
//! `kind (1 byte) | length (4 bytes, big-endian) | payload` on the monitor's unix socket.
//! Output is multiplexed (stdout and stderr stay apart), input, terminal size and signals
//! flow back, and the last frame tells how the container ended.

use std::io::{self, Read, Write};

/// Largest payload accepted.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → monitor, first: start the container if it waits for its attach.
    Hello,
    /// Client → monitor: input bytes.
    Stdin(Vec<u8>),
    /// Client → monitor: end of input.
    StdinClose,
    /// Client → monitor: terminal size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Client → monitor: deliver a signal to the container's process.
    Signal(i32),
    /// Client → monitor, before its `Hello`: when the agent reports the program's end
    /// (with any exit code), keep the pod's VM (and the container's files in it) up until
    /// this client goes away, the VM ends, a user stops the container, or 30 minutes pass;
    /// the clients hear [`Frame::Held`] then, `Exit` after (what a build's RUN step does to
    /// read its changes without booting a second VM).
    Hold,
    /// Monitor → client: output.
    Stdout(Vec<u8>),
    /// Monitor → client: error output.
    Stderr(Vec<u8>),
    /// Monitor → client: the program runs.
    Started,
    /// Monitor → client: the container ended (all output was sent before).
    Exit(ExitReport),
    /// Monitor → client: the program ended (all output was sent before) and the VM waits
    /// for its holders to go away before it is taken down.
    Held(ExitReport),
}

/// How a container ended, as the attach client learns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitReport {
    /// Exit code (Docker's: 125 runtime error, 126 cannot execute, 127 not found).
    pub code: i32,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
    /// What went wrong, when the runtime failed rather than the program.
    pub error: Option<String>,
}

const HELLO: u8 = 0;
const STDIN: u8 = 1;
const STDIN_CLOSE: u8 = 2;
const RESIZE: u8 = 3;
const SIGNAL: u8 = 4;
const HOLD: u8 = 5;
const STDOUT: u8 = 10;
const STDERR: u8 = 11;
const STARTED: u8 = 12;
const EXIT: u8 = 13;
const HELD: u8 = 14;

/// Writes one frame.
pub fn write<W: Write>(w: &mut W, f: &Frame) -> io::Result<()> {
    let (kind, payload): (u8, Vec<u8>) = match f {
        Frame::Hello => (HELLO, vec![]),
        Frame::Stdin(d) => (STDIN, d.clone()),
        Frame::StdinClose => (STDIN_CLOSE, vec![]),
        Frame::Resize { rows, cols } => (RESIZE, [rows.to_be_bytes(), cols.to_be_bytes()].concat()),
        Frame::Signal(s) => (SIGNAL, s.to_be_bytes().to_vec()),
        Frame::Hold => (HOLD, vec![]),
        Frame::Stdout(d) => (STDOUT, d.clone()),
        Frame::Stderr(d) => (STDERR, d.clone()),
        Frame::Started => (STARTED, vec![]),
        Frame::Exit(r) => (EXIT, serde_json::to_vec(r).map_err(io::Error::other)?),
        Frame::Held(r) => (HELD, serde_json::to_vec(r).map_err(io::Error::other)?),
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "attach frame too large"));
    }
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(kind);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&payload);
    w.write_all(&buf)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read<R: Read>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(bad("attach frame too large"));
    }
    let mut p = vec![0u8; len];
    r.read_exact(&mut p)?;
    Ok(Some(match head[0] {
        HELLO => Frame::Hello,
        STDIN => Frame::Stdin(p),
        STDIN_CLOSE => Frame::StdinClose,
        RESIZE if len == 4 => Frame::Resize {
            rows: u16::from_be_bytes([p[0], p[1]]),
            cols: u16::from_be_bytes([p[2], p[3]]),
        },
        SIGNAL if len == 4 => Frame::Signal(i32::from_be_bytes([p[0], p[1], p[2], p[3]])),
        HOLD if len == 0 => Frame::Hold,
        STDOUT => Frame::Stdout(p),
        STDERR => Frame::Stderr(p),
        STARTED => Frame::Started,
        EXIT => Frame::Exit(serde_json::from_slice(&p).map_err(|_| bad("bad exit report"))?),
        HELD => Frame::Held(serde_json::from_slice(&p).map_err(|_| bad("bad exit report"))?),
        _ => return Err(bad("unknown attach frame")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frames = vec![
            Frame::Hello,
            Frame::Stdin(vec![0, 1, 255]),
            Frame::StdinClose,
            Frame::Resize { rows: 40, cols: 120 },
            Frame::Signal(15),
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(vec![]),
            Frame::Started,
            Frame::Exit(ExitReport { code: 7, oom_killed: false, error: Some("x".into()) }),
            Frame::Hold,
            Frame::Held(ExitReport { code: 0, oom_killed: false, error: None }),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            write(&mut buf, f).unwrap();
        }
        let mut r = &buf[..];
        for f in &frames {
            assert_eq!(read(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(read(&mut r).unwrap(), None);
    }

    #[test]
    fn hostile_frames() {
        for bytes in [
            vec![99u8, 0, 0, 0, 0],
            vec![10, 0xff, 0xff, 0xff, 0xff],
            vec![3, 0, 0, 0, 1, 0],
            vec![13, 0, 0, 0, 1, b'{'],
            vec![10, 0, 0, 0, 5, 1],
        ] {
            assert!(read(&mut &bytes[..]).is_err(), "{bytes:?}");
        }
    }
}
