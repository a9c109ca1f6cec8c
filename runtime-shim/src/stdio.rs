//! A process's stdio between containerd and the guest: containerd hands over FIFO paths
//! (or `file://` URIs); each is joined to one raw stdio stream of the agent.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use ironpod_pods::agent_client::{AgentClient, ClientError};
use ironpod_protocol::{ProcessRef, RequestBody, StdioStream};

/// The stdio of a process, as containerd names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Input FIFO ("" for none).
    pub stdin: String,
    /// Output FIFO or `file://` URI ("" for none).
    pub stdout: String,
    /// Error FIFO or `file://` URI ("" for none, and always with a terminal).
    pub stderr: String,
    /// The process has a terminal.
    pub terminal: bool,
}

fn open_output(path: &str) -> io::Result<File> {
    if let Some(p) = path.strip_prefix("file://") {
        return OpenOptions::new().append(true).create(true).open(p);
    }
    if path.contains("://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("stdio URI {path:?}: only FIFOs and file:// are supported"),
        ));
    }
    // A FIFO whose reader containerd holds open already.
    OpenOptions::new().write(true).open(path)
}

fn stream(uds: &Path, p: &ProcessRef, which: StdioStream) -> Result<UnixStream, ClientError> {
    AgentClient::open(uds, Duration::from_secs(30))?
        .into_stream(RequestBody::OpenStdio { process: p.clone(), stream: which })
}

/// The copying threads of one process's stdio.
#[derive(Debug, Default)]
pub struct Pumps {
    /// Output copiers: done when the process's output has reached containerd.
    outputs: Vec<JoinHandle<()>>,
    /// The stdin stream (to close it on CloseIO).
    stdin: Option<UnixStream>,
}

impl Pumps {
    /// Opens the agent streams of `p` that `paths` asks for and starts copying. Call before
    /// the process starts: until then its output waits in the guest.
    pub fn open(
        uds: &Path,
        p: &ProcessRef,
        paths: &StdioPaths,
        with_stdin: bool,
    ) -> Result<Pumps, ClientError> {
        let mut pumps = Pumps::default();
        let outs = [(StdioStream::Stdout, &paths.stdout), (StdioStream::Stderr, &paths.stderr)];
        for (which, path) in outs {
            if path.is_empty() || (paths.terminal && which == StdioStream::Stderr) {
                continue;
            }
            let from = stream(uds, p, which)?;
            let path = path.clone();
            pumps.outputs.push(std::thread::spawn(move || copy_out(from, &path)));
        }
        if with_stdin && !paths.stdin.is_empty() {
            let to = stream(uds, p, StdioStream::Stdin)?;
            pumps.stdin = to.try_clone().ok();
            let path = paths.stdin.clone();
            std::thread::spawn(move || copy_in(&path, to));
        }
        Ok(pumps)
    }

    /// Closes the process's stdin.
    pub fn close_stdin(&mut self) {
        if let Some(s) = self.stdin.take() {
            let _ = s.shutdown(Shutdown::Write);
        }
    }

    /// Waits (up to `timeout`) until all output has been copied.
    pub fn finish(&mut self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        for h in self.outputs.drain(..) {
            while !h.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        self.close_stdin();
    }
}

fn copy_out(mut from: UnixStream, path: &str) {
    let mut to = match open_output(path) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("stdio {path}: {e}");
            return;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    // The reader went away: drain so the process is not blocked.
                    while matches!(from.read(&mut buf), Ok(n) if n > 0) {}
                    return;
                }
            }
        }
    }
}

fn copy_in(path: &str, mut to: UnixStream) {
    // Blocks until containerd (or its client) opens the writing end.
    let mut from = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("stdin {path}: {e}");
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
    };
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_go_to_files_fifos_only() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("out.log");
        let uri = format!("file://{}", f.display());
        open_output(&uri).unwrap().write_all(b"a").unwrap();
        open_output(&uri).unwrap().write_all(b"b").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"ab");
        assert!(open_output("binary:///usr/bin/logger").is_err());
    }

    #[test]
    fn copy_out_delivers_everything() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("o");
        let (mut a, b) = UnixStream::pair().unwrap();
        let path = format!("file://{}", f.display());
        let h = std::thread::spawn(move || copy_out(b, &path));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&data).unwrap();
        drop(a);
        h.join().unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), data);
    }
}
