//! Containers in the pod VM: the registry of containers and their processes, and the
//! operations the host asks for. Each container has a root built from overlayfs (read-only
//! layer disks + an upper dir on the pod's writable disk), a cgroup v2 group with the
//! spec's limits, its namespaces, an init process and any number of exec'd processes.

mod archive;
mod beneath;
mod caps;
mod cgroup;
pub mod child;
mod commit;
mod console;
mod devices;
mod launch;
mod plan;
mod procs;
mod rootfs;
mod seccomp;
mod stdio;
pub(crate) mod storage;
mod users;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ironpod_protocol::{
    valid_id, AgentError, CommitResult, ContainerStats, CreateContainer, ErrorKind, ExecProcess,
    ExitStatus, ProcessInfo, ProcessRef, StdioStream,
};

use crate::reaper;
use plan::{LaunchPlan, Ns};

pub use stdio::{pump_in, pump_out};
pub use storage::premount;

/// Where container roots are mounted.
const CONTAINERS_DIR: &str = "/run/ironpod/c";

/// One process of a container.
struct Proc {
    pid: i32,
    tty: bool,
    pending: Mutex<Option<launch::Pending>>,
    ends: Mutex<stdio::HostEnds>,
}

impl Proc {
    /// Creates the process's stdio and starts its child, up to the start word.
    fn launch(
        plan: &LaunchPlan,
        stdin: bool,
        size: Option<(u16, u16)>,
    ) -> Result<Arc<Proc>, AgentError> {
        let tty = plan.process.tty;
        let (child_ends, mut host_ends) =
            stdio::create(tty, stdin, size).map_err(AgentError::from)?;
        let mut pending = launch::create(plan, child_ends)?;
        if let Some(master) = pending.master.take() {
            // The process moved onto a terminal of the container's own devpts.
            host_ends.replace_master(master, size)?;
        }
        Ok(Arc::new(Proc {
            pid: pending.pid,
            tty,
            pending: Mutex::new(Some(pending)),
            ends: Mutex::new(host_ends),
        }))
    }
}

/// What a signal is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalTarget {
    /// The process itself (while it runs).
    Process,
    /// The process's group: it and what it started (each process leads its own).
    Group,
    /// Every process of the container.
    Container,
}

/// A container.
struct Container {
    root: PathBuf,
    upper_base: PathBuf,
    /// The mounted layer disks, lowest last (what `changes` compares with).
    lowers: Vec<PathBuf>,
    /// The init process's user and group (owner of what `docker cp -a` copies in).
    user: (u32, u32),
    cgroup: PathBuf,
    /// Who keeps the cgroup frozen: the user's pause and commits in progress.
    freezer: cgroup::Freezer,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    seccomp: Vec<seccomp::Program>,
}

/// Every container of this pod.
#[derive(Default)]
pub struct Runtime {
    containers: Mutex<HashMap<String, Arc<Container>>>,
}

/// The agent's runtime.
pub fn runtime() -> &'static Runtime {
    static R: OnceLock<Runtime> = OnceLock::new();
    R.get_or_init(Runtime::default)
}

fn not_found(what: String) -> AgentError {
    AgentError::new(ErrorKind::NotFound, what)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Undoes a half-created container.
struct Cleanup {
    root: Option<PathBuf>,
    cgroup: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            cgroup::kill_all(&cg, Duration::from_secs(2));
            cgroup::remove(&cg);
        }
        if let Some(r) = self.root.take() {
            storage::unmount(&r);
            let _ = std::fs::remove_dir(&r);
        }
    }
}

