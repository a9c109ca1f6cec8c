//! Starting the VMM process: fork (clone3) and exec by hand, so that on cgroup v2 the child
//! is created inside its pod's cgroup (`CLONE_INTO_CGROUP`) instead of moving there.
//!
//! Moving a process between cgroups (a write to `cgroup.procs`) waits for an RCU grace
//! period: 13 ms on a 2-core host, far more under nested virtualisation — most of what the
//! VMM's confinement used to add to a pod's start. A child created inside the cgroup costs
//! nothing of the kind. Where the kernel or the hierarchy cannot (cgroup v1, kernels before
//! 5.7), the child joins by writing `cgroup.procs` between fork and exec, as before.
//!
//! Between fork and exec the child runs only async-signal-safe code: descriptor moves, the
//! caller's hooks (which promise the same), signal resets and execve.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// `CLONE_INTO_CGROUP` (linux/sched.h; not in the libc crate).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What runs in the child between fork and exec.
pub type Hook = Box<dyn FnMut() -> io::Result<()> + Send + Sync>;

/// A process to start.
pub struct Spawn {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    stdin_pipe: bool,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    cgroup_dir: Option<OwnedFd>,
    cgroup_procs: Vec<File>,
    hooks: Vec<Hook>,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::other("a NUL byte in an argument"))
}

impl Spawn {
    /// `program` with `args`, the environment given (nothing else of this process's).
    pub fn new<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        program: &OsStr,
        args: &[&OsStr],
        env: impl IntoIterator<Item = (K, V)>,
    ) -> io::Result<Spawn> {
        let program = cstring(program)?;
        let mut argv = vec![program.clone()];
        for a in args {
            argv.push(cstring(a)?);
        }
        let env = env
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.as_ref().as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_ref().as_bytes());
                CString::new(kv).map_err(|_| io::Error::other("a NUL byte in the environment"))
            })
            .collect::<io::Result<_>>()?;
        Ok(Spawn {
            program,
            argv,
            env,
            stdin_pipe: false,
            stdout: None,
            stderr: None,
            cgroup_dir: None,
            cgroup_procs: Vec::new(),
            hooks: Vec::new(),
        })
    }

    /// Gives the child a pipe as stdin (its writing end comes back from [`Spawn::start`]);
    /// else stdin is /dev/null.
    pub fn stdin_pipe(&mut self) -> &mut Self {
        self.stdin_pipe = true;
        self
    }

    /// The child's stdout (else /dev/null).
    pub fn stdout(&mut self, f: File) -> &mut Self {
        self.stdout = Some(f.into());
        self
    }

    /// The child's stderr (else /dev/null).
    pub fn stderr(&mut self, f: File) -> &mut Self {
        self.stderr = Some(f.into());
        self
    }

    /// Starts the child inside the cgroup v2 directory `dir` (opened `O_PATH` or read-only),
    /// or, where the kernel cannot, has it join by writing `0` to each of `procs` (open
    /// `cgroup.procs` files: every hierarchy's, on v1) before anything else.
    pub fn cgroup(&mut self, dir: Option<File>, procs: Vec<File>) -> &mut Self {
        self.cgroup_dir = dir.map(OwnedFd::from);
        self.cgroup_procs = procs;
        self
    }

    /// Adds a hook the child runs between fork and exec, after the earlier ones.
    ///
    /// # Safety
    /// The hook runs in a forked copy of a multithreaded process: it may make
    /// async-signal-safe calls only (no allocation, no locks).
    pub unsafe fn pre_exec(&mut self, hook: Hook) -> &mut Self {
        self.hooks.push(hook);
        self
    }

    /// Starts the child; returns it and, when asked for, the writing end of its stdin.
    /// An error in the child before its program runs (a hook's, execve's) is returned here.
    pub fn start(mut self) -> io::Result<(Process, Option<File>)> {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let null = File::options().read(true).write(true).open("/dev/null")?;
        let (stdin_rd, stdin_wr) = match self.stdin_pipe {
            true => {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            }
            false => (None, None),
        };
        let (err_rd, err_wr) = pipe()?;
        let fd_in = stdin_rd.as_ref().map_or(null.as_raw_fd(), |f| f.as_raw_fd());
        let fd_out = self.stdout.as_ref().map_or(null.as_raw_fd(), |f| f.as_raw_fd());
        let fd_err = self.stderr.as_ref().map_or(null.as_raw_fd(), |f| f.as_raw_fd());

        let mut into_cgroup = self.cgroup_dir.as_ref().map(|d| d.as_raw_fd());
        let pid = loop {
            match clone3(into_cgroup) {
                Err(e) if into_cgroup.is_some() && e.raw_os_error() != Some(libc::EAGAIN) => {
                    // No CLONE_INTO_CGROUP here (old kernel, v1): join by writing instead.
                    tracing::debug!("clone3 into the cgroup: {e}; joining after the fork");
                    into_cgroup = None;
                }
                Err(e) => return Err(e),
                Ok(pid) => break pid,
            }
        };
        if pid == 0 {
            // The child.
            let joined = into_cgroup.is_some();
            let code = child(
                (fd_in, fd_out, fd_err),
                err_wr.as_raw_fd(),
                if joined { &[] } else { &self.cgroup_procs },
                &mut self.hooks,
                &self.program,
                &argv,
                &envp,
            );
            // SAFETY: leaves the forked child without running this process's destructors.
            unsafe { libc::_exit(code) };
        }
        drop(err_wr);
        drop(stdin_rd);
        let mut process = Process { pid, exit: None };
        let mut errno = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            // SAFETY: reads into the rest of a local buffer.
            let n = unsafe {
                libc::read(err_rd.as_raw_fd(), errno[got..].as_mut_ptr().cast(), 4 - got)
            };
            if n == 0 {
                break;
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            got += n as usize;
        }
        if got == 0 {
            return Ok((process, stdin_wr.map(File::from)));
        }
        let _ = process.wait();
        Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
    }
}

