//! The pod monitor: one detached process per CLI pod (like podman's conmon). It boots the
//! VM, creates the container in it, serves the attach socket, copies the container's output
//! to its log (which outlives the pod) and to attached clients, records how the container
//! ended, and takes the pod down.
//!
//! Start-up is ordered for speed: the attach socket is bound and the VMM started before
//! anything else, so reading the records, opening the log and the client's attach all happen
//! while the guest boots; an attached client is served as soon as it connects.

use std::io::{BufRead, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ironpod_images::ImageStore;
use ironpod_net::{self as network, PodTap};
use ironpod_protocol::{CreateContainer, ErrorKind, ProcessRef, RootfsDisks, StdioStream};
use ironpod_state::State;
use ironpod_vmm::config::{DiskConfig, FsConfig};
use ironpod_volumes::share::PodShare;

use crate::agent_client::{AgentClient, ClientError};
use crate::attach::{self, ExitReport, Frame};
use crate::cgroup::{self, Limits, PodCgroup};
use crate::launch::{Launch, PodShape, Prepared};
use crate::logs::{LogWriter, Stream};
use crate::vm::{RunningVm, VmSpec};
use crate::{paths, pod, template};

mod clients;
mod net;
use clients::{accept_clients, lock, open_stdio, pump, Shared};
use net::{setup_guest_network, PendingNetwork};

/// The longest a holder ([`Frame::Hold`]) keeps an ended program's VM.
const HOLD_LIMIT: Duration = Duration::from_secs(30 * 60);

/// What the monitor hands to `run` when the start fails: Docker's exit codes.
fn start_failure(e: &ClientError) -> ExitReport {
    let code = match e {
        ClientError::Agent(a) if a.kind == ErrorKind::NotFound => 127,
        ClientError::Agent(a) if a.kind == ErrorKind::PermissionDenied => 126,
        _ => 125,
    };
    ExitReport { code, oom_killed: false, error: Some(agent_message(e)) }
}

fn agent_message(e: &ClientError) -> String {
    match e {
        ClientError::Agent(a) => a.message.clone(),
        e => e.to_string(),
    }
}

fn failure(msg: String) -> ExitReport {
    ExitReport { code: 125, oom_killed: false, error: Some(msg) }
}

/// A running pod and what the monitor keeps of it.
struct Pod {
    vm: RunningVm,
    uds: PathBuf,
    pumps: Vec<JoinHandle<()>>,
    guest_pid: i32,
    /// The session that created the container: it starts it and ends the VM.
    ctl: AgentClient,
    state: Option<State>,
    /// The volumes' share (taken down when the pod is).
    _share: Option<PodShare>,
    /// Its healthcheck, and the process its probes are made like.
    health: Option<(crate::health::HealthConfig, oci_spec::runtime::Process)>,
}

/// Starts the pod's VMM deferred: it sets the VM up (or restores the pod template of its
/// size) while the caller prepares the disks. Returns whether it restores a template.
///
/// A template that cannot be made (a host whose CPU state the VMM cannot snapshot, a
/// snapshot that failed) does not fail the pod: it boots, and the monitor's log says why.
fn start_vm(
    root: &Path,
    id: &str,
    shape: &PodShape,
    cgroup: Option<Arc<PodCgroup>>,
) -> Result<(RunningVm, bool), ExitReport> {
    let trace = template::guest_trace();
    let template = match shape.template {
        true => match template::get_or_make(root, shape.template_shape()) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("ironpod-monitor: {id}: no pod template, the VM boots: {e}");
                None
            }
        },
        false => None,
    };
    let restored = template.is_some();
    let mut vm_spec = match &template {
        Some(t) => t.restore_spec(),
        None => VmSpec::with_defaults(),
    }
    .map_err(|e| failure(e.to_string()))?;
    vm_spec.vcpus = shape.vcpus;
    vm_spec.memory_mib = shape.memory_mib;
    vm_spec.cpus = shape.cpus;
    vm_spec.cgroup = cgroup;
    // virtiofsd maps the guest's memory.
    vm_spec.shared_memory = !shape.volumes.is_empty();
    vm_spec.free_page_reporting = true;
    vm_spec.cmdline_extra = template::POD_CMDLINE.into();
    if trace && !restored {
        // The agent writes its steps with timestamps to the console log (diagnostics; a
        // restored one is told with its reseed).
        vm_spec.cmdline_extra.push_str(" ironpod.trace");
    }
    tracing::info!(%id, restored, "starting the VMM");
    let vm = RunningVm::start_deferred(&vm_spec).map_err(|e| failure(e.to_string()))?;
    Ok((vm, restored))
}

