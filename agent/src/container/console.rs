//! A process's terminal made in the container's own devpts (as runc's console socket does),
//! so `tty` and ttyname() inside the container name a `/dev/pts/N` the container can see.
//!
//! The agent starts the child on a carrier terminal of its own; the child, once it sees the
//! container's `/dev/pts`, opens a new terminal there, moves its standard streams onto it and
//! sends the master back on the terminal socket ([`TERMINAL_FD`]). A container without a
//! devpts of its own keeps the carrier.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sendfd::{RecvWithFd, SendWithFd};

/// The fd of the terminal socket in the child (only for processes with a terminal).
pub const TERMINAL_FD: libc::c_int = 4;

/// A terminal opened in a devpts instance.
pub struct Terminal {
    /// The master side (goes back to the agent).
    pub master: OwnedFd,
    /// The slave side (becomes the process's standard streams).
    pub slave: OwnedFd,
    /// The slave's path under the devpts the terminal came from (`DEVPTS/N`).
    pub path: PathBuf,
}

/// Opens a new terminal through `devpts/ptmx`; `Ok(None)` when that devpts has no ptmx.
pub fn open(devpts: &Path) -> io::Result<Option<Terminal>> {
    let ptmx = devpts.join("ptmx");
    let master: OwnedFd = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&ptmx)
    {
        Ok(f) => f.into(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("open {}: {e}", ptmx.display()))),
    };
    let fd = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int that outlives the call.
    if unsafe { libc::ioctl(fd, libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(last("unlock the terminal"));
    }
    let mut index: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int that outlives the call.
    if unsafe { libc::ioctl(fd, libc::TIOCGPTN, &mut index) } != 0 {
        return Err(last("number the terminal"));
    }
    // The peer is opened through the master, never by a path someone could swap.
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd or -1.
    let slave = unsafe {
        libc::ioctl(fd, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
    };
    if slave < 0 {
        return Err(last("open the terminal's peer"));
    }
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok(Some(Terminal { master, slave, path: devpts.join(index.to_string()) }))
}

fn last(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Terminal {
    /// Makes the slave the calling process's fds 0, 1 and 2, owned by the process's user
    /// (as a login terminal is), and sends the master on `socket`.
    pub fn adopt(self, socket: &UnixStream, uid: u32) -> io::Result<()> {
        let slave = self.slave.as_raw_fd();
        // SAFETY: fchown of a terminal we opened; -1 keeps devpts' group.
        if unsafe { libc::fchown(slave, uid, u32::MAX) } != 0 {
            return Err(last("give the terminal to the user"));
        }
        for target in 0..3 {
            // SAFETY: dup2 of an open fd onto a standard stream.
            if unsafe { libc::dup2(slave, target) } < 0 {
                return Err(last("move the standard streams onto the terminal"));
            }
        }
        send_master(socket, Some(&self.master))
    }
}

/// Tells the agent which master to use: `Some` (a new terminal) or `None` (keep the carrier).
pub fn send_master(socket: &UnixStream, master: Option<&OwnedFd>) -> io::Result<()> {
    let fds: Vec<RawFd> = master.iter().map(|m| m.as_raw_fd()).collect();
    socket.send_with_fd(&[u8::from(master.is_some())], &fds).map(drop)
}

/// The agent's side: the master the child sent, or `None` when it kept the carrier (or went
/// away without a word).
pub fn recv_master(socket: &UnixStream) -> io::Result<Option<OwnedFd>> {
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut byte = [0u8; 1];
    let mut fds = [-1 as RawFd; 1];
    let (n, nfds) = socket.recv_with_fd(&mut byte, &mut fds)?;
    if nfds == 0 {
        return Ok(None);
    }
    // SAFETY: recv_with_fd installed a new fd in this process that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    if n == 1 && byte[0] == 1 {
        // SAFETY: plain fcntl on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(Some(fd))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_devpts_keeps_the_carrier() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path()).unwrap().is_none());
    }

    #[test]
    fn a_terminal_opens_and_its_master_travels() {
        // The host's own devpts (skip nothing: every Linux test host has one).
        let t = open(Path::new("/dev/pts")).unwrap().expect("/dev/pts/ptmx exists");
        assert!(t.path.starts_with("/dev/pts"));
        // SAFETY: isatty on an fd we own.
        assert_eq!(unsafe { libc::isatty(t.slave.as_raw_fd()) }, 1);
        let (a, b) = UnixStream::pair().unwrap();
        send_master(&a, Some(&t.master)).unwrap();
        let got = recv_master(&b).unwrap().expect("a master");
        // Writing on the received master reaches the slave.
        let mut m = std::fs::File::from(got);
        io::Write::write_all(&mut m, b"hi\n").unwrap();
        let mut s = std::fs::File::from(t.slave);
        let mut buf = [0u8; 8];
        let n = io::Read::read(&mut s, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\n");
        send_master(&a, None).unwrap();
        assert!(recv_master(&b).unwrap().is_none());
    }
}
