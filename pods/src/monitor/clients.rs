//! The monitor's clients: the attach socket, the frames to and from attached clients, and
//! the pumps copying the container's output to its log and to them.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use ironpod_protocol::{ProcessRef, RequestBody, StdioStream};

use crate::agent_client::{AgentClient, ClientError};
use crate::attach::{self, Frame};
use crate::logs::{LogWriter, Stream};

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the monitor's threads.
pub(super) struct Shared {
    pub(super) id: String,
    pub(super) clients: Mutex<Vec<UnixStream>>,
    /// The container's stdin stream, once open.
    pub(super) stdin: Mutex<Option<UnixStream>>,
    /// The VM's vsock socket, once the VMM runs.
    pub(super) uds: OnceLock<PathBuf>,
    /// The container has started: resizes and signals can be delivered.
    pub(super) started: std::sync::atomic::AtomicBool,
    /// The program runs (the `Started` frame went out).
    pub(super) running: std::sync::atomic::AtomicBool,
    /// The last terminal size a client sent before the start (applied at the start).
    pub(super) early_size: Mutex<Option<(u16, u16)>>,
    /// Attached clients that asked to hold the VM after the program's end ([`Frame::Hold`]).
    pub(super) holders: Mutex<usize>,
    /// Signalled when a holder goes away.
    pub(super) released: std::sync::Condvar,
}

impl Shared {
    /// Nothing attached, started or held yet, for container `id`.
    pub(super) fn new(id: &str) -> Shared {
        Shared {
            id: id.to_string(),
            clients: Mutex::default(),
            stdin: Mutex::default(),
            uds: OnceLock::new(),
            started: Default::default(),
            running: Default::default(),
            early_size: Mutex::default(),
            holders: Mutex::default(),
            released: Default::default(),
        }
    }

    pub(super) fn broadcast(&self, f: &Frame) {
        lock(&self.clients).retain_mut(|c| attach::write(c, f).is_ok());
    }

    pub(super) fn has_clients(&self) -> bool {
        !lock(&self.clients).is_empty()
    }

    /// After a normal end: tells the clients how it ended with [`Frame::Held`] and waits
    /// until every holder has gone away, the VM has ended (`vm_gone`) or `limit` has passed.
    /// Returns at once when nobody holds.
    pub(super) fn hold(
        &self,
        report: &attach::ExitReport,
        limit: Duration,
        mut vm_gone: impl FnMut() -> bool,
    ) {
        if *lock(&self.holders) == 0 {
            return;
        }
        self.broadcast(&Frame::Held(report.clone()));
        let deadline = std::time::Instant::now() + limit;
        let mut holders = lock(&self.holders);
        while *holders > 0 && std::time::Instant::now() < deadline {
            holders = self
                .released
                .wait_timeout(holders, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if *holders > 0 {
                drop(holders);
                if vm_gone() {
                    return;
                }
                holders = lock(&self.holders);
            }
        }
    }
}

pub(super) fn open_stdio(
    uds: &Path,
    id: &str,
    which: StdioStream,
) -> Result<UnixStream, ClientError> {
    AgentClient::open(uds, Duration::from_secs(30))?
        .into_stream(RequestBody::OpenStdio { process: ProcessRef::init(id), stream: which })
}

/// Copies one output stream of the container to the log and to attached clients.
pub(super) fn pump(
    mut from: UnixStream,
    stream: Stream,
    log: Arc<Mutex<Option<LogWriter>>>,
    sh: Arc<Shared>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if let Some(w) = lock(&log).as_mut() {
                if let Err(e) = w.write(stream, chunk) {
                    eprintln!("ironpod monitor: log write failed: {e}");
                }
            }
            sh.broadcast(&match stream {
                Stream::Stdout => Frame::Stdout(chunk.to_vec()),
                Stream::Stderr => Frame::Stderr(chunk.to_vec()),
            });
        }
    })
}

