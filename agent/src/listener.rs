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
                // SAFETY: the fd is a listening socket; the peer address is not needed.
                let raw = unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: accept4 returned a new fd that nothing else owns.
                Ok(Box::new(VsockStream(unsafe { OwnedFd::from_raw_fd(raw) })))
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
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::line(&format!("accept failed: {e}"));
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }
}