/// Boots the VM with the container's disks, then reads the records, creates the container
/// and opens its streams.
fn boot(
    (root, id, shape): (&Path, &str, &PodShape),
    (mut vm, restored): (RunningVm, bool),
    (launch, pending, share): (&Launch, &mut Option<PendingNetwork>, Option<PodShare>),
    sh: &Arc<Shared>,
    log: &Arc<Mutex<Option<LogWriter>>>,
) -> Result<(Pod, (bool, bool)), ExitReport> {
    // Name the container's disks so the agent mounts them while we connect.
    let layers: Vec<String> = launch.layers.iter().map(|p| paths::disk_serial(p)).collect();
    let slots = shape.template_shape().read_only_slots();
    if restored && layers.len() > usize::from(slots) {
        // The caller checks the image before it asks for a template; an image replaced
        // since (a pull) can still have more layers.
        return Err(failure(format!(
            "the image has {} layers; a pod from a template takes at most {slots} (run it \
             with --no-template)",
            layers.len()
        )));
    }
    let mut cmdline = String::new();
    // A restored guest runs already: the agent mounts the disks when the container is made.
    if !restored && !layers.is_empty() && layers.len() * 21 < 1200 {
        cmdline.push_str(&format!("ironpod.layers={} ", layers.join(",")));
    }
    if !restored {
        cmdline.push_str(&format!("ironpod.rw={}", paths::disk_serial(&launch.writable)));
    }
    let disks = launch
        .layers
        .iter()
        .map(|p| DiskConfig { path: p.clone(), read_only: true })
        .chain(std::iter::once(DiskConfig { path: launch.writable.clone(), read_only: false }))
        .collect();
    let tap = pending.as_ref().map(PendingNetwork::tap).transpose()?;
    let cards = tap
        .iter()
        .map(PodTap::net_config)
        .map(|mut c| {
            if restored {
                // The template's card keeps its MAC; the agent sets the pod's.
                c.mac = None;
            }
            c
        })
        .collect();
    let mut fs = Vec::new();
    if let Some(share) = &share {
        fs.push(FsConfig {
            socket: share.socket().to_path_buf(),
            tag: ironpod_protocol::SHARE_TAG.into(),
            queue_size: template::SHARE_QUEUE_SIZE,
        });
        // A restored guest mounts the share when the container is made.
        if !restored {
            cmdline.push_str(" ironpod.share");
        }
    }
    vm.boot(disks, cards, fs, &cmdline).map_err(|e| failure(e.to_string()))?;
    tracing::info!(%id, "booting");
    let uds = vm.vsock_path().to_path_buf();
    let _ = sh.uds.set(uds.clone());
    // While the guest boots: the records, the rest of the container from the caller, the log.
    let state = State::open(root).map_err(|e| failure(e.to_string()))?;
    let mut line = String::new();
    let Prepared { options: opts, mut spec } = match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 => {
            serde_json::from_str(&line).map_err(|e| failure(format!("bad container data: {e}")))?
        }
        // The caller gave up (a name in use, a bad spec): the VM just ends.
        _ => return Err(ExitReport { code: 125, oom_killed: false, error: None }),
    };
    tracing::debug!(%id, "container data received");
    // The options were checked when the container was made; a record from before log
    // options existed gets the defaults.
    let limits = crate::logs::LogLimits::parse(&opts.log_opt).unwrap_or_default();
    *lock(log) = LogWriter::open(&paths::log_path(root, id), limits).ok();
    let mut ctl = vm.wait_agent(Duration::from_secs(120)).map_err(|e| failure(e.to_string()))?;
    if restored {
        // Before anything else: fresh randomness and the time of day.
        ctl.restored(template::guest_trace())
            .map_err(|e| failure(format!("reseed the restored VM: {e}")))?;
    }
    tracing::info!(%id, restored, "agent ready");
    let net = pending.take().map(PendingNetwork::join).transpose()?;
    let settings =
        setup_guest_network(&state, id, &mut ctl, (net.as_ref(), restored), &opts, &mut spec)?;
    tracing::debug!(%id, "guest network set up");
    if let Ok(text) = serde_json::to_string(&settings) {
        let _ = state.set_network(id, &text);
    }
    tracing::debug!(%id, "network settings recorded");
    // The probe runs as the container's own process does (its env, user, directory).
    let health = opts.healthcheck.clone().zip(spec.process().clone());
    let guest_pid = ctl
        .create_container(CreateContainer {
            id: id.to_string(),
            spec: Box::new(spec),
            rootfs: RootfsDisks {
                layers: launch.layers.iter().map(|p| paths::disk_serial(p)).collect(),
                writable: paths::disk_serial(&launch.writable),
            },
            stdin: opts.interactive,
        })
        .map_err(|e| failure(format!("create the container: {}", agent_message(&e))))?;
    tracing::info!(%id, "container created in the guest");
    let stdio = (opts.tty, opts.interactive);
    let pod = Pod {
        vm,
        uds,
        pumps: Vec::new(),
        guest_pid,
        ctl,
        state: Some(state),
        _share: share,
        health,
    };
    Ok((pod, stdio))
}