/// clone3 as a fork (a new process, SIGCHLD at its end), inside cgroup `into` if given.
/// `Ok(0)` in the child.
fn clone3(into: Option<RawFd>) -> io::Result<i32> {
    // SAFETY: clone_args is plain data; zero is "not used" for every field.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(fd) = into {
        args.flags = CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: clone3 without CLONE_VM duplicates the process as fork does; the child runs
    // only async-signal-safe code before execve or _exit (see `child`).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of_val(&args),
        )
    };
    if r >= 0 {
        return Ok(r as i32);
    }
    let e = io::Error::last_os_error();
    if into.is_some() || e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    // No clone3 (a seccomp profile that hides it, as container runtimes' defaults do): fork.
    // SAFETY: as above; the child runs only async-signal-safe code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        pid => Ok(pid),
    }
}

/// The child's side: stdio, cgroup, hooks, signal resets, execve. Returns the exit code
/// when something failed (its errno was written to `err`).
fn child(
    (fd_in, fd_out, fd_err): (RawFd, RawFd, RawFd),
    err: RawFd,
    procs: &[File],
    hooks: &mut [Hook],
    program: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> i32 {
    let fail = |e: io::Error| {
        let errno = e.raw_os_error().unwrap_or(libc::EINVAL).to_ne_bytes();
        // SAFETY: writes a local buffer to the error pipe; nothing else is possible now.
        unsafe { libc::write(err, errno.as_ptr().cast(), 4) };
        127
    };
    for f in procs {
        // SAFETY: write(2) of a static buffer to a descriptor opened before the fork.
        if unsafe { libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            return fail(io::Error::last_os_error());
        }
    }
    for (from, to) in [(fd_in, 0), (fd_out, 1), (fd_err, 2)] {
        // SAFETY: dup2 on descriptors this process holds (the target's close-on-exec flag is
        // cleared by dup2; when from == to, it is cleared by hand).
        let ok = unsafe {
            if from == to {
                libc::fcntl(to, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(from, to) == to
            }
        };
        if !ok {
            return fail(io::Error::last_os_error());
        }
    }
    for hook in hooks.iter_mut() {
        if let Err(e) = hook() {
            return fail(e);
        }
    }
    // SAFETY: resets what execve keeps: the signal mask and ignored SIGPIPE (Rust programs
    // ignore it), as std::process::Command does.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    fail(io::Error::last_os_error())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is an array of two ints, as pipe2 wants.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes the child enter the network namespace `ns` (open until the start).
pub fn setns_hook(ns: &File) -> Hook {
    let fd = ns.as_raw_fd();
    Box::new(move || {
        // SAFETY: setns(2) on a descriptor opened before the fork; async-signal-safe.
        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
}

/// Makes the child die (SIGKILL) when the thread that started it ends.
pub fn die_with_parent_hook() -> Hook {
    Box::new(|| {
        // SAFETY: prctl is async-signal-safe.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
        Ok(())
    })
}

/// Makes a `std::process::Command`'s child enter the network namespace `ns` before it
/// executes; `ns` must stay open until the spawn.
pub fn enter_netns_on_exec(cmd: &mut std::process::Command, ns: &File) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook makes one async-signal-safe system call.
    unsafe { cmd.pre_exec(setns_hook(ns)) };
}

/// Starts `spawn` as the first process (pid 1) of a new pid namespace: from a thread of its
/// own, which unshares its children's pid namespace (a thread can do that once), forks, and
/// then stays as the child's parent until the returned sender is dropped (its end is the
/// child's `PR_SET_PDEATHSIG`).
pub fn in_new_pid_namespace(
    spawn: Spawn,
) -> io::Result<(Process, Option<File>, std::sync::mpsc::Sender<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stay, parked) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new().name("vmm-parent".into()).spawn(move || {
        // SAFETY: unshare(2) of the pid namespace this thread's children get; this thread
        // and the rest of the process stay where they are.
        let r = if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            Err(io::Error::last_os_error())
        } else {
            spawn.start()
        };
        let started = r.is_ok();
        let _ = tx.send(r);
        if started {
            let _ = parked.recv();
        }
    })?;
    let (child, stdin) =
        rx.recv().map_err(|_| io::Error::other("the VMM's spawning thread ended early"))??;
    Ok((child, stdin, stay))
}

/// A started child process (reaped by [`Process::wait`] or [`Process::try_wait`]).
#[derive(Debug)]
pub struct Process {
    pid: i32,
    exit: Option<ExitStatus>,
}

impl Process {
    /// Its process id.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Its exit status, if it has ended (reaping it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Waits for it to end.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.reap(0)? {
                return Ok(s);
            }
        }
    }

    /// Sends it SIGKILL (nothing once it has been reaped).
    pub fn kill(&mut self) -> io::Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) of our own unreaped child: its pid cannot have been reused.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn reap(&mut self, flags: i32) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.exit {
            return Ok(Some(s));
        }
        let mut status = 0;
        // SAFETY: waitpid for our own child into a local.
        let r = unsafe { libc::waitpid(self.pid, &mut status, flags) };
        match r {
            0 => Ok(None),
            r if r == self.pid => {
                self.exit = Some(ExitStatus::from_raw(status));
                Ok(self.exit)
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    return Ok(None);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: [(&str, &str); 0] = [];

    #[test]
    fn a_child_runs_with_its_stdio_env_and_hooks_and_reports_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut s = Spawn::new(
            OsStr::new("/bin/sh"),
            &[OsStr::new("-c"), OsStr::new("read x; echo \"$x $V ${HOME:-no-home}\"; exit 3")],
            [("V", "env-ok")],
        )
        .unwrap();
        s.stdin_pipe().stdout(File::create(&out).unwrap());
        // SAFETY: the hook makes one system call.
        unsafe {
            s.pre_exec(Box::new(|| {
                libc::umask(0o077);
                Ok(())
            }))
        };
        let (mut p, stdin) = s.start().unwrap();
        std::io::Write::write_all(&mut stdin.unwrap(), b"piped\n").unwrap();
        assert_eq!(p.wait().unwrap().code(), Some(3));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "piped env-ok no-home\n");

        // A failing hook or a missing program: the error comes back, the child is reaped.
        let mut s = Spawn::new(OsStr::new("/bin/true"), &[], NO_ENV).unwrap();
        // SAFETY: the hook makes no call at all.
        unsafe { s.pre_exec(Box::new(|| Err(io::Error::from_raw_os_error(libc::EPERM)))) };
        assert_eq!(s.start().unwrap_err().raw_os_error(), Some(libc::EPERM));
        let s = Spawn::new(OsStr::new("/nonexistent"), &[], NO_ENV).unwrap();
        assert_eq!(s.start().unwrap_err().raw_os_error(), Some(libc::ENOENT));

        // Killed: reaped once, the status stays.
        let (mut p, _) = Spawn::new(OsStr::new("/bin/sleep"), &[OsStr::new("60")], NO_ENV)
            .unwrap()
            .start()
            .unwrap();
        assert!(p.try_wait().unwrap().is_none());
        p.kill().unwrap();
        assert_eq!(p.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(p.try_wait().unwrap().unwrap().signal(), Some(libc::SIGKILL));
        p.kill().unwrap();
    }
}
