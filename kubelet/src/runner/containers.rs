//! The pod's containers in its VM: making and starting one (its spec, its output copied to
//! its log), waiting for its end and probing it on threads that report to the runner, and
//! stopping it (SIGTERM, then SIGKILL after its grace period).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ironpod_kube::pod::{Container, Probe};
use ironpod_pods::agent_client::{AgentClient, ClientError};
use ironpod_pods::logs::{LogLimits, LogWriter, Stream};
use ironpod_protocol::{CreateContainer, ProcessRef, RequestBody, RootfsDisks, StdioStream};

use crate::backoff::Backoff;
use crate::probe::{self, ProbeKind, Target, Timing};
use crate::status::ContainerRun;

/// What the runner's threads report.
#[derive(Debug)]
pub enum Msg {
    /// A container's process ended (or could no longer be waited for).
    Exited {
        /// The slot.
        slot: usize,
        /// The run's guest id.
        guest_id: String,
        /// How it ended.
        status: Result<ironpod_protocol::ExitStatus, String>,
    },
    /// A probe ran.
    Probe {
        /// The slot.
        slot: usize,
        /// The run's guest id.
        guest_id: String,
        /// Which probe.
        kind: ProbeKind,
        /// Passed, or why not.
        result: Result<(), String>,
    },
}

/// One container of the pod and its current run.
pub struct Slot {
    /// Its definition.
    pub c: Container,
    /// Its place among all the pod's containers (init containers first).
    pub index: usize,
    /// An init container.
    pub init: bool,
    /// What the status shows.
    pub run: ContainerRun,
    /// Its image's place in the pod's images.
    pub image: usize,
    /// Its current run's guest id.
    pub guest_id: Option<String>,
    /// The restart back-off.
    pub backoff: Backoff,
    /// When it may start again (`None`: now).
    pub next_start: Option<Instant>,
    /// When the current run started.
    pub started: Option<Instant>,
    /// Its probes' stop flag (set when the run ends).
    pub stop_probes: Option<Arc<AtomicBool>>,
    /// The startup probe passed (shared with the probe threads).
    pub started_flag: Arc<AtomicBool>,
    /// Successes and failures in a row, per probe.
    pub streaks: HashMap<ProbeKind, (u32, u32)>,
    /// Why the runner killed the current run (a failed liveness probe …).
    pub killed_for: Option<String>,
    /// An init container that succeeded.
    pub done: bool,
    /// A run is being stopped: when SIGKILL is due.
    pub kill_at: Option<Instant>,
    /// The output copiers of the current run.
    pub pumps: Vec<JoinHandle<()>>,
    /// Its image's HEALTHCHECK as a liveness probe (used when the manifest gives none; set
    /// at each boot from the image the pod uses then).
    pub image_liveness: Option<Probe>,
}

impl Slot {
    /// A container not made yet.
    pub fn new(c: &Container, index: usize, init: bool, image: usize) -> Slot {
        Slot {
            run: ContainerRun::new(&c.name, &c.image),
            c: c.clone(),
            index,
            init,
            image,
            guest_id: None,
            backoff: Backoff::default(),
            next_start: None,
            started: None,
            stop_probes: None,
            started_flag: Arc::new(AtomicBool::new(false)),
            streaks: HashMap::new(),
            killed_for: None,
            done: false,
            kill_at: None,
            pumps: Vec::new(),
            image_liveness: None,
        }
    }

    /// The guest id of run `n`: `<index>-<name>.<n>` (names are at most 63 characters,
    /// guest ids 64).
    pub fn guest_id_for(&self, n: i64) -> String {
        let name: String = self.c.name.chars().take(48).collect();
        format!("{}-{name}.{n}", self.index)
    }

    /// Its liveness probe: the manifest's, else its image's HEALTHCHECK.
    pub fn liveness(&self) -> Option<&Probe> {
        if self.init {
            return None;
        }
        self.c.liveness_probe.as_ref().or(self.image_liveness.as_ref())
    }

    /// The probes the container has.
    pub fn probes(&self) -> Vec<(ProbeKind, Probe)> {
        let mut out = Vec::new();
        if let Some(p) = &self.c.startup_probe {
            out.push((ProbeKind::Startup, p.clone()));
        }
        if let Some(p) = self.liveness() {
            out.push((ProbeKind::Liveness, p.clone()));
        }
        if let Some(p) = &self.c.readiness_probe {
            out.push((ProbeKind::Readiness, p.clone()));
        }
        out
    }

    /// Ends the current run's probes.
    pub fn stop_probes(&mut self) {
        if let Some(s) = self.stop_probes.take() {
            s.store(true, Ordering::SeqCst);
        }
    }
}

