//! The pod monitor: one detached process per CLI pod (like podman's conmon). It boots the
//! VM, creates the container in it, serves the attach socket, copies the container's output
//! to its log (which outlives the pod) and to attached clients, records how the container
//! ended, and takes the pod down.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ironpod_images::ImageStore;
use ironpod_protocol::{
    CreateContainer, ErrorKind, ProcessRef, RequestBody, RootfsDisks, StdioStream,
};
use ironpod_vmm::config::DiskConfig;

use crate::agent_client::{AgentClient, ClientError};
use crate::attach::{self, ExitReport, Frame};
use crate::logs::{LogWriter, Stream};
use crate::pod::{self, PodError};
use crate::spec::RunOptions;
use crate::state::State;
use crate::vm::{RunningVm, VmSpec};

/// Guest memory when no limit is set.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Guest memory on top of a container's memory limit (kernel, agent, page cache).
pub const MEMORY_OVERHEAD_MIB: u64 = 128;

type Clients = Arc<Mutex<Vec<UnixStream>>>;
/// The attach listener, the output pumps and the stdin stream of a started pod.
type Streams = (UnixListener, Vec<JoinHandle<()>>, Option<UnixStream>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn broadcast(clients: &Clients, f: &Frame) {
    lock(clients).retain_mut(|c| attach::write(c, f).is_ok());
}

/// The VM's size for a container's options.
pub fn vm_size(o: &RunOptions) -> (u8, u64) {
    let host_cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let vcpus = o.cpus.map(|c| c.ceil().max(1.0) as usize).unwrap_or(1).min(host_cpus).min(32);
    let mem = match o.memory {
        Some(m) => ((m >> 20) + MEMORY_OVERHEAD_MIB).max(DEFAULT_MEMORY_MIB),
        None => DEFAULT_MEMORY_MIB,
    };
    (vcpus as u8, mem)
}

/// What the monitor hands to `run` when the start fails: Docker's exit codes.
fn start_failure(e: &ClientError) -> ExitReport {
    let code = match e {
        ClientError::Agent(a) if a.kind == ErrorKind::NotFound => 127,
        ClientError::Agent(a) if a.kind == ErrorKind::PermissionDenied => 126,
        _ => 125,
    };
    let msg = match e {
        ClientError::Agent(a) => a.message.clone(),
        e => e.to_string(),
    };
    ExitReport { code, oom_killed: false, error: Some(msg) }
}

struct Pod {
    vm: RunningVm,
    uds: PathBuf,
    guest_pid: i32,
}

/// Boots the VM and creates the container (not started).
fn boot(root: &Path, id: &str) -> Result<(Pod, RunOptions, bool), PodError> {
    let state = State::open(root)?;
    let rec = state.find(id)?;
    let opts: RunOptions = serde_json::from_str(&rec.options)
        .map_err(|e| PodError::Monitor(format!("bad options record: {e}")))?;
    let spec: oci_spec::runtime::Spec = serde_json::from_str(&rec.spec)
        .map_err(|e| PodError::Monitor(format!("bad spec record: {e}")))?;
    let store = ImageStore::open(root)?;
    let layers = store.layer_disks_of(&pod::image_digest(&rec)?)?;
    let rw = pod::writable_disk(root, id);
    let mut vm_spec = VmSpec::with_defaults().map_err(|e| PodError::Monitor(e.to_string()))?;
    (vm_spec.vcpus, vm_spec.memory_mib) = vm_size(&opts);
    vm_spec.disks = layers
        .iter()
        .map(|p| DiskConfig { path: p.clone(), read_only: true })
        .chain(std::iter::once(DiskConfig { path: rw.clone(), read_only: false }))
        .collect();
    tracing::info!(%id, "starting the VMM");
    let mut vm = RunningVm::start(&vm_spec).map_err(|e| PodError::Monitor(e.to_string()))?;
    let mut ctl =
        vm.wait_agent(Duration::from_secs(120)).map_err(|e| PodError::Monitor(e.to_string()))?;
    tracing::info!(%id, "agent ready");
    let tty = opts.tty;
    let guest_pid = ctl
        .create_container(CreateContainer {
            id: id.to_string(),
            spec: Box::new(spec),
            rootfs: RootfsDisks {
                layers: layers.iter().map(|p| pod::disk_serial(p)).collect(),
                writable: pod::disk_serial(&rw),
            },
            stdin: opts.interactive,
        })
        .map_err(|e| PodError::Monitor(format!("create the container: {}", agent_message(&e))))?;
    tracing::info!(%id, "container created in the guest");
    let uds = vm.vsock_path().to_path_buf();
    Ok((Pod { vm, uds, guest_pid }, opts, tty))
}

fn agent_message(e: &ClientError) -> String {
    match e {
        ClientError::Agent(a) => a.message.clone(),
        e => e.to_string(),
    }
}

fn open_stdio(uds: &Path, id: &str, which: StdioStream) -> Result<UnixStream, ClientError> {
    AgentClient::open(uds, Duration::from_secs(30))?
        .into_stream(RequestBody::OpenStdio { process: ProcessRef::init(id), stream: which })
}

/// Copies one output stream of the container to the log and to attached clients.
fn pump(
    mut from: UnixStream,
    stream: Stream,
    log: Arc<Mutex<Option<LogWriter>>>,
    clients: Clients,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if let Some(w) = lock(&log).as_mut() {
                if let Err(e) = w.write(stream, chunk) {
                    eprintln!("ironpod monitor: log write failed: {e}");
                }
            }
            let f = match stream {
                Stream::Stdout => Frame::Stdout(chunk.to_vec()),
                Stream::Stderr => Frame::Stderr(chunk.to_vec()),
            };
            broadcast(&clients, &f);
        }
    })
}