/// Opens the container's stdio streams (connections of their own, side by side) and starts
/// copying its output. Runs beside the start: until the streams are open the output waits
/// in the guest's pipes, so nothing is lost, and the start does not wait for them.
fn open_streams(
    uds: &Path,
    id: &str,
    (tty, interactive): (bool, bool),
    log: &Arc<Mutex<Option<LogWriter>>>,
    sh: &Arc<Shared>,
) -> Result<Vec<JoinHandle<()>>, ExitReport> {
    let stream =
        |w| open_stdio(uds, id, w).map_err(|e| failure(format!("open the container's {w:?}: {e}")));
    let (stdout, stderr, stdin) = std::thread::scope(|sc| {
        let err = (!tty).then(|| sc.spawn(|| stream(StdioStream::Stderr)));
        let inp = interactive.then(|| sc.spawn(|| stream(StdioStream::Stdin)));
        let out = stream(StdioStream::Stdout);
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<UnixStream, ExitReport>>| {
            h.join().unwrap_or_else(|_| Err(failure("stdio thread panicked".into())))
        };
        (out, err.map(join), inp.map(join))
    });
    let mut pumps = vec![pump(stdout?, Stream::Stdout, log.clone(), sh.clone())];
    if let Some(e) = stderr {
        pumps.push(pump(e?, Stream::Stderr, log.clone(), sh.clone()));
    }
    if let Some(i) = stdin {
        *lock(&sh.stdin) = Some(i?);
    }
    Ok(pumps)
}

/// Runs the monitor for container `id`: the [`Launch`] comes on stdin; `ready` gets
/// "attach" once clients can attach, then "ok" once the container is created (or "error: …").
/// With `wait_attach` the program starts only once a client is attached. Returns the
/// process exit code.
pub fn run(
    root: &Path,
    id: &str,
    shape: &PodShape,
    wait_attach: bool,
    ready: std::fs::File,
) -> i32 {
    let mut clock = StartClock { since: Instant::now(), reported: false };
    let code = run_pod(root, id, shape, wait_attach, ready, &mut clock);
    if code != 0 {
        clock.report(root, id, false);
    }
    code
}

/// How long the pod took to start, logged once as a `pod` event (`start` or
/// `start-failed`, with `seconds`): what the service's metrics count. Not a Docker event:
/// Docker clients never see it.
struct StartClock {
    since: Instant,
    reported: bool,
}

