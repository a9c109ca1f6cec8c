//! The host side of the agent protocol, over the VMM's hybrid vsock unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ironpod_protocol::{
    self as proto, AgentError, FrameError, GuestInfo, Hello, HelloReply, ProcessRef, Request,
    RequestBody, Response, ResponseBody, PROTOCOL_VERSION,
};

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket-level failure.
    #[error("I/O error talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    /// Framing or decoding failure.
    #[error("agent connection: {0}")]
    Frame(#[from] FrameError),
    /// The VMM refused the vsock connection (nothing listening on that guest port yet).
    #[error("the guest refused vsock port {0}")]
    Refused(u32),
    /// The agent answered with an error.
    #[error("agent error: {0}")]
    Agent(#[from] AgentError),
    /// The agent answered something that does not fit the request.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out after {0:?} waiting for the agent")]
    Timeout(Duration),
    /// The VM went away while we waited.
    #[error("the VMM exited before the agent answered{0}")]
    VmGone(String),
}

/// Opens one stream to guest port `port` through the hybrid socket at `uds`.
pub fn connect_hybrid(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, ClientError> {
    let mut s = UnixStream::connect(uds)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Read the reply line byte by byte: anything after it belongs to the guest stream.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match s.read(&mut byte) {
            Ok(0) => return Err(ClientError::Refused(port)),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::Timeout(timeout))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let text = String::from_utf8_lossy(&line);
    if !text.starts_with("OK ") {
        return Err(ClientError::Protocol(format!("unexpected vsock reply {text:?}")));
    }
    Ok(s)
}

/// A session with the agent.
#[derive(Debug)]
pub struct AgentClient {
    stream: UnixStream,
    next_id: u64,
    agent_version: String,
}

impl AgentClient {
    /// Connects (retrying while the guest boots, for as long as `alive` says the VM is
    /// running and `deadline` is not reached) and performs the handshake.
    pub fn connect(
        uds: &Path,
        port: u32,
        deadline: Instant,
        mut alive: impl FnMut() -> Result<(), String>,
    ) -> Result<Self, ClientError> {
        loop {
            alive().map_err(ClientError::VmGone)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(Duration::ZERO));
            }
            match connect_hybrid(uds, port, left.min(Duration::from_secs(10))) {
                Ok(stream) => return Self::handshake(stream),
                Err(ClientError::Refused(_)) | Err(ClientError::Io(_)) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                // A guest too busy to take the connection in time: again, to the deadline.
                Err(ClientError::Timeout(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Performs the handshake on an open stream.
    pub fn handshake(mut stream: UnixStream) -> Result<Self, ClientError> {
        proto::send(
            &mut stream,
            &Hello { protocol_version: PROTOCOL_VERSION, client: "ironpod".into() },
        )?;
        match proto::recv::<_, HelloReply>(&mut stream)? {
            HelloReply::Ok { protocol_version, agent_version }
                if protocol_version == PROTOCOL_VERSION =>
            {
                Ok(AgentClient { stream, next_id: 1, agent_version })
            }
            HelloReply::Ok { protocol_version, .. } => Err(ClientError::Protocol(format!(
                "agent speaks protocol {protocol_version}, we speak {PROTOCOL_VERSION}"
            ))),
            HelloReply::Err(e) => Err(e.into()),
        }
    }

    /// The agent's version from the handshake.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// Opens one more session to an agent that is known to be up. A refusal is retried for
    /// up to two seconds: a running agent refuses only in passing (its listener is made anew
    /// after a restore from a template), and a VM that is gone fails at once (the socket).
    pub fn open(uds: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let retry_until = Instant::now() + timeout.min(Duration::from_secs(2));
        let stream = loop {
            match connect_hybrid(uds, proto::AGENT_VSOCK_PORT, timeout) {
                Err(ClientError::Refused(_)) if Instant::now() < retry_until => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let mut c = Self::handshake(stream)?;
        c.set_timeout(timeout)?;
        Ok(c)
    }

    /// Sets the timeout of every later request.
    pub fn set_timeout(&mut self, t: Duration) -> Result<(), ClientError> {
        self.stream.set_read_timeout(Some(t))?;
        self.stream.set_write_timeout(Some(t))?;
        Ok(())
    }

    /// Sends a request and waits for its response.
    pub fn call(&mut self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        let id = self.send_request(body)?;
        self.read_response(id)
    }

    /// Sends a request without waiting; returns its id for [`Self::read_response`]. The
    /// agent answers a session's requests in order.
    pub fn send_request(&mut self, body: RequestBody) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        proto::send(&mut self.stream, &Request { id, body })?;
        Ok(id)
    }

    /// Reads the response to request `id` (sent with [`Self::send_request`]).
    pub fn read_response(&mut self, id: u64) -> Result<ResponseBody, ClientError> {
        let resp: Response = proto::recv(&mut self.stream).map_err(|e| match e {
            FrameError::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                ClientError::Timeout(self.stream.read_timeout().ok().flatten().unwrap_or_default())
            }
            e => e.into(),
        })?;
        // Id 0 is how the agent answers a request it could not even parse.
        if resp.id != id && !(resp.id == 0 && matches!(resp.result, proto::Outcome::Err(_))) {
            return Err(ClientError::Protocol(format!("response id {} for request {id}", resp.id)));
        }
        Ok(Result::<ResponseBody, AgentError>::from(resp.result)?)
    }

    /// Round-trips a ping.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        let nonce = std::process::id() as u64 ^ self.next_id.rotate_left(17);
        match self.call(RequestBody::Ping { nonce })? {
            ResponseBody::Pong { nonce: n } if n == nonce => Ok(()),
            other => Err(ClientError::Protocol(format!("bad ping reply {other:?}"))),
        }
    }

    /// Tells a guest restored from a snapshot to part from its other clones: fresh host
    /// entropy for its random generator (reseeded at once) and the host's time of day.
    pub fn restored(&mut self, trace: bool) -> Result<(), ClientError> {
        let mut entropy = vec![0u8; ironpod_protocol::RESEED_BYTES];
        // SAFETY: getrandom(2) writes at most `entropy.len()` bytes into `entropy`.
        let n = unsafe { libc::getrandom(entropy.as_mut_ptr().cast(), entropy.len(), 0) };
        if n != entropy.len() as isize {
            return Err(ClientError::Io(std::io::Error::last_os_error()));
        }
        let unix_time_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        match self.call(RequestBody::Restored { entropy, unix_time_ns, trace })? {
            ResponseBody::Done => Ok(()),
            other => Err(ClientError::Protocol(format!("bad restored reply {other:?}"))),
        }
    }

    /// Facts about the guest.
    pub fn info(&mut self) -> Result<GuestInfo, ClientError> {
        match self.call(RequestBody::Info)? {
            ResponseBody::Info(i) => Ok(i),
            other => Err(ClientError::Protocol(format!("bad info reply {other:?}"))),
        }
    }

    /// Mounts a filesystem in the guest.
    pub fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        read_only: bool,
    ) -> Result<(), ClientError> {
        self.mount_with(source, target, fstype, read_only, None)
    }

    /// Like [`Self::mount`], with filesystem options (mount(2) data, e.g. `size=64m`).
    pub fn mount_with(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        read_only: bool,
        options: Option<&str>,
    ) -> Result<(), ClientError> {
        let body = RequestBody::Mount {
            source: source.into(),
            target: target.into(),
            fstype: fstype.into(),
            read_only,
            options: options.map(str::to_string),
        };
        self.expect_done(body)
    }

    /// Reads a whole guest file (in chunks).
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.read_file_upto(path, u64::MAX)
    }

    /// Reads a guest file (in chunks), at most `limit` bytes and one more: a longer file
    /// comes back `limit + 1` bytes long (the guest decides how large its files are).
    pub fn read_file_upto(&mut self, path: &str, limit: u64) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        loop {
            let left = limit.saturating_add(1).saturating_sub(out.len() as u64);
            let body = RequestBody::ReadFile {
                path: path.into(),
                offset: out.len() as u64,
                max_len: left.min(u64::from(proto::MAX_READ)) as u32,
            };
            match self.call(body)? {
                ResponseBody::Data { mut data, eof } => {
                    data.truncate(left.min(usize::MAX as u64) as usize);
                    out.extend_from_slice(&data);
                    if eof || data.is_empty() || out.len() as u64 > limit {
                        return Ok(out);
                    }
                }
                other => return Err(ClientError::Protocol(format!("bad read reply {other:?}"))),
            }
        }
    }

    /// Writes a guest file.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), ClientError> {
        self.expect_done(RequestBody::WriteFile {
            path: path.into(),
            data: data.to_vec(),
            append: false,
            attrs: None,
        })
    }

    /// Writes a guest file with permission bits and an owner (set even if it exists).
    pub fn write_file_with(
        &mut self,
        path: &str,
        data: &[u8],
        attrs: proto::FileAttrs,
    ) -> Result<(), ClientError> {
        self.expect_done(RequestBody::WriteFile {
            path: path.into(),
            data: data.to_vec(),
            append: false,
            attrs: Some(attrs),
        })
    }

    /// Asks the agent to end the VM.
    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        self.expect_done(RequestBody::Shutdown)
    }

    /// Creates a container and its stopped init process; returns the guest pid.
    pub fn create_container(&mut self, req: proto::CreateContainer) -> Result<i32, ClientError> {
        self.expect_created(RequestBody::CreateContainer(req))
    }

    /// Creates a stopped extra process in a container; returns the guest pid.
    pub fn exec(&mut self, req: proto::ExecProcess) -> Result<i32, ClientError> {
        self.expect_created(RequestBody::ExecProcess(req))
    }

    /// Starts a created process.
    pub fn start(&mut self, p: &ProcessRef) -> Result<(), ClientError> {
        self.expect_done(RequestBody::StartProcess(p.clone()))
    }

    /// Waits for a process to exit (set a long timeout first).
    pub fn wait(&mut self, p: &ProcessRef) -> Result<proto::ExitStatus, ClientError> {
        let id = self.begin_wait(p)?;
        self.end_wait(id)
    }

    /// Asks to wait for a process to exit; [`Self::end_wait`] reads the answer, so the
    /// caller can do other work meanwhile (not on this session).
    pub fn begin_wait(&mut self, p: &ProcessRef) -> Result<u64, ClientError> {
        self.send_request(RequestBody::WaitProcess(p.clone()))
    }

    /// The exit status asked for with [`Self::begin_wait`] (set a long timeout first).
    pub fn end_wait(&mut self, id: u64) -> Result<proto::ExitStatus, ClientError> {
        match self.read_response(id)? {
            ResponseBody::Exited(s) => Ok(s),
            other => Err(ClientError::Protocol(format!("bad wait reply {other:?}"))),
        }
    }

    /// Sends a signal to a process, or to every process of its container.
    pub fn signal(&mut self, p: &ProcessRef, signal: i32, all: bool) -> Result<(), ClientError> {
        self.expect_done(RequestBody::Signal { process: p.clone(), signal, all, group: false })
    }

    /// Sends a signal to a process's group: it and what it started and left behind (also
    /// once it exited).
    pub fn signal_group(&mut self, p: &ProcessRef, signal: i32) -> Result<(), ClientError> {
        self.expect_done(RequestBody::Signal {
            process: p.clone(),
            signal,
            all: false,
            group: true,
        })
    }

    /// Resizes a process's terminal.
    pub fn resize(&mut self, p: &ProcessRef, rows: u16, cols: u16) -> Result<(), ClientError> {
        self.expect_done(RequestBody::ResizePty { process: p.clone(), rows, cols })
    }

    /// A container's processes.
    pub fn processes(&mut self, container: &str) -> Result<Vec<proto::ProcessInfo>, ClientError> {
        match self.call(RequestBody::ListProcesses { container: container.into() })? {
            ResponseBody::Processes(p) => Ok(p),
            other => Err(ClientError::Protocol(format!("bad process list {other:?}"))),
        }
    }

    /// A container's resource use.
    pub fn stats(&mut self, container: &str) -> Result<proto::ContainerStats, ClientError> {
        match self.call(RequestBody::Stats { container: container.into() })? {
            ResponseBody::Stats(s) => Ok(s),
            other => Err(ClientError::Protocol(format!("bad stats reply {other:?}"))),
        }
    }

    /// Freezes or thaws every process of a container.
    pub fn freeze(&mut self, container: &str, frozen: bool) -> Result<(), ClientError> {
        self.call(RequestBody::Freeze { container: container.into(), frozen }).map(|_| ())
    }

    /// Changes a container's resource limits.
    pub fn update_resources(
        &mut self,
        container: &str,
        resources: oci_spec::runtime::LinuxResources,
    ) -> Result<(), ClientError> {
        self.call(RequestBody::UpdateResources {
            container: container.into(),
            resources: Box::new(resources),
        })
        .map(|_| ())
    }

    /// Writes the container's changes as a layer tar in the guest.
    pub fn commit(&mut self, container: &str) -> Result<proto::CommitResult, ClientError> {
        match self.call(RequestBody::Commit { container: container.into() })? {
            ResponseBody::Committed(c) => Ok(c),
            other => Err(ClientError::Protocol(format!("bad commit reply {other:?}"))),
        }
    }

    /// Forgets an exec'd process that has exited.
    pub fn release(&mut self, p: &ProcessRef) -> Result<(), ClientError> {
        self.expect_done(RequestBody::ReleaseProcess(p.clone()))
    }

    /// Facts about a path in a container.
    pub fn stat_path(
        &mut self,
        container: &str,
        path: &str,
    ) -> Result<proto::PathStat, ClientError> {
        let body = RequestBody::StatPath { container: container.into(), path: path.into() };
        match self.call(body)? {
            ResponseBody::PathStat(s) => Ok(s),
            other => Err(ClientError::Protocol(format!("bad stat reply {other:?}"))),
        }
    }

    /// How a container's files differ from its image.
    pub fn changes(&mut self, container: &str) -> Result<Vec<proto::Change>, ClientError> {
        match self.call(RequestBody::Changes { container: container.into() })? {
            ResponseBody::Changes(c) => Ok(c),
            other => Err(ClientError::Protocol(format!("bad changes reply {other:?}"))),
        }
    }

    /// Extracts the tar that `tar` reads into a directory of a container: the request, the
    /// tar in chunks, then the agent's verdict.
    pub fn write_archive(
        mut self,
        req: proto::WriteArchive,
        tar: &mut impl std::io::Read,
    ) -> Result<(), ClientError> {
        self.expect_done(RequestBody::WriteArchive(req))?;
        let id = self.next_id - 1;
        proto::send_chunks(tar, &mut self.stream, proto::ARCHIVE_CHUNK)?;
        match self.read_response(id)? {
            ResponseBody::Done => Ok(()),
            other => Err(ClientError::Protocol(format!("bad archive reply {other:?}"))),
        }
    }

    /// A tar of `path` in a container: read it to its end; a tar the agent could not
    /// finish ends in an error, never as if it were whole.
    pub fn read_archive(
        mut self,
        container: &str,
        path: &str,
    ) -> Result<ArchiveReader, ClientError> {
        let body = RequestBody::ReadArchive { container: container.into(), path: path.into() };
        self.expect_done(body)?;
        let id = self.next_id - 1;
        self.stream.set_read_timeout(None)?;
        self.stream.set_write_timeout(None)?;
        let chunks = proto::ChunkReader::new(self.stream.try_clone()?);
        Ok(ArchiveReader { chunks, client: self, id, finished: false })
    }

    /// Removes a guest file.
    pub fn remove_file(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect_done(RequestBody::RemoveFile { path: path.into() })
    }

    /// Makes a guest symbolic link at `path` to `target`.
    pub fn symlink(&mut self, target: &str, path: &str) -> Result<(), ClientError> {
        self.expect_done(RequestBody::Symlink { target: target.into(), path: path.into() })
    }

    /// Renames a guest file (replacing `to` in one step).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), ClientError> {
        self.expect_done(RequestBody::Rename { from: from.into(), to: to.into() })
    }

    /// Makes a directory (and its parents) in the guest, with `attrs` on the last one.
    pub fn make_dir(
        &mut self,
        path: &str,
        attrs: Option<proto::FileAttrs>,
    ) -> Result<(), ClientError> {
        self.expect_done(RequestBody::MakeDir { path: path.into(), attrs })
    }

    /// Removes a guest directory and everything in it.
    pub fn remove_tree(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect_done(RequestBody::RemoveTree { path: path.into() })
    }

    /// Configures the pod's network cards in the guest.
    pub fn configure_network(
        &mut self,
        cfg: &ironpod_protocol::NetworkConfig,
    ) -> Result<(), ClientError> {
        self.expect_done(RequestBody::ConfigureNetwork(cfg.clone()))
    }

    /// Unmounts a layer disk no container uses, so it can be detached.
    pub fn release_disk(&mut self, serial: &str) -> Result<(), ClientError> {
        self.expect_done(RequestBody::ReleaseDisk { serial: serial.into() })
    }

    /// Kills a container's processes and takes it apart.
    pub fn delete_container(&mut self, container: &str, discard: bool) -> Result<(), ClientError> {
        self.expect_done(RequestBody::DeleteContainer {
            container: container.into(),
            discard_changes: discard,
        })
    }

    /// Turns this session into a raw stream: one stdio stream of a process, or a file's
    /// bytes (`OpenStdio` / `OpenFile`).
    pub fn into_stream(mut self, body: RequestBody) -> Result<UnixStream, ClientError> {
        self.expect_done(body)?;
        self.stream.set_read_timeout(None)?;
        self.stream.set_write_timeout(None)?;
        Ok(self.stream)
    }

    fn expect_created(&mut self, body: RequestBody) -> Result<i32, ClientError> {
        match self.call(body)? {
            ResponseBody::Created { pid } => Ok(pid),
            other => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// Sends all the requests at once, then reads every answer (one round trip instead of
    /// one each); each must be `Done`. The first failure is returned.
    pub fn expect_all_done(&mut self, bodies: Vec<RequestBody>) -> Result<(), ClientError> {
        let mut ids = Vec::with_capacity(bodies.len());
        for b in bodies {
            ids.push(self.send_request(b)?);
        }
        let mut first_err = None;
        for id in ids {
            let r = match self.read_response(id) {
                Ok(ResponseBody::Done) => Ok(()),
                Ok(other) => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
                Err(e @ ClientError::Agent(_)) => Err(e),
                // Anything but the agent's refusal leaves the session out of step: stop.
                Err(e) => return Err(e),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn expect_done(&mut self, body: RequestBody) -> Result<(), ClientError> {
        match self.call(body)? {
            ResponseBody::Done => Ok(()),
            other => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }
}

/// A tar from [`AgentClient::read_archive`]: its bytes, then the agent's last word.
pub struct ArchiveReader {
    chunks: proto::ChunkReader<UnixStream>,
    client: AgentClient,
    id: u64,
    finished: bool,
}

impl Read for ArchiveReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunks.read(out)?;
        if n == 0 && !out.is_empty() && !self.finished {
            self.finished = true;
            match self.client.read_response(self.id) {
                Ok(ResponseBody::Done) => {}
                Ok(other) => {
                    let msg = format!("unexpected reply after the tar: {other:?}");
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
                }
                Err(e) => return Err(std::io::Error::other(format!("the tar is cut short: {e}"))),
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake VMM socket: answers CONNECT to port 1024 with OK and then plays a tiny agent;
    /// any other port is refused (closed).
    fn fake_vmm(path: &Path) -> std::thread::JoinHandle<()> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                    line.push(b[0]);
                }
                if line != b"CONNECT 1024" {
                    continue;
                }
                s.write_all(b"OK 1073741824\n").unwrap();
                let _: Hello = proto::recv(&mut s).unwrap();
                proto::send(
                    &mut s,
                    &HelloReply::Ok {
                        protocol_version: PROTOCOL_VERSION,
                        agent_version: "9.9".into(),
                    },
                )
                .unwrap();
                while let Ok(req) = proto::recv::<_, Request>(&mut s) {
                    let result = match req.body {
                        RequestBody::Ping { nonce } => ResponseBody::Pong { nonce },
                        // A hostile guest: a 1 MiB file, sent in pieces larger than asked.
                        RequestBody::ReadFile { offset, max_len, .. } => {
                            let left = (1u64 << 20).saturating_sub(offset) as usize;
                            let n = left.min(max_len as usize + 100);
                            ResponseBody::Data { data: vec![7; n], eof: n == left }
                        }
                        RequestBody::Shutdown => ResponseBody::Done,
                        _ => ResponseBody::Done,
                    };
                    let last = matches!(result, ResponseBody::Done);
                    proto::send(&mut s, &Response { id: req.id, result: Ok(result).into() })
                        .unwrap();
                    if last {
                        return;
                    }
                }
            }
        })
    }

    #[test]
    fn connect_handshake_ping_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("v.sock");
        let t = fake_vmm(&sock);
        assert!(matches!(
            connect_hybrid(&sock, 5, Duration::from_secs(2)),
            Err(ClientError::Refused(5))
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = AgentClient::connect(&sock, 1024, deadline, || Ok(())).unwrap();
        assert_eq!(c.agent_version(), "9.9");
        c.ping().unwrap();
        // A guest file read with a limit stops one byte past it, whatever the guest sends.
        assert_eq!(c.read_file_upto("/f", 1000).unwrap().len(), 1001);
        assert_eq!(c.read_file_upto("/f", 0).unwrap().len(), 1);
        assert_eq!(c.read_file("/f").unwrap().len(), 1 << 20);
        c.shutdown().unwrap();
        t.join().unwrap();
    }

    #[test]
    fn gives_up_when_vm_dies_or_deadline_passes() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let e = AgentClient::connect(&sock, 1024, Instant::now() + Duration::from_secs(5), || {
            Err(" (status 1)".into())
        })
        .unwrap_err();
        assert!(matches!(e, ClientError::VmGone(_)), "{e}");
        let e = AgentClient::connect(
            &sock,
            1024,
            Instant::now() + Duration::from_millis(50),
            || Ok(()),
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::Timeout(_)), "{e}");
    }
}
