//! Where the agent accepts host connections: AF_VSOCK in a guest, a unix socket on a host.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::{log, session};

/// A connected stream from the host.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A listening socket.
pub enum Listener {
    /// Guest side of virtio-vsock.
    Vsock {
        /// The listening socket.
        fd: OwnedFd,
        /// Port number.
        port: u32,
    },
    /// A unix socket (agent run on a host, for tests).
    Unix(UnixListener),
}

/// A vsock stream (plain fd I/O).
pub struct VsockStream(OwnedFd);

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for writes of its length; the fd is open.
        let n = unsafe {
            libc::read(self.0.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for reads of its length; the fd is open.
        let n = unsafe {
            libc::write(self.0.as_raw_fd(), buf.as_ptr() as *const libc::c_void, buf.len())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether a vsock peer is the host (the only side allowed to drive the agent).
fn from_host(peer: &libc::sockaddr_vm) -> bool {
    peer.svm_family == libc::AF_VSOCK as libc::sa_family_t && peer.svm_cid == libc::VMADDR_CID_HOST
}

impl Listener {
    /// Listens on vsock `port` for any CID.
    pub fn vsock(port: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call.
        let raw =
            unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socket returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_vm is plain data.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        // SAFETY: addr is a valid sockaddr_vm of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd is a bound socket.
        if unsafe { libc::listen(fd.as_raw_fd(), 64) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Listener::Vsock { fd, port })
    }

    /// Listens on a unix socket at `path` (replacing a stale socket file).
    pub fn unix(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        Ok(Listener::Unix(UnixListener::bind(path)?))
    }

    /// A description for the log.
    pub fn describe(&self) -> String {
        match self {
            Listener::Vsock { port, .. } => format!("vsock port {port}"),
            Listener::Unix(l) => format!(
                "unix socket {:?}",
                l.local_addr().ok().and_then(|a| a.as_pathname().map(|p| p.to_path_buf()))
            ),
        }
    }

    fn accept(&self) -> io::Result<Box<dyn Stream>> {
        match self {
            Listener::Vsock { fd, .. } => {
                // SAFETY: sockaddr_vm is plain data.
                let mut peer: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
                // SAFETY: the fd is a listening socket; peer/len describe a buffer we own.
                let raw = unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        (&mut peer as *mut libc::sockaddr_vm).cast(),
                        &mut len,
                        libc::SOCK_CLOEXEC,
                    )
                };
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: accept4 returned a new fd that nothing else owns.
                let stream = unsafe { OwnedFd::from_raw_fd(raw) };
                if !from_host(&peer) {
                    // Only the host side drives the agent: not a process of this guest
                    // (local vsock loopback), nor another VM.
                    log::line(&format!("refused a vsock connection from cid {}", peer.svm_cid));
                    return Err(io::Error::from(io::ErrorKind::PermissionDenied));
                }
                Ok(Box::new(VsockStream(stream)))
            }
            Listener::Unix(l) => {
                let (s, _): (UnixStream, _) = l.accept()?;
                Ok(Box::new(s))
            }
        }
    }

    /// Accepts connections forever, one thread per connection.
    pub fn serve(&self, pid1: bool) -> ! {
        loop {
            match self.accept() {
                Ok(stream) => {
                    let spawned = std::thread::Builder::new()
                        .name("session".into())
                        .spawn(move || session::serve(stream, pid1));
                    if let Err(e) = spawned {
                        log::line(&format!("cannot start a session thread: {e}"));
                    }
                }
                // Interrupted, or a peer that is not the host (refused and logged).
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::PermissionDenied
                    ) => {}
                Err(e) => {
                    log::line(&format!("accept failed: {e}"));
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::from_host;

    #[test]
    fn only_the_host_cid_drives_the_agent() {
        // SAFETY: sockaddr_vm is plain data.
        let mut peer: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        peer.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        peer.svm_cid = libc::VMADDR_CID_HOST;
        assert!(from_host(&peer));
        for cid in [libc::VMADDR_CID_LOCAL, 3, 42, libc::VMADDR_CID_ANY] {
            peer.svm_cid = cid;
            assert!(!from_host(&peer), "cid {cid}");
        }
        peer.svm_cid = libc::VMADDR_CID_HOST;
        peer.svm_family = libc::AF_UNIX as libc::sa_family_t;
        assert!(!from_host(&peer));
    }
}