impl StartClock {
    fn report(&mut self, root: &Path, id: &str, ok: bool) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let secs = format!("{:.6}", self.since.elapsed().as_secs_f64());
        let action = if ok { "start" } else { "start-failed" };
        let e =
            ironpod_events::Event::now(ironpod_events::POD_KIND, action, id).with("seconds", secs);
        crate::events::emit(root, &e);
    }
}

fn run_pod(
    root: &Path,
    id: &str,
    shape: &PodShape,
    wait_attach: bool,
    mut ready: std::fs::File,
    clock: &mut StartClock,
) -> i32 {
    tracing::debug!(%id, "monitor up");
    // One malloc arena: the monitor's short-lived helper threads (network set-up, stdio)
    // would each leave an arena of their own resident for the pod's whole life.
    // SAFETY: mallopt with integer arguments, before this process starts threads.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // The VMM starts now and sets the VM up while the caller prepares the disks; the
    // network comes up beside it.
    // The pod's host cgroup: its VMM and its virtiofsd (dropped last: after both are gone).
    let limits = Limits::for_vm(shape.vcpus, shape.memory_mib, shape.cpus);
    let cgroup = match PodCgroup::create(id, &limits) {
        Ok(c) => c.map(Arc::new),
        Err(e) => {
            let _ = writeln!(ready, "error: the pod's cgroup: {e}");
            return 1;
        }
    };
    let (vm, restored) = match start_vm(root, id, shape, cgroup.clone()) {
        Ok(vm) => vm,
        Err(report) => {
            let _ = writeln!(ready, "error: {}", report.error.unwrap_or_default());
            return 1;
        }
    };
    // The volumes' share and its virtiofsd start beside the VMM (the VMM connects when it
    // boots, and talks to virtiofsd only once the guest's driver is up).
    let share = if shape.volumes.is_empty() {
        None
    } else {
        let started =
            cgroup::joiner(cgroup.as_deref()).map_err(|e| e.to_string()).and_then(|join| {
                PodShare::start_with(id, &shape.volumes, &vm.dir().join("fs.sock"), join)
                    .map_err(|e| e.to_string())
            });
        match started {
            Ok(s) => Some(s),
            Err(e) => {
                let _ = writeln!(ready, "error: volumes: {e}");
                return 1;
            }
        }
    };
    let mut net =
        shape.network.as_deref().map(|n| PendingNetwork::start(root, id, n, vm.own_netns()));
    // Before the pod's network is taken down, its set-up must have ended.
    let give_up = |net: Option<PendingNetwork>| {
        if let Some(p) = net {
            let _ = p.rest.join();
            network::disconnect(root, id);
        }
    };
    let mut line = String::new();
    if matches!(std::io::stdin().lock().read_line(&mut line), Ok(0)) {
        // The caller gave up before launching (bad image, bad flags): the VM just ends.
        drop(vm);
        give_up(net);
        let _ = std::fs::remove_dir_all(paths::run_dir(id));
        return 0;
    }
    let launch: Launch = match serde_json::from_str(&line) {
        Ok(l) => {
            tracing::debug!(%id, "launch data received");
            l
        }
        Err(e) => {
            let _ = writeln!(ready, "error: bad launch data: {e}");
            give_up(net);
            return 1;
        }
    };
    let sh = Arc::new(Shared::new(id));
    let sock = paths::attach_socket(id);
    let _ = std::fs::remove_file(&sock);
    match UnixListener::bind(&sock) {
        Ok(l) => accept_clients(l, sh.clone()),
        Err(e) => {
            let _ = writeln!(ready, "error: bind {}: {e}", sock.display());
            give_up(net);
            return 1;
        }
    }
    let _ = writeln!(ready, "attach");
    let log = Arc::new(Mutex::new(None));
    let booted = boot((root, id, shape), (vm, restored), (&launch, &mut net, share), &sh, &log);
    if let Some(p) = net.take() {
        // Boot failed before it waited for the network: wait now, so that nothing is made
        // after the pod's network is taken down.
        let _ = p.rest.join();
    }
    let (mut pod, stdio) = match booted {
        Ok(p) => p,
        Err(report) if report.error.is_none() => {
            // The caller gave up before the container was recorded: nothing to report.
            network::disconnect(root, id);
            let _ = std::fs::remove_file(&sock);
            let _ = std::fs::remove_dir_all(paths::run_dir(id));
            return 0;
        }
        Err(report) => {
            clock.report(root, id, false);
            let _ = writeln!(ready, "error: {}", report.error.clone().unwrap_or_default());
            if wait_attach {
                // `run` is about to attach: let it hear why.
                let deadline = Instant::now() + Duration::from_secs(5);
                while !sh.has_clients() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            return finish(root, id, None, &sh, report);
        }
    };
    if wait_attach {
        // `run` attaches while the guest boots: normally it is here already.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sh.has_clients() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // From here on resizes go straight to the container (its terminal exists since the
    // create); one that came earlier is applied now.
    sh.started.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some((rows, cols)) = lock(&sh.early_size).take() {
        let _ = pod.ctl.resize(&ProcessRef::init(id), rows, cols);
    }
    // The streams open beside the start: until they do, the output waits in the guest's
    // pipes (nothing is lost) and a program reading stdin waits for it.
    let mut streams = Some({
        let (uds, id, log, sh) = (pod.uds.clone(), id.to_string(), log.clone(), sh.clone());
        std::thread::spawn(move || open_streams(&uds, &id, stdio, &log, &sh))
    });
    let mut join_streams = |pod: &mut Pod| -> Result<(), ExitReport> {
        if let Some(h) = streams.take() {
            pod.pumps =
                h.join().unwrap_or_else(|_| Err(failure("stdio thread panicked".into())))?;
            tracing::debug!(%id, "streams open");
        }
        Ok(())
    };
    if let Err(e) = pod.ctl.start(&ProcessRef::init(id)) {
        clock.report(root, id, false);
        let report = start_failure(&e);
        let msg = report.error.clone().unwrap_or_default();
        let _ = writeln!(ready, "error {}: {msg}", report.code);
        let _ = join_streams(&mut pod);
        return finish(root, id, Some(&mut pod), &sh, report);
    }
    tracing::info!(%id, "started");
    if stdio.1 {
        // Clients send input once they hear `Started`: the stdin stream must be open.
        if let Err(report) = join_streams(&mut pod) {
            let _ = writeln!(ready, "error: {}", report.error.clone().unwrap_or_default());
            return finish(root, id, Some(&mut pod), &sh, report);
        }
    }
    {
        // Under the clients lock, so a client attaching now gets `Started` exactly once.
        let mut clients = lock(&sh.clients);
        clients.retain_mut(|c| attach::write(c, &Frame::Started).is_ok());
        sh.running.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // Ask for the exit now (a short program may be done already); record meanwhile.
    let wait = pod.ctl.begin_wait(&ProcessRef::init(id));
    if let Some(state) = &pod.state {
        let now = ironpod_images::time::now_rfc3339();
        let _ = state.set_running(
            id,
            pod.vm.pid() as i32,
            pod.guest_pid,
            &pod.uds.to_string_lossy(),
            &now,
        );
        if let Ok(r) = state.find(id) {
            crate::events::container(root, &r, "start");
        }
    }
    clock.report(root, id, true);
    // `run -d` returns now: the container runs and `ps` says so.
    let _ = writeln!(ready, "ok");
    drop(ready);
    let prober = pod
        .health
        .take()
        .and_then(|(cfg, p)| crate::health::Prober::start(root, id, &pod.uds, cfg, p));
    // Wait on the control session (signals and resizes use sessions of their own).
    let status = wait.and_then(|w| {
        pod.ctl.set_timeout(Duration::from_secs(60 * 60 * 24 * 365))?;
        pod.ctl.end_wait(w)
    });
    drop(prober);
    let _ = pod.ctl.set_timeout(Duration::from_secs(10));
    let streams = join_streams(&mut pod);
    let status_ok = status.is_ok();
    let report = match status {
        Ok(s) => ExitReport {
            code: s.code,
            oom_killed: s.oom_killed,
            error: streams.err().and_then(|r| r.error),
        },
        Err(e) => {
            let why = match pod.vm.wait_exit(Duration::from_secs(2)) {
                Some(s) => format!("the pod VM ended unexpectedly ({})", pod.vm.end_reason(s)),
                None => format!("lost the agent: {e}"),
            };
            ExitReport { code: 255, oom_killed: false, error: Some(why) }
        }
    };
    if status_ok {
        // A holder (a build step reading its changes) has the VM until it goes away; the
        // container stays recorded as running meanwhile, so its files are reached here.
        // A user's stop or kill ends the hold (the program is gone: no signal reaches it).
        let (vm, state) = (&mut pod.vm, &pod.state);
        sh.hold(&report, HOLD_LIMIT, || {
            vm.try_exit().is_some()
                || state
                    .as_ref()
                    .and_then(|s| s.find(id).ok())
                    .is_some_and(|r| r.restart.manually_stopped)
        });
    }
    finish(root, id, Some(&mut pod), &sh, report)
}

/// Records the end, takes the pod down, removes the container if asked, tells the clients.
fn finish(
    root: &Path,
    id: &str,
    mut pod: Option<&mut Pod>,
    sh: &Arc<Shared>,
    report: ExitReport,
) -> i32 {
    tracing::info!(%id, code = report.code, "container ended");
    let state = pod.as_mut().and_then(|p| p.state.take()).or_else(|| State::open(root).ok());
    let auto_remove =
        state.as_ref().and_then(|s| s.find(id).ok()).map(|r| r.auto_remove).unwrap_or(false);
    if let Some(pod) = pod.as_deref_mut() {
        // Let the output drain (a process that left a child holding stdout gets a moment).
        let deadline = Instant::now() + Duration::from_secs(3);
        for p in pod.pumps.drain(..) {
            while !p.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if p.is_finished() {
                let _ = p.join();
            }
        }
        // Normally the guest syncs its disks and resets, so the container's changes stay
        // on its writable disk. A container removed on exit keeps nothing: its VM just ends.
        if auto_remove {
            // The kernel takes the VM apart while the records and files go.
            pod.vm.start_kill();
        } else if pod.vm.try_exit().is_none() {
            let _ = pod.vm.shutdown(&mut pod.ctl, Duration::from_secs(10));
        }
    }
    if let Some(state) = &state {
        // Held until the die is logged (see lifecycle::exit_logged).
        let exit_lock = std::fs::File::create(paths::exit_lock(id));
        if let Ok(f) = &exit_lock {
            // SAFETY: f is an open descriptor; flock takes no pointers.
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(f), libc::LOCK_EX) };
        }
        let now = ironpod_images::time::now_rfc3339();
        let first =
            state.set_exited(id, report.code, report.oom_killed, report.error.as_deref(), &now);
        tracing::debug!(%id, "exit recorded");
        if let (Ok(true), Ok(r)) = (first, state.find(id)) {
            if report.oom_killed {
                crate::events::container(root, &r, "oom");
            }
            let e =
                crate::events::container_event(&r, "die").with("exitCode", report.code.to_string());
            crate::events::emit(root, &e);
        }
        drop(exit_lock);
    }
    let _ = std::fs::remove_file(paths::attach_socket(id));
    if auto_remove {
        if let Ok(store) = ImageStore::open(root) {
            let _ = pod::remove(root, &store, id);
        }
    }
    if let Some(pod) = pod {
        pod.vm.kill();
        tracing::debug!(%id, "VM ended");
    }
    tracing::info!(%id, auto_remove, "pod down");
    sh.broadcast(&Frame::Exit(report));
    for c in lock(&sh.clients).drain(..) {
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
    // After the clients heard the end: the address and namespace go while `run` returns.
    network::disconnect(root, id);
    let _ = std::fs::remove_dir_all(paths::run_dir(id));
    0
}