/// What starting a container needs.
pub struct StartInput<'a> {
    /// The VM's vsock socket.
    pub uds: &'a Path,
    /// The spec.
    pub spec: oci_spec::runtime::Spec,
    /// Its image's layer disk serials.
    pub layers: Vec<String>,
    /// The writable disk's serial.
    pub writable: &'a str,
    /// Its log.
    pub log: PathBuf,
    /// Where its threads report.
    pub tx: Sender<Msg>,
    /// The pod's address and network namespace (network probes).
    pub pod_ip: Option<std::net::Ipv4Addr>,
    /// The namespace network probes connect from.
    pub net_ns: Option<PathBuf>,
}

/// Why a start failed: the reason word and message the status shows.
#[derive(Debug)]
pub struct StartError {
    /// `CreateContainerError`, `StartError` …
    pub reason: &'static str,
    /// The message.
    pub message: String,
    /// The exit code a failed start counts as.
    pub code: i32,
}

fn agent_msg(e: &ClientError) -> String {
    match e {
        ClientError::Agent(a) => a.message.clone(),
        e => e.to_string(),
    }
}

/// Makes and starts run `guest_id` of the slot's container: its output goes to its log,
/// a thread waits for its end, and its probes start. Returns its init's pid in the guest.
pub fn start(
    ctl: &mut AgentClient,
    slot: &mut Slot,
    slot_no: usize,
    guest_id: &str,
    i: StartInput<'_>,
) -> Result<i32, StartError> {
    let process = i.spec.process().clone().unwrap_or_default();
    let pid = ctl
        .create_container(CreateContainer {
            id: guest_id.to_string(),
            spec: Box::new(i.spec),
            rootfs: RootfsDisks { layers: i.layers, writable: i.writable.to_string() },
            stdin: slot.c.stdin,
        })
        .map_err(|e| StartError {
            reason: "CreateContainerError",
            message: agent_msg(&e),
            code: 128,
        })?;
    if let Some(dir) = i.log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let log = LogWriter::open(&i.log, LogLimits::default()).map_err(|e| StartError {
        reason: "CreateContainerError",
        message: format!("open the log: {e}"),
        code: 128,
    })?;
    let log = Arc::new(std::sync::Mutex::new(log));
    let mut pumps = Vec::new();
    let streams: &[(StdioStream, Stream)] = match slot.c.tty {
        true => &[(StdioStream::Stdout, Stream::Stdout)],
        false => &[(StdioStream::Stdout, Stream::Stdout), (StdioStream::Stderr, Stream::Stderr)],
    };
    for (which, stream) in streams {
        let s = AgentClient::open(i.uds, Duration::from_secs(30))
            .and_then(|c| {
                c.into_stream(RequestBody::OpenStdio {
                    process: ProcessRef::init(guest_id),
                    stream: *which,
                })
            })
            .map_err(|e| StartError {
                reason: "CreateContainerError",
                message: format!("open its output: {}", agent_msg(&e)),
                code: 128,
            })?;
        pumps.push(pump(s, *stream, log.clone()));
    }
    let pref = ProcessRef::init(guest_id);
    if let Err(e) = ctl.start(&pref) {
        let code = match &e {
            ClientError::Agent(a) if a.kind == ironpod_protocol::ErrorKind::NotFound => 127,
            ClientError::Agent(a) if a.kind == ironpod_protocol::ErrorKind::PermissionDenied => 126,
            _ => 128,
        };
        return Err(StartError { reason: "StartError", message: agent_msg(&e), code });
    }
    slot.pumps = pumps;
    // The waiter: its own session, no time limit.
    let (uds, tx, id) = (i.uds.to_path_buf(), i.tx.clone(), guest_id.to_string());
    std::thread::spawn(move || {
        let status = AgentClient::open(&uds, Duration::from_secs(30))
            .and_then(|mut c| {
                c.set_timeout(Duration::from_secs(365 * 86_400))?;
                c.wait(&ProcessRef::init(&id))
            })
            .map_err(|e| agent_msg(&e));
        let _ = tx.send(Msg::Exited { slot: slot_no, guest_id: id, status });
    });
    // The probes: a thread each, until the run ends.
    let stop = Arc::new(AtomicBool::new(false));
    slot.started_flag.store(slot.c.startup_probe.is_none(), Ordering::SeqCst);
    for (kind, p) in slot.probes() {
        let target = Target {
            uds: i.uds.to_path_buf(),
            container_id: guest_id.to_string(),
            process: process.clone(),
            pod_ip: i.pod_ip,
            net_ns: i.net_ns.clone(),
        };
        let (stop, started, tx, c, id) = (
            stop.clone(),
            slot.started_flag.clone(),
            i.tx.clone(),
            slot.c.clone(),
            guest_id.to_string(),
        );
        std::thread::spawn(move || {
            prober(kind, &p, &c, &target, (slot_no, &id), (&stop, &started), &tx)
        });
    }
    slot.stop_probes = Some(stop);
    Ok(pid)
}