impl Runtime {
    fn container(&self, id: &str) -> Result<Arc<Container>, AgentError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(format!("no container {id:?}")))
    }

    fn process(&self, p: &ProcessRef) -> Result<(Arc<Container>, Arc<Proc>), AgentError> {
        let c = self.container(&p.container)?;
        let proc_ = match &p.exec_id {
            None => c.init.clone(),
            Some(e) => lock(&c.execs)
                .get(e)
                .cloned()
                .ok_or_else(|| not_found(format!("no process {p}")))?,
        };
        Ok((c, proc_))
    }

    /// Resolves a namespace path from a spec. `/run/ironpod/c/<id>/ns/<kind>` names the
    /// namespace of another container of this pod.
    fn ns_path(&self, kind: Ns, path: &Path) -> Result<PathBuf, AgentError> {
        let s = path.to_string_lossy();
        if let Some(rest) = s.strip_prefix("/run/ironpod/c/") {
            let (other, tail) = rest
                .split_once("/ns/")
                .ok_or_else(|| plan::bad(format!("bad namespace path {s:?}")))?;
            if tail != kind.proc_name() {
                return Err(plan::bad(format!(
                    "namespace path {s:?} is not a {} namespace",
                    kind.proc_name()
                )));
            }
            let c = self.container(other)?;
            if reaper::peek(c.init.pid).is_some() {
                return Err(AgentError::new(
                    ErrorKind::InvalidState,
                    format!("container {other} has exited"),
                ));
            }
            return Ok(PathBuf::from(format!("/proc/{}/ns/{}", c.init.pid, kind.proc_name())));
        }
        if !path.exists() {
            return Err(not_found(format!("namespace {s:?} does not exist")));
        }
        Ok(path.to_path_buf())
    }

    /// Creates a container and its stopped init process; returns the init's pid.
    pub fn create(&self, req: CreateContainer) -> Result<i32, AgentError> {
        let id = req.id.clone();
        if !valid_id(&id) {
            return Err(plan::bad(format!("bad container id {id:?}")));
        }
        if lock(&self.containers).contains_key(&id) {
            return Err(AgentError::new(
                ErrorKind::AlreadyExists,
                format!("container {id} exists"),
            ));
        }
        crate::log::trace("create: request");
        let spec = &req.spec;
        let root = Path::new(CONTAINERS_DIR).join(&id).join("rootfs");
        let (namespaces, rootfs_plan, mut process) = plan::container_plan(spec, root.clone())?;
        crate::log::trace("create: planned");
        let mut lowers = Vec::new();
        for serial in &req.rootfs.layers {
            lowers.push(storage::layer(serial)?);
        }
        crate::log::trace("create: layer disks mounted");
        let rw = storage::writable(&req.rootfs.writable)?;
        crate::log::trace("create: writable disk mounted");
        if storage::uses_share(spec) {
            storage::share()?;
        }
        let upper_base = rw.join("containers").join(&id);
        storage::overlay(&root, &lowers, &upper_base.join("upper"), &upper_base.join("work"))?;
        crate::log::trace("create: overlay mounted");
        let mut cleanup = Cleanup { root: Some(root.clone()), cgroup: None };
        if let Some(user) = spec.annotations().as_ref().and_then(|a| a.get(users::ANNOTATION)) {
            users::resolve(&root, user, &mut process)?;
        }
        let linux = spec.linux().clone().unwrap_or_default();
        let cg = cgroup::path_for(&id, linux.cgroups_path().as_deref())?;
        crate::log::trace("create: users resolved");
        cgroup::create(&cg, linux.resources().as_ref())?;
        crate::log::trace("create: cgroup created");
        cleanup.cgroup = Some(cg.clone());
        let mut join = Vec::new();
        let mut create = Vec::new();
        for (kind, path) in namespaces {
            match path {
                Some(p) => join.push((kind, self.ns_path(kind, &p)?)),
                None => create.push(kind),
            }
        }
        let size = spec
            .process()
            .as_ref()
            .and_then(|p| p.console_size().map(|b| (b.height() as u16, b.width() as u16)));
        let seccomp_progs = process.seccomp.clone();
        let user = (process.uid, process.gid);
        let plan = LaunchPlan {
            cgroup: Some(cg.clone()),
            join,
            create,
            rootfs: Some(rootfs_plan),
            process,
        };
        let init = Proc::launch(&plan, req.stdin, size)?;
        crate::log::trace("create: init process ready");
        let pid = init.pid;
        let container = Container {
            root,
            upper_base,
            lowers,
            user,
            freezer: cgroup::Freezer::new(&cg),
            cgroup: cg,
            init,
            execs: Mutex::new(HashMap::new()),
            seccomp: seccomp_progs,
        };
        cleanup.root = None;
        cleanup.cgroup = None;
        lock(&self.containers).insert(id, Arc::new(container));
        Ok(pid)
    }

    /// Creates a stopped extra process in a running container; returns its pid.
    pub fn exec(&self, req: ExecProcess) -> Result<i32, AgentError> {
        let c = self.container(&req.container)?;
        if !valid_id(&req.exec_id) {
            return Err(plan::bad(format!("bad exec id {:?}", req.exec_id)));
        }
        if reaper::peek(c.init.pid).is_some() {
            return Err(AgentError::new(
                ErrorKind::InvalidState,
                format!("container {} is not running", req.container),
            ));
        }
        if lock(&c.execs).contains_key(&req.exec_id) {
            return Err(AgentError::new(
                ErrorKind::AlreadyExists,
                format!("exec {} exists", req.exec_id),
            ));
        }
        let mut process = plan::process_plan(&req.process, c.seccomp.clone())?;
        if let Some(user) = &req.user {
            process.additional_gids.clear();
            users::resolve(&c.root, user, &mut process)?;
        }
        let join = Ns::JOIN_ORDER
            .iter()
            .map(|k| (*k, PathBuf::from(format!("/proc/{}/ns/{}", c.init.pid, k.proc_name()))))
            .collect();
        let size = req.process.console_size().map(|b| (b.height() as u16, b.width() as u16));
        let plan = LaunchPlan {
            cgroup: Some(c.cgroup.clone()),
            join,
            create: Vec::new(),
            rootfs: None,
            process,
        };
        let p = Proc::launch(&plan, req.stdin, size)?;
        let pid = p.pid;
        lock(&c.execs).insert(req.exec_id, p);
        Ok(pid)
    }

    /// Starts a created process.
    pub fn start(&self, r: &ProcessRef) -> Result<(), AgentError> {
        let (_, p) = self.process(r)?;
        let pending = lock(&p.pending).take().ok_or_else(|| {
            AgentError::new(ErrorKind::InvalidState, format!("{r} was started already"))
        })?;
        pending.start()
    }

    /// Hands out one stdio end of a process.
    pub fn take_stdio(
        &self,
        r: &ProcessRef,
        which: StdioStream,
    ) -> Result<(OwnedFd, bool), AgentError> {
        let (_, p) = self.process(r)?;
        let fd = lock(&p.ends).take(which)?;
        Ok((fd, p.tty))
    }

    /// Waits for a process to exit.
    pub fn wait(&self, r: &ProcessRef) -> Result<ExitStatus, AgentError> {
        let (c, p) = self.process(r)?;
        let status = reaper::wait(p.pid, None).unwrap_or(0);
        crate::log::trace("wait: process exited");
        let (code, signal) = reaper::decode(status);
        Ok(ExitStatus { code, signal, oom_killed: cgroup::oom_killed(&c.cgroup) })
    }

    /// Forgets an exec'd process that has exited.
    pub fn release(&self, r: &ProcessRef) -> Result<(), AgentError> {
        let (c, p) = self.process(r)?;
        let Some(exec_id) = &r.exec_id else {
            return Err(plan::bad("the init process is released with its container"));
        };
        if reaper::peek(p.pid).is_none() {
            return Err(AgentError::new(ErrorKind::InvalidState, format!("{r} is running")));
        }
        lock(&c.execs).remove(exec_id);
        reaper::forget(p.pid);
        Ok(())
    }

    /// Sends a signal.
    pub fn signal(&self, r: &ProcessRef, sig: i32, target: SignalTarget) -> Result<(), AgentError> {
        if !(1..=64).contains(&sig) {
            return Err(plan::bad(format!("signal {sig} is not 1..64")));
        }
        let (c, p) = self.process(r)?;
        match target {
            SignalTarget::Container => {
                for pid in cgroup::pids(&c.cgroup) {
                    // SAFETY: kill with integer arguments.
                    unsafe { libc::kill(pid, sig) };
                }
                return Ok(());
            }
            SignalTarget::Group => {
                // The group outlives its leader while members are left. Only the container's
                // own processes in that group: after the leader was reaped its pid could
                // name another group elsewhere.
                for pid in cgroup::pids(&c.cgroup) {
                    if procs::group_of(pid) == Some(p.pid) {
                        // SAFETY: kill with integer arguments.
                        unsafe { libc::kill(pid, sig) };
                    }
                }
                return Ok(());
            }
            SignalTarget::Process => {}
        }
        if reaper::peek(p.pid).is_some() {
            return Err(AgentError::new(ErrorKind::InvalidState, format!("{r} is not running")));
        }
        // SAFETY: kill with integer arguments.
        if unsafe { libc::kill(p.pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Resizes a process's terminal.
    pub fn resize(&self, r: &ProcessRef, rows: u16, cols: u16) -> Result<(), AgentError> {
        let (_, p) = self.process(r)?;
        let ends = lock(&p.ends);
        ends.resize(rows, cols)
    }

    /// Closes a process's stdin if no stream holds it.
    pub fn close_stdin(&self, r: &ProcessRef) -> Result<(), AgentError> {
        let (_, p) = self.process(r)?;
        lock(&p.ends).close_stdin();
        Ok(())
    }

    /// The container's processes.
    pub fn processes(&self, id: &str) -> Result<Vec<ProcessInfo>, AgentError> {
        let c = self.container(id)?;
        Ok(procs::list(&cgroup::pids(&c.cgroup)))
    }

    /// The container's resource use.
    pub fn stats(&self, id: &str) -> Result<ContainerStats, AgentError> {
        let c = self.container(id)?;
        let mut s = cgroup::stats(&c.cgroup);
        s.online_cpus = procs::online_cpus();
        s.sampled_usec = procs::uptime_usec();
        Ok(s)
    }

    /// Freezes or thaws every process of the container.
    pub fn set_frozen(&self, id: &str, frozen: bool) -> Result<(), AgentError> {
        let c = self.container(id)?;
        c.freezer.set_paused(frozen)
    }

    /// Applies new resource limits to the container's cgroup.
    pub fn update(
        &self,
        id: &str,
        r: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), AgentError> {
        let c = self.container(id)?;
        cgroup::apply(&c.cgroup, r)
    }

    /// Writes the container's changes as a layer tar. Its processes are frozen meanwhile
    /// (as `docker commit` pauses), so the layer is a consistent snapshot.
    pub fn commit(&self, id: &str) -> Result<CommitResult, AgentError> {
        let c = self.container(id)?;
        let _frozen = c.freezer.hold();
        commit::write_layer(&c.upper_base.join("upper"), &c.upper_base)
    }

    /// The container's root as its processes see it (see [`archive::open_root`]).
    fn files_root(c: &Container) -> Result<OwnedFd, AgentError> {
        let alive = reaper::peek(c.init.pid).is_none();
        archive::open_root(alive.then_some(c.init.pid), &c.root)
    }

    /// Facts about a path in a container.
    pub fn stat_path(
        &self,
        id: &str,
        path: &str,
    ) -> Result<ironpod_protocol::PathStat, AgentError> {
        let c = self.container(id)?;
        archive::stat(&Self::files_root(&c)?, path)
    }

    /// Writes a tar of a path in a container to `out`. Its processes keep running (as with
    /// Docker): the walk never follows a link, so what they change meanwhile cannot lead
    /// it out, and a slow reader holds nothing of the container.
    pub fn read_archive(
        &self,
        id: &str,
        path: &str,
        out: impl std::io::Write,
    ) -> Result<(), AgentError> {
        let c = self.container(id)?;
        let root = Self::files_root(&c)?;
        archive::write_tar(&root, path, out)
    }

    /// Extracts the tar read from `input` into a directory of a container (its processes
    /// keep running: every entry is made and set through descriptors, never a link).
    pub fn write_archive(
        &self,
        req: &ironpod_protocol::WriteArchive,
        input: impl std::io::Read,
    ) -> Result<(), AgentError> {
        let c = self.container(&req.container)?;
        let root = Self::files_root(&c)?;
        let opts = archive::ExtractOptions {
            no_overwrite_dir_non_dir: req.no_overwrite_dir_non_dir,
            owner: req.copy_uid_gid.then_some(c.user),
        };
        archive::extract(&root, &req.path, input, opts)
    }

    /// How a container's files differ from its image.
    pub fn changes(&self, id: &str) -> Result<Vec<ironpod_protocol::Change>, AgentError> {
        let c = self.container(id)?;
        archive::changes(&c.upper_base.join("upper"), &c.lowers)
    }

    /// Kills the container's processes and takes it apart.
    pub fn delete(&self, id: &str, discard_changes: bool) -> Result<(), AgentError> {
        let c = self.container(id)?;
        if !cgroup::kill_all(&c.cgroup, Duration::from_secs(10)) {
            return Err(AgentError::new(ErrorKind::Io, format!("processes of {id} did not die")));
        }
        lock(&self.containers).remove(id);
        for p in std::iter::once(&c.init).chain(lock(&c.execs).values()) {
            if let Some(pending) = lock(&p.pending).take() {
                pending.abandon();
            }
            reaper::wait(p.pid, Some(Duration::from_secs(2)));
            reaper::forget(p.pid);
        }
        cgroup::remove(&c.cgroup);
        storage::unmount(&c.root);
        // Only empty directories: never walk into a root that might still be mounted.
        let _ = std::fs::remove_dir(&c.root);
        if let Some(parent) = c.root.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        if discard_changes {
            std::fs::remove_dir_all(&c.upper_base).map_err(AgentError::from)?;
        }
        Ok(())
    }
}
