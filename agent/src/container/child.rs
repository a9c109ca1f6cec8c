//! The container child: the agent binary re-executed as `ironpod-agent --container-init`
//! (a fresh single-threaded process, so forking and mounting are safe). It receives its
//! [`LaunchPlan`] on fd 3, joins the cgroup and namespaces, forks into the new PID namespace,
//! builds the root, reports ready, waits for the start word, drops privileges and executes
//! the program. Everything it reports goes back on fd 3, which closes on a successful exec.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use ironpod_protocol::{read_frame, recv, send};
use serde::{Deserialize, Serialize};

use super::plan::{LaunchPlan, ProcessPlan};
use super::{caps, console, rootfs, seccomp};

/// The fd the plan and the reports travel on.
pub const SYNC_FD: libc::c_int = 3;

/// Child → agent.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChildMsg {
    /// The process that will execute the program (in the container's PID namespace).
    Pid(i32),
    /// The root is built; waiting for [`AgentMsg::Start`].
    Ready,
    /// Setting up failed.
    Error(String),
    /// The program could not be executed.
    ExecError {
        /// errno.
        errno: i32,
        /// What failed.
        message: String,
    },
}

/// Agent → child.
#[derive(Debug, Serialize, Deserialize)]
pub enum AgentMsg {
    /// Execute the program.
    Start,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn ctx(what: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn last(what: &str) -> io::Error {
    ctx(what)(io::Error::last_os_error())
}

/// Entry point of `--container-init`. Never returns.
pub fn main() -> ! {
    // SAFETY: fd 3 was set up by the agent for us alone.
    let mut sync = unsafe { UnixStream::from_raw_fd(SYNC_FD) };
    // SAFETY: plain fcntl; the fd must not leak into the container's program.
    unsafe { libc::fcntl(SYNC_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: as above, for the terminal socket (EBADF when the process has no terminal).
    unsafe { libc::fcntl(console::TERMINAL_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let plan: LaunchPlan = match recv(&mut sync) {
        Ok(p) => p,
        Err(e) => fail(&mut sync, &format!("bad launch plan: {e}")),
    };
    crate::log::trace("child: plan received");
    if let Err(e) = enter(&plan) {
        fail(&mut sync, &e.to_string());
    }
    crate::log::trace("child: cgroup and namespaces entered");
    // A new or joined PID namespace applies to children only: fork into it.
    // SAFETY: this process is single-threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail(&mut sync, &last("fork").to_string());
    }
    if pid > 0 {
        let _ = send(&mut sync, &ChildMsg::Pid(pid));
        // SAFETY: ends the intermediate process; the agent (PID 1 or subreaper) adopts the
        // child.
        unsafe { libc::_exit(0) };
    }
    crate::log::trace("child: forked");
    if let Err(e) = prepare(&plan).and_then(|()| terminal(&plan)) {
        fail(&mut sync, &e.to_string());
    }
    if send(&mut sync, &ChildMsg::Ready).is_err() {
        // SAFETY: the agent is gone; end quietly.
        unsafe { libc::_exit(1) };
    }
    match read_frame(&mut sync).ok().and_then(|b| serde_json::from_slice::<AgentMsg>(&b).ok()) {
        Some(AgentMsg::Start) => {}
        // SAFETY: the agent dropped the process before starting it.
        None => unsafe { libc::_exit(1) },
    }
    let Err(ExecFailure { errno, message }) = finish(&plan.process);
    let _ = send(&mut sync, &ChildMsg::ExecError { errno, message });
    let code = match errno {
        libc::ENOENT => 127,
        libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::EPERM => 126,
        _ => 1,
    };
    // SAFETY: ends the child without running anything else.
    unsafe { libc::_exit(code) }
}

fn fail(sync: &mut UnixStream, msg: &str) -> ! {
    let _ = send(sync, &ChildMsg::Error(msg.to_string()));
    // SAFETY: ends the process.
    unsafe { libc::_exit(1) }
}

/// Cgroup, then namespaces: joined ones first, then new ones.
fn enter(plan: &LaunchPlan) -> io::Result<()> {
    if let Some(cg) = &plan.cgroup {
        std::fs::write(cg.join("cgroup.procs"), "0").map_err(ctx("join the cgroup"))?;
    }
    // Open every namespace before joining any: joining the mount namespace changes paths.
    let mut files = Vec::new();
    for (kind, path) in &plan.join {
        let f = File::open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("open namespace {}: {e}", path.display()))
        })?;
        files.push((*kind, f));
    }
    for kind in super::plan::Ns::JOIN_ORDER {
        for (k, f) in &files {
            if *k == kind {
                // SAFETY: f is an open namespace file.
                if unsafe { libc::setns(f.as_raw_fd(), kind.flag()) } != 0 {
                    return Err(last(&format!("join the {} namespace", kind.proc_name())));
                }
            }
        }
    }
    let flags = plan.create.iter().fold(0, |acc, k| acc | k.flag());
    // SAFETY: unshare with flags only.
    if flags != 0 && unsafe { libc::unshare(flags) } != 0 {
        return Err(last("create namespaces"));
    }
    Ok(())
}

/// In the final process, before the start word: the root (init) or the directory (exec).
fn prepare(plan: &LaunchPlan) -> io::Result<()> {
    if let Some(r) = &plan.rootfs {
        let console = if plan.process.tty {
            Some(std::fs::read_link("/proc/self/fd/0").map_err(ctx("find the terminal"))?)
        } else {
            None
        };
        // Docker creates a missing working directory.
        let cwd = rootfs::secure_join(&r.root, &plan.process.cwd)?;
        if !cwd.exists() {
            std::fs::create_dir_all(&cwd).map_err(ctx("create the working directory"))?;
            // SAFETY: chown of a path we just created.
            let c = CString::new(cwd.as_os_str().as_bytes()).map_err(io::Error::other)?;
            unsafe { libc::chown(c.as_ptr(), plan.process.uid, plan.process.gid) };
        }
        rootfs::setup(r, console.as_deref())?;
        rootfs::set_names(r.hostname.as_deref(), r.domainname.as_deref())?;
    }
    Ok(())
}

/// A process with a terminal moves onto one made in the container's devpts (the root is
/// the container's now: pivoted, or the joined mount namespace's) and sends its master to
/// the agent; without a devpts there it keeps the carrier and says so.
fn terminal(plan: &LaunchPlan) -> io::Result<()> {
    if !plan.process.tty {
        return Ok(());
    }
    // SAFETY: the agent set up TERMINAL_FD for processes with a terminal, for us alone.
    let socket = unsafe { UnixStream::from_raw_fd(console::TERMINAL_FD) };
    match console::open(Path::new("/dev/pts"))? {
        Some(t) => {
            if plan.rootfs.is_some() {
                rootfs::rebind_console(&t.path)?;
            }
            t.adopt(&socket, plan.process.uid).map_err(ctx("hand over the terminal"))
        }
        None => console::send_master(&socket, None).map_err(ctx("hand over the terminal")),
    }
}

fn cstrings(v: &[String]) -> io::Result<Vec<CString>> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
        .collect()
}

/// Finds the program like execvp does, in the container's PATH.
fn find_program(p: &ProcessPlan) -> io::Result<PathBuf> {
    let name = &p.args[0];
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = p.env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    let mut denied = false;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        let c = CString::new(candidate.as_os_str().as_bytes()).map_err(io::Error::other)?;
        if let Ok(m) = std::fs::metadata(&candidate) {
            if !m.is_file() {
                continue;
            }
            // SAFETY: c is a valid path string.
            if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
                return Ok(candidate);
            }
            denied = true;
        }
    }
    if denied {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("exec: {name:?}: permission denied"),
        ));
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("exec: {name:?}: executable file not found in $PATH"),
    ))
}