/// Serves one attached client's input: stdin bytes, terminal size, signals.
fn serve_client(
    mut c: UnixStream,
    uds: PathBuf,
    id: String,
    stdin: Arc<Mutex<Option<UnixStream>>>,
) {
    let mut ctl: Option<AgentClient> = None;
    loop {
        let f = match attach::read(&mut c) {
            Ok(Some(f)) => f,
            _ => return,
        };
        match f {
            Frame::Stdin(data) => {
                let mut s = lock(&stdin);
                if let Some(w) = s.as_mut() {
                    if w.write_all(&data).is_err() {
                        *s = None;
                    }
                }
            }
            Frame::StdinClose => {
                if let Some(w) = lock(&stdin).take() {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                }
            }
            Frame::Resize { .. } | Frame::Signal(_) => {
                if ctl.is_none() {
                    ctl = AgentClient::open(&uds, Duration::from_secs(10)).ok();
                }
                if let Some(a) = ctl.as_mut() {
                    control(a, &id, &f);
                }
            }
            _ => {}
        }
    }
}

fn control(a: &mut AgentClient, id: &str, f: &Frame) {
    let p = ProcessRef::init(id);
    let _ = match f {
        Frame::Resize { rows, cols } => a.resize(&p, *rows, *cols),
        Frame::Signal(s) => a.signal(&p, *s, false),
        _ => Ok(()),
    };
}

