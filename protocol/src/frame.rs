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

/// Reads a byte stream sent as frames of raw bytes, an empty frame ending it (the upload of
/// [`crate::RequestBody::WriteArchive`]).
pub struct ChunkReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl<R: Read> ChunkReader<R> {
    /// Reads chunks from `inner`.
    pub fn new(inner: R) -> Self {
        ChunkReader { inner, buf: Vec::new(), pos: 0, ended: false }
    }

    /// Reads and drops what is left up to the end frame, so that the connection can carry
    /// an answer again.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// The connection, once the stream has ended (or was drained).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The connection (to read what follows the end frame).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Whether the end frame has been read.
    pub fn ended(&self) -> bool {
        self.ended && self.pos == self.buf.len()
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.ended {
                return Ok(0);
            }
            self.buf = read_frame(&mut self.inner).map_err(|e| match e {
                FrameError::Io(e) => e,
                e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            })?;
            self.pos = 0;
            self.ended = self.buf.is_empty();
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes a byte stream as frames of at most `chunk` bytes (the download of
/// [`crate::RequestBody::ReadArchive`]); [`ChunkWriter::finish`] sends the empty end frame.
pub struct ChunkWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    chunk: usize,
}

impl<W: Write> ChunkWriter<W> {
    /// Writes frames of at most `chunk` bytes to `inner`.
    pub fn new(inner: W, chunk: usize) -> Self {
        let chunk = chunk.clamp(1, MAX_FRAME);
        ChunkWriter { inner, buf: Vec::with_capacity(chunk), chunk }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(()); // an empty frame would end the stream
        }
        write_frame(&mut self.inner, &self.buf).map_err(|e| match e {
            FrameError::Io(e) => e,
            e => io::Error::other(e.to_string()),
        })?;
        self.buf.clear();
        Ok(())
    }

    /// Sends what is buffered and the end frame; returns the connection.
    pub fn finish(mut self) -> io::Result<W> {
        self.send_buf()?;
        write_frame(&mut self.inner, &[]).map_err(|e| match e {
            FrameError::Io(e) => e,
            e => io::Error::other(e.to_string()),
        })?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// Sends everything `from` reads as frames of at most `chunk` bytes, then the empty end
/// frame. Returns the bytes sent.
pub fn send_chunks<W: Write>(from: &mut impl Read, to: &mut W, chunk: usize) -> io::Result<u64> {
    let mut buf = vec![0u8; chunk.clamp(1, MAX_FRAME)];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let sent = write_frame(to, &buf[..n]).map_err(|e| match e {
            FrameError::Io(e) => e,
            e => io::Error::other(e.to_string()),
        });
        sent?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
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
    fn chunks_carry_a_byte_stream_and_end_with_an_empty_frame() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        assert_eq!(send_chunks(&mut &data[..], &mut wire, 999).unwrap(), 10_000);
        wire.extend_from_slice(b"after");
        let mut r = ChunkReader::new(&wire[..]);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        assert_eq!(first[..], data[..10]);
        r.drain().unwrap();
        assert_eq!(r.into_inner(), b"after");
        let mut r = ChunkReader::new(&wire[..]);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        // Cut short: an error, not a silent end.
        let mut r = ChunkReader::new(&wire[..2000]);
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn a_chunk_writer_frames_what_is_written_as_send_chunks_does() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut w = ChunkWriter::new(Vec::new(), 999);
        for part in data.chunks(333) {
            w.write_all(part).unwrap();
        }
        w.flush().unwrap();
        w.flush().unwrap(); // nothing buffered: no (ending) empty frame
        let mut wire = w.finish().unwrap();
        wire.extend_from_slice(b"after");
        let mut r = ChunkReader::new(&wire[..]);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        assert!(r.ended());
        assert_eq!(r.into_inner(), b"after");
    }

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
