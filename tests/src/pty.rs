//! A terminal for tests of interactive commands (`run -it`, `exec -it`): a pseudo-terminal
//! whose slave side becomes the command's controlling terminal and standard streams, and
//! whose master side the test reads and types into.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The test's side of a terminal and what it has shown so far.
pub struct Terminal {
    master: OwnedFd,
    rx: mpsc::Receiver<Vec<u8>>,
    /// Everything the terminal showed until now.
    pub seen: String,
}

impl Terminal {
    /// Starts `cmd` on a new terminal of `rows` × `cols` (its session's controlling
    /// terminal and its standard streams).
    pub fn spawn(cmd: &mut Command, rows: u16, cols: u16) -> (Terminal, Child) {
        let (mut m, mut s) = (-1, -1);
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: valid out pointers; NULL name and termios; ws outlives the call.
        let rc =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two descriptors that we now own.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let fd = slave.as_raw_fd();
        // SAFETY: setsid and ioctl are async-signal-safe; the slave becomes the controlling
        // terminal of the child's new session.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                libc::setsid();
                libc::ioctl(fd, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let mut f = std::fs::File::from(master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        (Terminal { master, rx, seen: String::new() }, child)
    }

    /// Waits until the terminal has shown `needle`.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {needle:?}; terminal showed {:?}",
                self.seen
            );
            if let Ok(chunk) = self.rx.recv_timeout(left) {
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        }
    }

    /// Types `bytes`.
    pub fn type_in(&self, bytes: &[u8]) {
        std::fs::File::from(self.master.try_clone().unwrap()).write_all(bytes).unwrap();
    }

    /// Resizes the terminal (its session gets SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads ws, which outlives the call.
        unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}