/// Runs the monitor for container `id`. `ready` gets "ok" once the container is created (or
/// "error: …"). Returns the process exit code.
pub fn run(root: &Path, id: &str, wait_attach: bool, mut ready: std::fs::File) -> i32 {
    let state = match State::open(root) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(ready, "error: {e}");
            return 1;
        }
    };
    let now = ironpod_images::time::now_rfc3339;
    let (mut pod, opts, tty) = match boot(root, id) {
        Ok(p) => p,
        Err(e) => {
            let _ = state.set_exited(id, 125, false, Some(&e.to_string()), &now());
            let _ = writeln!(ready, "error: {e}");
            return 1;
        }
    };
    let clients: Clients = Arc::default();
    let log = Arc::new(Mutex::new(LogWriter::open(&pod::log_path(root, id)).ok()));
    let setup = (|| -> Result<Streams, String> {
        let out = open_stdio(&pod.uds, id, StdioStream::Stdout).map_err(|e| e.to_string())?;
        let mut pumps = vec![pump(out, Stream::Stdout, log.clone(), clients.clone())];
        if !tty {
            let err = open_stdio(&pod.uds, id, StdioStream::Stderr).map_err(|e| e.to_string())?;
            pumps.push(pump(err, Stream::Stderr, log.clone(), clients.clone()));
        }
        let stdin = if opts.interactive {
            Some(open_stdio(&pod.uds, id, StdioStream::Stdin).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let sock = pod::attach_socket(id);
        let _ = std::fs::remove_file(&sock);
        let l = UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
        Ok((l, pumps, stdin))
    })();
    let (listener, pumps, stdin) = match setup {
        Ok(s) => s,
        Err(e) => {
            let _ = state.set_exited(id, 125, false, Some(&e), &now());
            let _ = writeln!(ready, "error: {e}");
            return 1;
        }
    };
    let stdin = Arc::new(Mutex::new(stdin));
    tracing::info!(%id, "streams open");
    let _ = writeln!(ready, "ok");
    drop(ready);
    // The first client (from `run`) is served before the start, so no output is missed.
    if wait_attach {
        let _ = listener.set_nonblocking(true);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut c, _)) => {
                    let _ = c.set_nonblocking(false);
                    if let Ok(Some(Frame::Hello)) = attach::read(&mut c) {
                        add_client(c, &clients, &pod.uds, id, &stdin);
                        break;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let _ = listener.set_nonblocking(false);
    }
    {
        let clients = clients.clone();
        let uds = pod.uds.clone();
        let id = id.to_string();
        let stdin = stdin.clone();
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                let mut c = c;
                if let Ok(Some(Frame::Hello)) = attach::read(&mut c) {
                    add_client(c, &clients, &uds, &id, &stdin);
                }
            }
        });
    }
    let mut ctl = match AgentClient::open(&pod.uds, Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => return finish(root, id, &mut pod, &clients, pumps, &state, start_failure(&e)),
    };
    if let Err(e) = ctl.start(&ProcessRef::init(id)) {
        let report = start_failure(&e);
        return finish(root, id, &mut pod, &clients, pumps, &state, report);
    }
    let _ = state.set_running(
        id,
        pod.vm.pid() as i32,
        pod.guest_pid,
        &pod.uds.to_string_lossy(),
        &now(),
    );
    tracing::info!(%id, "started");
    broadcast(&clients, &Frame::Started);
    // Wait on its own session: the control one stays free.
    let status = AgentClient::open(&pod.uds, Duration::from_secs(30)).and_then(|mut w| {
        w.set_timeout(Duration::from_secs(60 * 60 * 24 * 365))?;
        w.wait(&ProcessRef::init(id))
    });
    let report = match status {
        Ok(s) => ExitReport { code: s.code, oom_killed: s.oom_killed, error: None },
        Err(e) => {
            let vmm = pod.vm.wait_exit(Duration::from_secs(2));
            let why = match vmm {
                Some(s) => format!("the pod VM ended unexpectedly ({s})"),
                None => format!("lost the agent: {e}"),
            };
            ExitReport { code: 255, oom_killed: false, error: Some(why) }
        }
    };
    finish(root, id, &mut pod, &clients, pumps, &state, report)
}

fn add_client(
    c: UnixStream,
    clients: &Clients,
    uds: &Path,
    id: &str,
    stdin: &Arc<Mutex<Option<UnixStream>>>,
) {
    let Ok(reader) = c.try_clone() else { return };
    lock(clients).push(c);
    let (uds, id, stdin) = (uds.to_path_buf(), id.to_string(), stdin.clone());
    std::thread::spawn(move || serve_client(reader, uds, id, stdin));
}

/// Records the end, tells the clients, takes the pod down.
fn finish(
    root: &Path,
    id: &str,
    pod: &mut Pod,
    clients: &Clients,
    pumps: Vec<JoinHandle<()>>,
    state: &State,
    report: ExitReport,
) -> i32 {
    tracing::info!(%id, code = report.code, "container ended");
    // Let the output drain (a process that left a child holding stdout gets a moment).
    let deadline = Instant::now() + Duration::from_secs(3);
    for p in pumps {
        while !p.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if p.is_finished() {
            let _ = p.join();
        }
    }
    let _ = state.set_exited(
        id,
        report.code,
        report.oom_killed,
        report.error.as_deref(),
        &ironpod_images::time::now_rfc3339(),
    );
    // Take the pod down before telling the clients, so that when `run` returns the VM is
    // gone. The container's changes stay on its writable disk.
    if pod.vm.try_exit().is_none() {
        if let Ok(mut ctl) = AgentClient::open(&pod.uds, Duration::from_secs(10)) {
            let _ = ctl.delete_container(id, false);
            let _ = pod.vm.shutdown(&mut ctl, Duration::from_secs(10));
        }
    }
    pod.vm.kill();
    let _ = std::fs::remove_file(pod::attach_socket(id));
    if state.find(id).map(|r| r.auto_remove).unwrap_or(false) {
        if let Ok(store) = ImageStore::open(root) {
            let _ = pod::remove(root, &store, id);
        }
    }
    tracing::info!(%id, "pod down");
    broadcast(clients, &Frame::Exit(report));
    for c in lock(clients).drain(..) {
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
    let _ = std::fs::remove_dir_all(pod::run_dir(id));
    0
}