/// Serves one attached client's input: stdin bytes, terminal size, signals.
/// A holding client counts as a holder until its input ends.
pub(super) fn serve_client(mut c: UnixStream, sh: Arc<Shared>, holds: bool) {
    serve_input(&mut c, &sh);
    if holds {
        *lock(&sh.holders) -= 1;
        sh.released.notify_all();
    }
}

fn serve_input(c: &mut UnixStream, sh: &Shared) {
    let mut ctl: Option<AgentClient> = None;
    while let Ok(Some(f)) = attach::read(c) {
        match f {
            Frame::Stdin(data) => {
                let mut s = lock(&sh.stdin);
                if let Some(w) = s.as_mut() {
                    if w.write_all(&data).is_err() {
                        *s = None;
                    }
                }
            }
            Frame::StdinClose => {
                if let Some(w) = lock(&sh.stdin).take() {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                }
            }
            Frame::Resize { rows, cols }
                if !sh.started.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                *lock(&sh.early_size) = Some((rows, cols));
            }
            Frame::Resize { .. } | Frame::Signal(_) => {
                if ctl.is_none() {
                    ctl = sh
                        .uds
                        .get()
                        .and_then(|u| AgentClient::open(u, Duration::from_secs(10)).ok());
                }
                if let Some(a) = ctl.as_mut() {
                    let p = ProcessRef::init(&sh.id);
                    let _ = match f {
                        Frame::Resize { rows, cols } => a.resize(&p, rows, cols),
                        Frame::Signal(s) => a.signal(&p, s, false),
                        _ => Ok(()),
                    };
                }
            }
            _ => {}
        }
    }
}

pub(super) fn accept_clients(listener: UnixListener, sh: Arc<Shared>) {
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            let mut c = c;
            // A holder says so before its Hello: it counts before the program can start.
            let mut first = attach::read(&mut c);
            let holds = matches!(first, Ok(Some(Frame::Hold)));
            if holds {
                first = attach::read(&mut c);
            }
            if let Ok(Some(Frame::Hello)) = first {
                let Ok(reader) = c.try_clone() else { continue };
                // A client that comes after the start learns it at once.
                let mut clients = lock(&sh.clients);
                if sh.running.load(std::sync::atomic::Ordering::SeqCst)
                    && attach::write(&mut c, &Frame::Started).is_err()
                {
                    continue;
                }
                clients.push(c);
                if holds {
                    *lock(&sh.holders) += 1;
                }
                drop(clients);
                let sh = sh.clone();
                std::thread::spawn(move || serve_client(reader, sh, holds));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared::new("c"))
    }

    fn report() -> attach::ExitReport {
        attach::ExitReport { code: 0, oom_killed: false, error: None }
    }

    #[test]
    fn nobody_holding_returns_at_once() {
        let sh = shared();
        let t = Instant::now();
        sh.hold(&report(), Duration::from_secs(60), || false);
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_holder_is_told_and_kept_until_it_goes() {
        let sh = shared();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let reader = theirs.try_clone().unwrap();
        lock(&sh.clients).push(theirs);
        *lock(&sh.holders) += 1;
        let served = {
            let sh = sh.clone();
            std::thread::spawn(move || serve_client(reader, sh, true))
        };
        let waiter = {
            let sh = sh.clone();
            std::thread::spawn(move || sh.hold(&report(), Duration::from_secs(60), || false))
        };
        assert_eq!(attach::read(&mut ours).unwrap(), Some(Frame::Held(report())));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "released before the holder went");
        ours.shutdown(std::net::Shutdown::Both).unwrap();
        waiter.join().unwrap();
        served.join().unwrap();
        assert_eq!(*lock(&sh.holders), 0);
    }

    #[test]
    fn a_vm_that_ends_releases_the_hold() {
        let sh = shared();
        *lock(&sh.holders) += 1;
        let t = Instant::now();
        sh.hold(&report(), Duration::from_secs(60), || t.elapsed() > Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
