//! Agent side of starting a container process: spawn the child (`--container-init`), hand
//! it the plan, learn its pid, and later give it the start word and learn whether the exec
//! worked.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use ironpod_protocol::{recv, send, AgentError, ErrorKind, FrameError};

use super::child::{AgentMsg, ChildMsg, SYNC_FD};
use super::console::{self, TERMINAL_FD};
use super::plan::LaunchPlan;
use super::stdio::ChildEnds;
use crate::reaper;

/// A created process waiting for its start word.
pub struct Pending {
    /// Its pid in the guest.
    pub pid: i32,
    /// The master of the terminal the process made in the container's devpts (processes
    /// with a terminal, where the container has one), to use instead of the carrier's.
    pub master: Option<OwnedFd>,
    sync: UnixStream,
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::new(ErrorKind::Io, format!("{what}: {e}"))
}

fn frame_err(what: &str, e: FrameError) -> AgentError {
    AgentError::new(ErrorKind::Io, format!("{what}: {e}"))
}

/// Spawns the child and runs it up to "ready".
pub fn create(plan: &LaunchPlan, ends: ChildEnds) -> Result<Pending, AgentError> {
    let (mut ours, theirs) = UnixStream::pair().map_err(io_err("socketpair"))?;
    let terminal = if plan.process.tty {
        Some(UnixStream::pair().map_err(io_err("socketpair"))?)
    } else {
        None
    };
    reexec(ends, &theirs, terminal.as_ref().map(|(_, t)| t))?;
    crate::log::trace("launch: child spawned");
    // The child has its copies now.
    drop(theirs);
    let terminal = terminal.map(|(ours, _)| ours);
    ours.set_read_timeout(Some(Duration::from_secs(60))).map_err(io_err("socket timeout"))?;
    send(&mut ours, plan).map_err(|e| frame_err("send the launch plan", e))?;
    // The intermediate process reports the pid and the final process reports ready; they
    // write on the same socket, so the two messages may come in either order.
    let mut pid = None;
    let mut ready = false;
    while pid.is_none() || !ready {
        match recv::<_, ChildMsg>(&mut ours) {
            Ok(ChildMsg::Pid(p)) if pid.is_none() => {
                crate::log::trace("launch: pid received");
                reaper::watch(p);
                pid = Some(p);
            }
            Ok(ChildMsg::Ready) if !ready => ready = true,
            Ok(ChildMsg::Error(m)) => {
                if let Some(p) = pid {
                    reaper::wait(p, Some(Duration::from_secs(5)));
                    reaper::forget(p);
                }
                return Err(AgentError::new(ErrorKind::BadRequest, m));
            }
            other => {
                if let Some(p) = pid {
                    kill_and_forget(p);
                }
                return Err(AgentError::new(ErrorKind::Io, format!("container child: {other:?}")));
            }
        }
    }
    let pid = pid.unwrap_or_default();
    // The child handed its terminal over before it said ready.
    let master = match &terminal {
        Some(t) => console::recv_master(t).map_err(io_err("receive the terminal"))?,
        None => None,
    };
    Ok(Pending { pid, master, sync: ours })
}

/// Starts the child by re-executing the agent as `--container-init`.
fn reexec(
    ends: ChildEnds,
    theirs: &UnixStream,
    terminal: Option<&UnixStream>,
) -> Result<(), AgentError> {
    // Copies above the fds the child's end up at, so that no dup2 below overwrites another.
    let theirs = high_copy(theirs)?;
    let terminal = terminal.map(high_copy).transpose()?;
    let theirs_fd = theirs.as_raw_fd();
    let terminal_fd = terminal.as_ref().map(|t| t.as_raw_fd());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--container-init")
        .env_clear()
        .stdin(Stdio::from(ends.stdin))
        .stdout(Stdio::from(ends.stdout))
        .stderr(Stdio::from(ends.stderr));
    // SAFETY: dup2 is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, SYNC_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = terminal_fd {
                if libc::dup2(fd, TERMINAL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // The reaper collects the intermediate process; we never wait on it here.
    cmd.spawn().map(drop).map_err(io_err("start the container child"))
}

/// A close-on-exec copy of `fd` numbered 10 or more.
fn high_copy(fd: &impl AsRawFd) -> Result<OwnedFd, AgentError> {
    // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd or -1.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(io_err("copy a socket")(std::io::Error::last_os_error()));
    }
    // SAFETY: fcntl returned a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) })
}

fn kill_and_forget(pid: i32) {
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reaper::wait(pid, Some(Duration::from_secs(5)));
    reaper::forget(pid);
}

impl Pending {
    /// Gives the start word; Ok once the program runs (the sync socket closed on exec).
    /// A program that is missing fails with `NotFound`, one that cannot be executed with
    /// `PermissionDenied`.
    pub fn start(mut self) -> Result<(), AgentError> {
        crate::log::trace("start: request");
        send(&mut self.sync, &AgentMsg::Start).map_err(|e| frame_err("start the process", e))?;
        match recv::<_, ChildMsg>(&mut self.sync) {
            Err(FrameError::Closed) => {
                crate::log::trace("start: program executed");
                Ok(())
            }
            Ok(ChildMsg::ExecError { errno, message }) => {
                let kind = match errno {
                    libc::ENOENT => ErrorKind::NotFound,
                    libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::EPERM => {
                        ErrorKind::PermissionDenied
                    }
                    _ => ErrorKind::Io,
                };
                Err(AgentError::new(kind, message))
            }
            Ok(other) => {
                Err(AgentError::new(ErrorKind::Io, format!("container child said {other:?}")))
            }
            Err(e) => Err(frame_err("start the process", e)),
        }
    }

    /// Drops a process that will never start.
    pub fn abandon(self) {
        kill_and_forget(self.pid);
    }
}
