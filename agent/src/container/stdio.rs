//! A process's standard streams: pipes (stdout and stderr apart) or a pseudo-terminal, and
//! the pumps that copy them to and from host connections.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ironpod_protocol::{AgentError, ErrorKind, StdioStream};

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child's ends: what becomes its fds 0, 1 and 2.
pub struct ChildEnds {
    /// fd 0.
    pub stdin: OwnedFd,
    /// fd 1.
    pub stdout: OwnedFd,
    /// fd 2.
    pub stderr: OwnedFd,
}

/// The agent's ends, handed to host streams once each.
pub enum HostEnds {
    /// Separate pipes.
    Pipes {
        /// Write end of the child's stdin (None: /dev/null, or already taken).
        stdin: Option<OwnedFd>,
        /// Read end of stdout.
        stdout: Option<OwnedFd>,
        /// Read end of stderr.
        stderr: Option<OwnedFd>,
    },
    /// A terminal: input and output go through the master.
    Pty {
        /// The master (kept for resizing).
        master: OwnedFd,
        /// Whether input was asked for and not yet taken.
        stdin: bool,
        /// Whether output was not yet taken.
        stdout: bool,
    },
}

/// Creates the streams of a new process.
pub fn create(
    tty: bool,
    with_stdin: bool,
    size: Option<(u16, u16)>,
) -> io::Result<(ChildEnds, HostEnds)> {
    if tty {
        let mut master = -1;
        let mut slave = -1;
        let ws = size.map(|(rows, cols)| libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        // SAFETY: master/slave are valid out pointers; name is NULL; termios NULL; winsize
        // NULL or a valid struct.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                ws.as_ref().map(|w| w as *const libc::winsize).unwrap_or(std::ptr::null()),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openpty returned two new fds that nothing else owns.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // SAFETY: plain fcntl on an fd we own.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        let child =
            ChildEnds { stdin: slave.try_clone()?, stdout: slave.try_clone()?, stderr: slave };
        return Ok((child, HostEnds::Pty { master, stdin: with_stdin, stdout: true }));
    }
    let (stdin_child, stdin_host) = if with_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        (File::open("/dev/null")?.into(), None)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    Ok((
        ChildEnds { stdin: stdin_child, stdout: out_w, stderr: err_w },
        HostEnds::Pipes { stdin: stdin_host, stdout: Some(out_r), stderr: Some(err_r) },
    ))
}

impl HostEnds {
    /// Takes the agent's end of one stream (each can be taken once).
    pub fn take(&mut self, which: StdioStream) -> Result<OwnedFd, AgentError> {
        let gone = || {
            AgentError::new(
                ErrorKind::InvalidState,
                format!("{which:?} is not available (not requested, or already attached)"),
            )
        };
        match self {
            HostEnds::Pipes { stdin, stdout, stderr } => match which {
                StdioStream::Stdin => stdin.take(),
                StdioStream::Stdout => stdout.take(),
                StdioStream::Stderr => stderr.take(),
            }
            .ok_or_else(gone),
            HostEnds::Pty { master, stdin, stdout } => {
                let flag = match which {
                    StdioStream::Stdin => stdin,
                    StdioStream::Stdout => stdout,
                    StdioStream::Stderr => {
                        return Err(AgentError::new(
                            ErrorKind::InvalidState,
                            "a process with a TTY has no separate stderr",
                        ))
                    }
                };
                if !*flag {
                    return Err(gone());
                }
                *flag = false;
                master.try_clone().map_err(AgentError::from)
            }
        }
    }

    /// Drops the stdin end if it was never attached (the process sees EOF).
    pub fn close_stdin(&mut self) {
        match self {
            HostEnds::Pipes { stdin, .. } => {
                stdin.take();
            }
            HostEnds::Pty { stdin, .. } => *stdin = false,
        }
    }

    /// Swaps the terminal for another (the one the process made in its container), sized
    /// as asked; the carrier's master closes.
    pub fn replace_master(
        &mut self,
        new: OwnedFd,
        size: Option<(u16, u16)>,
    ) -> Result<(), AgentError> {
        let HostEnds::Pty { master, .. } = self else {
            return Err(AgentError::new(ErrorKind::InvalidState, "the process has no TTY"));
        };
        *master = new;
        match size {
            Some((rows, cols)) => self.resize(rows, cols),
            None => Ok(()),
        }
    }

    /// Sets the terminal size.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), AgentError> {
        let HostEnds::Pty { master, .. } = self else {
            return Err(AgentError::new(ErrorKind::InvalidState, "the process has no TTY"));
        };
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize struct that outlives the call.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }
}

/// Copies a process's output to the host until the output ends (all writers closed, or the
/// terminal hung up) or the host goes away.
pub fn pump_out(fd: OwnedFd, host: &mut dyn Write) {
    let mut src = File::from(fd);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if host.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EIO: the terminal's last slave closed.
            Err(_) => return,
        }
    }
}

/// Copies host input to a process until the host closes its stream (the process then sees
/// EOF) or the process stops reading.
pub fn pump_in(host: &mut dyn Read, fd: OwnedFd, tty: bool) {
    let mut dst = File::from(fd);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match host.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if dst.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if tty {
        // A terminal has no EOF of its own: send the EOF character, as a typed ^D would.
        let _ = dst.write_all(&[4]);
    }
}