/// Why the program could not be executed: the errno picks the exit code (127 not found,
/// 126 not executable), the message goes to the agent.
struct ExecFailure {
    errno: i32,
    message: String,
}

impl From<io::Error> for ExecFailure {
    fn from(e: io::Error) -> Self {
        let errno = e.raw_os_error().unwrap_or(match e.kind() {
            io::ErrorKind::NotFound => libc::ENOENT,
            io::ErrorKind::PermissionDenied => libc::EACCES,
            _ => libc::EINVAL,
        });
        ExecFailure { errno, message: e.to_string() }
    }
}

enum Never {}

fn finish(p: &ProcessPlan) -> Result<Never, ExecFailure> {
    // SAFETY: setsid takes no arguments.
    unsafe { libc::setsid() };
    if p.tty {
        // SAFETY: fd 0 is the terminal's slave.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(last("set the controlling terminal").into());
        }
    }
    for &(res, soft, hard) in &p.rlimits {
        let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        // SAFETY: lim is a valid rlimit.
        if unsafe { libc::setrlimit(res as _, &lim) } != 0 {
            return Err(last(&format!("setrlimit {res}")).into());
        }
    }
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(ctx("oom_score_adj"))?;
    }
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it while we have it.
    if !p.no_new_privs {
        for prog in &p.seccomp {
            seccomp::install(prog).map_err(ctx("install seccomp"))?;
        }
    }
    caps::drop_bounding(p.caps.bounding).map_err(ctx("drop bounding capabilities"))?;
    // SAFETY: prctl/setgroups/setresgid/setresuid with valid arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(last("keep capabilities").into());
        }
        let groups: Vec<libc::gid_t> = p.additional_gids.clone();
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return Err(last("setgroups").into());
        }
        if libc::setresgid(p.gid, p.gid, p.gid) != 0 {
            return Err(last("setgid").into());
        }
        if libc::setresuid(p.uid, p.uid, p.uid) != 0 {
            return Err(last("setuid").into());
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    caps::apply(&p.caps).map_err(ctx("set capabilities"))?;
    if let Some(mask) = p.umask {
        // SAFETY: umask takes an integer.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    std::env::set_current_dir(&p.cwd)
        .map_err(|e| io::Error::new(e.kind(), format!("chdir to {}: {e}", p.cwd)))?;
    let program = find_program(p)?;
    if p.no_new_privs {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(last("no_new_privs").into());
        }
        for prog in &p.seccomp {
            seccomp::install(prog).map_err(ctx("install seccomp"))?;
        }
    }
    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let args = cstrings(&p.args)?;
    let env = cstrings(&p.env)?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: path, argv and envp are NULL-terminated arrays of valid strings that outlive
    // the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = io::Error::last_os_error();
    Err(ExecFailure {
        errno: e.raw_os_error().unwrap_or(libc::EINVAL),
        message: format!("exec: {:?}: {e}", p.args[0]),
    })
}
