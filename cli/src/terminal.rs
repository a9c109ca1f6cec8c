//! The caller's terminal: raw mode while attached to a container's TTY, its size, and
//! relaying signals (Docker's sig-proxy) to the container.

use std::sync::mpsc;

/// `text` made safe to print on a terminal: control characters (C0 but tab, DEL, C1 —
/// escape sequences a guest could use to rewrite the screen, set the window title or
/// worse) come out as `\x..` / `\u{..}`. For anything that came from a guest (process
/// lists, the agent's error messages); a container's own output streams stay raw, as
/// Docker's do.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(text, false)
}

/// Like [`printable`], keeping line breaks (messages of several lines).
pub fn printable_lines(text: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(text, true)
}

fn escape_controls(text: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        ((c.is_control() && c != '\t') && !(keep_newlines && c == '\n'))
            || ('\u{80}'..='\u{9f}').contains(&c)
    };
    if !text.chars().any(bad) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !bad(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    out.into()
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty takes an integer.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal size of `fd` as (rows, columns).
pub fn size(fd: i32) -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize struct we own.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Raw mode on a terminal; the old mode comes back on drop.
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    /// Switches `fd` to raw mode.
    pub fn enter(fd: i32) -> std::io::Result<Self> {
        // SAFETY: termios is plain data filled by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: t is a valid out pointer.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the struct in place; tcsetattr reads it.
        unsafe {
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes saved at entry.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Signals relayed to the container.
const RELAYED: [i32; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Receives the relayed signals (blocked in this thread and every thread started after).
pub struct SignalRelay {
    rx: mpsc::Receiver<i32>,
}

impl SignalRelay {
    /// Blocks the relayed signals and starts a thread that waits for them.
    pub fn start() -> Self {
        // SAFETY: sigset_t is plain data initialised by sigemptyset.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a valid sigset_t; pthread_sigmask reads it.
        unsafe {
            libc::sigemptyset(&mut set);
            for s in RELAYED {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || loop {
            let mut sig = 0;
            // SAFETY: set and sig are valid for the call.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 && tx.send(sig).is_err() {
                return;
            }
        });
        SignalRelay { rx }
    }
}

impl Iterator for SignalRelay {
    type Item = i32;

    fn next(&mut self) -> Option<i32> {
        self.rx.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn guest_text_cannot_drive_the_terminal() {
        assert_eq!(printable("sh -c 'sleep 1'\tx"), "sh -c 'sleep 1'\tx");
        assert_eq!(printable("ünïcode ok"), "ünïcode ok");
        assert_eq!(printable("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(printable("\r\n\x7f\u{9b}2J"), "\\x0d\\x0a\\x7f\\x9b2J");
        assert_eq!(super::printable_lines("one\ntwo\x1b[2J"), "one\ntwo\\x1b[2J");
    }
}
