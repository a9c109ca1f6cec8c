//! The zygote: a copy of the agent forked at boot, while the agent is still one thread, that
//! forks container children on request. A fork of a single-threaded process may go on
//! running Rust code, so a child made here runs [`super::child::main`] at once; the agent
//! itself (many threads by then) could only fork to execute a program, and re-executing the
//! agent binary costs a program load, runtime start-up and page faults on every start —
//! ~0.1 s under nested virtualization. If the zygote is gone, launches fall back to that.
//!
//! Protocol: the agent sends one datagram per child with four descriptors attached (the
//! child's stdin, stdout, stderr and sync socket); the child gets them as fds 0–3, exactly
//! what `--container-init` gets.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::{Mutex, OnceLock};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::child::SYNC_FD;

/// The agent's end of the zygote socket (None when the zygote could not start or died).
static ZYGOTE: OnceLock<Mutex<Option<UnixDatagram>>> = OnceLock::new();

/// Forks the zygote. Must be called while the agent runs a single thread.
pub fn start() {
    let (ours, theirs) = match UnixDatagram::pair() {
        Ok(p) => p,
        Err(e) => {
            crate::log::line(&format!("zygote: socketpair: {e}"));
            return;
        }
    };
    // SAFETY: the caller guarantees a single thread: the child is a complete copy.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        crate::log::line(&format!("zygote: fork: {}", std::io::Error::last_os_error()));
        return;
    }
    if pid == 0 {
        drop(ours);
        serve(theirs);
    }
    drop(theirs);
    let _ = ZYGOTE.set(Mutex::new(Some(ours)));
}

/// Asks the zygote for a child with these stdio ends and sync socket. `Err` means: no
/// zygote (the caller re-executes the agent instead).
pub fn spawn(stdin: &OwnedFd, stdout: &OwnedFd, stderr: &OwnedFd, sync: RawFd) -> Result<(), ()> {
    let slot = ZYGOTE.get().ok_or(())?;
    let mut z = slot.lock().unwrap_or_else(|e| e.into_inner());
    let sock = z.as_ref().ok_or(())?;
    let fds = [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd(), sync];
    match sock.send_with_fds(&[&[1u8][..]], &fds) {
        Ok(_) => Ok(()),
        Err(e) => {
            crate::log::line(&format!("zygote gone ({e}); re-executing the agent instead"));
            *z = None;
            Err(())
        }
    }
}

/// The zygote's loop: one child per request; ends when the agent's end closes.
fn serve(sock: UnixDatagram) -> ! {
    // Not the agent: a panic here must not end the VM.
    let _ = std::panic::take_hook();
    // Children are never waited for here (the agent learns everything over the sync
    // socket): let the kernel discard them instead of keeping zombies.
    set_sigchld(libc::SA_NOCLDWAIT);
    loop {
        let mut byte = [0u8; 1];
        let mut fds = [-1 as RawFd; 4];
        let mut iov = [libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 }];
        // SAFETY: iov points at a live 1-byte buffer; fds has room for 4 descriptors.
        let got = unsafe { sock.recv_with_fds(&mut iov, &mut fds) };
        let n_fds = match got {
            Ok((0, _)) => exit(0),
            Ok((_, n)) => n,
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(_) => exit(0),
        };
        // SAFETY: the kernel just installed these descriptors in this process.
        let owned: Vec<OwnedFd> =
            fds[..n_fds].iter().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
        if owned.len() != 4 {
            continue;
        }
        // SAFETY: the zygote is single-threaded.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(sock);
            child(owned);
        }
        // The child has its copies (or the fork failed and the agent sees the sync socket
        // close): ours go.
        drop(owned);
    }
}

fn set_sigchld(flags: libc::c_int) {
    // SAFETY: a zeroed sigaction with SIG_DFL is valid; sigaction only reads it.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        sa.sa_flags = flags;
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: ends the process without running anything else.
    unsafe { libc::_exit(code) }
}

/// In the forked child: the descriptors become fds 0–3, then it is a container child.
fn child(fds: Vec<OwnedFd>) -> ! {
    set_sigchld(0);
    crate::log::trace("child: forked from the zygote");
    // Move them out of the way of 0–3 first, then into place (dup2 clears close-on-exec).
    let mut high = Vec::new();
    for fd in &fds {
        // SAFETY: duplicates an open descriptor to a number >= 10.
        let h = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if h < 0 {
            exit(1);
        }
        high.push(h);
    }
    drop(fds);
    for (target, h) in [0, 1, 2, SYNC_FD].into_iter().zip(high) {
        // SAFETY: plain descriptor calls on descriptors this process owns.
        unsafe {
            if libc::dup2(h, target) < 0 {
                exit(1);
            }
            libc::close(h);
        }
    }
    super::child::main()
}