/// Sleeps up to `d`, waking early when `stop` is set; returns whether it was.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now()
        .checked_add(d)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(200)));
    }
    stop.load(Ordering::SeqCst)
}

/// Runs one probe of a run until it is told to stop: after the initial delay, once a
/// period. Liveness and readiness probes wait for the startup probe.
fn prober(
    kind: ProbeKind,
    p: &Probe,
    c: &Container,
    target: &Target,
    (slot, id): (usize, &str),
    (stop, started): (&AtomicBool, &AtomicBool),
    tx: &Sender<Msg>,
) {
    let t = Timing::of(p);
    if nap(t.initial_delay, stop) {
        return;
    }
    loop {
        let gated = kind != ProbeKind::Startup && !started.load(Ordering::SeqCst);
        if !gated {
            let result = probe::run(p, c, target);
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let msg = Msg::Probe { slot, guest_id: id.to_string(), kind, result };
            if tx.send(msg).is_err() {
                return;
            }
        }
        if kind == ProbeKind::Startup && started.load(Ordering::SeqCst) {
            return;
        }
        if nap(t.period, stop) {
            return;
        }
    }
}

/// Copies one output stream of a run to its log.
fn pump(
    mut from: UnixStream,
    stream: Stream,
    log: Arc<std::sync::Mutex<LogWriter>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut w = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = w.write(stream, &buf[..n]) {
                tracing::warn!("container log write failed: {e}");
            }
        }
    })
}

/// Asks a run to stop: SIGTERM now (SIGKILL is the caller's, once `grace` has passed).
pub fn terminate(ctl: &mut AgentClient, guest_id: &str) {
    if let Err(e) = ctl.signal(&ProcessRef::init(guest_id), libc::SIGTERM, false) {
        tracing::debug!(%guest_id, "SIGTERM: {e}");
    }
}

/// Kills every process of a run.
pub fn kill(ctl: &mut AgentClient, guest_id: &str) {
    if let Err(e) = ctl.signal(&ProcessRef::init(guest_id), libc::SIGKILL, true) {
        tracing::debug!(%guest_id, "SIGKILL: {e}");
    }
}

/// Forgets an ended run in the guest (its writable layer too).
pub fn remove(ctl: &mut AgentClient, guest_id: &str) {
    if let Err(e) = ctl.delete_container(guest_id, true) {
        tracing::debug!(%guest_id, "delete: {e}");
    }
}

/// The kubelet's words for how a run ended.
pub fn exit_reason(code: i32, oom: bool) -> &'static str {
    match (code, oom) {
        (_, true) => "OOMKilled",
        (0, _) => "Completed",
        _ => "Error",
    }
}

/// Takes in a probe result: returns `Some(true)` when the probe now counts as passing,
/// `Some(false)` as failing, `None` when it did not change.
pub fn streak(slot: &mut Slot, kind: ProbeKind, passed: bool, t: &Timing) -> Option<bool> {
    let (ok, bad) = slot.streaks.entry(kind).or_default();
    if passed {
        *ok += 1;
        *bad = 0;
        (*ok == t.success_threshold).then_some(true)
    } else {
        *bad += 1;
        *ok = 0;
        (*bad == t.failure_threshold).then_some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_streaks() {
        let c = Container { name: "x".repeat(63), ..Default::default() };
        let mut s = Slot::new(&c, 3, false, 0);
        let id = s.guest_id_for(12);
        assert!(id.len() <= 64 && id.starts_with("3-xxx") && id.ends_with(".12"), "{id}");
        assert!(ironpod_protocol::valid_id(&id));
        let t = Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 2,
            failure_threshold: 3,
        };
        assert_eq!(streak(&mut s, ProbeKind::Readiness, true, &t), None);
        assert_eq!(streak(&mut s, ProbeKind::Readiness, true, &t), Some(true));
        assert_eq!(streak(&mut s, ProbeKind::Readiness, true, &t), None);
        assert_eq!(streak(&mut s, ProbeKind::Readiness, false, &t), None);
        assert_eq!(streak(&mut s, ProbeKind::Readiness, false, &t), None);
        assert_eq!(streak(&mut s, ProbeKind::Readiness, false, &t), Some(false));
        assert_eq!(streak(&mut s, ProbeKind::Readiness, false, &t), None);
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(137, true), "OOMKilled");
        assert_eq!(exit_reason(1, false), "Error");
    }
}
