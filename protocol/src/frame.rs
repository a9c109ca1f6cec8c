//! Length-prefixed JSON frames.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame body accepted or sent (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// The stream failed or ended in the middle of a frame.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The body is not valid JSON for the expected message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Reads one frame body. A clean EOF before the first byte is [`FrameError::Closed`].
pub fn read_frame<R: Read>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Writes one frame (length prefix + body) and flushes.
pub fn write_frame<W: Write>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Serializes and sends a message.
pub fn send<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg)?;
    write_frame(w, &body)
}

/// Receives and deserializes a message.
pub fn recv<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let body = read_frame(r)?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{\"a\":1}").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut c = Cursor::new(buf);
        assert_eq!(read_frame(&mut c).unwrap(), b"{\"a\":1}");
        assert_eq!(read_frame(&mut c).unwrap(), b"");
        assert!(matches!(read_frame(&mut c), Err(FrameError::Closed)));
    }

    #[test]
    fn oversized_prefix_refused_without_allocating() {
        let mut c = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        assert!(
            matches!(read_frame(&mut c), Err(FrameError::TooLarge(n)) if n == u32::MAX as usize)
        );
        assert!(matches!(
            write_frame(&mut Vec::new(), &vec![0; MAX_FRAME + 1]),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn truncated_frames_are_errors() {
        let mut c = Cursor::new(vec![0, 0]);
        assert!(matches!(read_frame(&mut c), Err(FrameError::Io(_))));
        let mut c = Cursor::new(vec![0, 0, 0, 10, b'x']);
        assert!(matches!(read_frame(&mut c), Err(FrameError::Io(_))));
    }

    #[test]
    fn garbage_json_is_typed_error() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"\xff\xfe not json").unwrap();
        let r: Result<crate::Request, _> = recv(&mut Cursor::new(buf));
        assert!(matches!(r, Err(FrameError::Malformed(_))));
    }
}
