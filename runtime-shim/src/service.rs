//! The task service containerd calls over ttrpc: tasks (containers) of one pod VM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use containerd_shim::api;
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code, Status as RpcStatus};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};
use ironpod_pods::agent_client::ClientError;
use ironpod_protocol::{CreateContainer, ExecProcess, ProcessRef};
use oci_spec::runtime::Spec;

use crate::guest_spec;
use crate::pod::PodVm;
use crate::process::{Process, Status};
use crate::rootfs::{self, LayerCache, RootMount};
use crate::stdio::{Pumps, StdioPaths};
use crate::{paths, ANNOTATION_CONTAINER_TYPE};

/// A container of the pod.
#[derive(Debug)]
struct Task {
    bundle: String,
    init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// This task booted the pod VM (the CRI sandbox, or a pod of one).
    owns_pod: bool,
    /// Its processes are frozen.
    paused: std::sync::atomic::AtomicBool,
}

/// The shim's task service.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    publisher: Mutex<RemotePublisher>,
    exit: Arc<ExitSignal>,
    grouping: String,
    pod: Mutex<Option<Arc<PodVm>>>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn err(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    let msg = msg.into();
    log::warn!("{msg}");
    ttrpc::Error::RpcStatus(RpcStatus { code: code.into(), message: msg, ..Default::default() })
}

fn agent_err(e: ClientError) -> ttrpc::Error {
    match &e {
        ClientError::Agent(a) => match a.kind {
            ironpod_protocol::ErrorKind::NotFound => err(Code::NOT_FOUND, a.message.clone()),
            ironpod_protocol::ErrorKind::BadRequest => {
                err(Code::INVALID_ARGUMENT, a.message.clone())
            }
            ironpod_protocol::ErrorKind::AlreadyExists => {
                err(Code::ALREADY_EXISTS, a.message.clone())
            }
            ironpod_protocol::ErrorKind::InvalidState => {
                err(Code::FAILED_PRECONDITION, a.message.clone())
            }
            ironpod_protocol::ErrorKind::Unsupported => err(Code::UNIMPLEMENTED, a.message.clone()),
            _ => err(Code::INTERNAL, a.message.clone()),
        },
        _ => err(Code::UNAVAILABLE, format!("pod VM agent: {e}")),
    }
}

/// An agent error, or — when the pod VM has died — why it did.
fn pod_err(pod: &PodVm, e: ClientError) -> ttrpc::Error {
    match pod.exit_reason() {
        Some(why) => err(Code::UNAVAILABLE, format!("the pod VM has exited ({why}): {e}")),
        None => agent_err(e),
    }
}

fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    MessageField::some(ts)
}

impl Service {
    /// A service for the pod `grouping` in containerd namespace `namespace`.
    pub fn new(
        namespace: &str,
        grouping: &str,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Service {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                publisher: Mutex::new(publisher),
                exit,
                grouping: grouping.to_string(),
                pod: Mutex::new(None),
                tasks: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    /// Publishes an event to containerd. After a containerd restart the old connection is
    /// dead: the publisher reconnects (containerd's TTRPC address is in our environment)
    /// and sends it again.
    fn publish(&self, topic: &str, make: &dyn Fn() -> Box<dyn Event>) {
        let mut p = lock(&self.publisher);
        if p.publish(Default::default(), topic, &self.namespace, make()).is_ok() {
            return;
        }
        match std::env::var("TTRPC_ADDRESS").ok().and_then(|a| RemotePublisher::new(a).ok()) {
            Some(np) => {
                *p = np;
                if let Err(e) = p.publish(Default::default(), topic, &self.namespace, make()) {
                    log::warn!("publish {topic}: {e}");
                }
            }
            None => log::warn!("publish {topic}: containerd is unreachable"),
        }
    }

    fn task(&self, id: &str) -> TtrpcResult<Arc<Task>> {
        lock(&self.tasks)
            .get(id)
            .cloned()
            .ok_or_else(|| err(Code::NOT_FOUND, format!("task {id} not found")))
    }

    fn process(&self, id: &str, exec_id: &str) -> TtrpcResult<(Arc<Task>, Arc<Process>)> {
        let t = self.task(id)?;
        if exec_id.is_empty() {
            let p = t.init.clone();
            return Ok((t, p));
        }
        let p = lock(&t.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {exec_id} of {id} not found")))?;
        Ok((t, p))
    }

    fn pod(&self) -> TtrpcResult<Arc<PodVm>> {
        lock(&self.pod)
            .clone()
            .ok_or_else(|| err(Code::FAILED_PRECONDITION, "the pod VM is not running"))
    }

    fn create(&self, req: &api::CreateTaskRequest) -> TtrpcResult<u32> {
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(err(Code::UNIMPLEMENTED, "checkpoint/restore is not supported"));
        }
        if !ironpod_protocol::valid_id(&req.id) {
            return Err(err(
                Code::INVALID_ARGUMENT,
                format!("task id {:?}: 1–64 characters of [A-Za-z0-9_.-]", req.id),
            ));
        }
        if lock(&self.tasks).contains_key(&req.id) {
            return Err(err(Code::ALREADY_EXISTS, format!("task {} exists", req.id)));
        }
        let bundle = Path::new(&req.bundle);
        let mut spec = Spec::load(bundle.join("config.json"))
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("bundle config.json: {e}")))?;
        let joins = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CONTAINER_TYPE))
            .is_some_and(|t| t == "container");
        let mounts: Vec<RootMount> = req
            .rootfs
            .iter()
            .map(|m| RootMount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let lowers = rootfs::lower_dirs(&mounts, bundle)
            .map_err(|e| err(Code::INVALID_ARGUMENT, e.to_string()))?;
        let cache = LayerCache::new(paths::layer_cache());
        let owns_pod = !joins;
        let pod = {
            let mut slot = lock(&self.pod);
            match (&*slot, owns_pod) {
                (Some(p), false) => p.clone(),
                (None, false) => {
                    return Err(err(
                        Code::FAILED_PRECONDITION,
                        format!("container {} joins a pod whose sandbox is not running", req.id),
                    ))
                }
                (Some(_), true) => {
                    return Err(err(
                        Code::ALREADY_EXISTS,
                        format!("this shim's pod already runs; {} cannot boot another", req.id),
                    ))
                }
                (None, true) => {
                    let layers: Vec<PathBuf> = lowers
                        .iter()
                        .map(|d| cache.disk_for(d))
                        .collect::<Result<_, _>>()
                        .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
                    let (vcpus, mem) = crate::vm_size(&spec);
                    // A CRI sandbox gets slots for its containers' other images.
                    let spare = if crate::is_sandbox(&spec) {
                        crate::pod::spare_slots(layers.len())
                    } else {
                        0
                    };
                    let p = PodVm::boot(
                        &paths::state_root(),
                        &paths::pod_dir(&self.grouping),
                        layers,
                        spare,
                        crate::network_namespace(&spec),
                        vcpus,
                        mem,
                    )
                    .map_err(|e| err(Code::INTERNAL, e))?;
                    let p = Arc::new(p);
                    *slot = Some(p.clone());
                    p
                }
            }
        };
        let result = self.create_in(&pod, req, &mut spec, &cache, &lowers);
        if result.is_err() {
            if owns_pod {
                pod.stop();
                *lock(&self.pod) = None;
            } else {
                pod.release(&req.id);
            }
        }
        let stdio = result?;
        let with_stdin = !stdio.stdin.is_empty();
        let init = Process::new(ProcessRef::init(&req.id), stdio, with_stdin);
        let task = Arc::new(Task {
            bundle: req.bundle.clone(),
            init,
            execs: Mutex::new(HashMap::new()),
            owns_pod,
            paused: std::sync::atomic::AtomicBool::new(false),
        });
        lock(&self.tasks).insert(req.id.clone(), task);
        Ok(pod.pid())
    }

    fn create_in(
        &self,
        pod: &PodVm,
        req: &api::CreateTaskRequest,
        spec: &mut Spec,
        cache: &LayerCache,
        lowers: &[PathBuf],
    ) -> TtrpcResult<StdioPaths> {
        let rootfs = pod.rootfs(&req.id, cache, lowers).map_err(|e| err(Code::INTERNAL, e))?;
        let sandbox_pid = pod.pid();
        let sandbox_guest_pid =
            lock(&self.tasks).values().find(|t| t.owns_pod).map(|t| t.init.r#ref.container.clone());
        let guest_pid = |host: u32| -> Option<i32> {
            if host != sandbox_pid {
                return None;
            }
            let id = sandbox_guest_pid.as_ref()?;
            pod.ctl().processes(id).ok()?.first().map(|p| p.pid)
        };
        let binds =
            guest_spec::for_guest(spec, guest_pid).map_err(|e| err(Code::INVALID_ARGUMENT, e))?;
        if !binds.pod_shm.is_empty() {
            let shm = pod.shm().map_err(|e| pod_err(pod, e))?;
            for &i in &binds.pod_shm {
                guest_spec::set_mount_source(spec, i, shm);
            }
        }
        for m in binds.shared {
            let guest = pod
                .share_path(&req.id, m.mount, &m.source, m.read_only)
                .map_err(|e| err(Code::INTERNAL, format!("share {}: {e}", m.source.display())))?;
            guest_spec::set_mount_source(spec, m.mount, &guest);
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        if let Some(p) = spec.process_mut() {
            p.set_terminal(Some(req.terminal));
        }
        pod.ctl()
            .create_container(CreateContainer {
                id: req.id.clone(),
                spec: Box::new(spec.clone()),
                rootfs,
                stdin: !req.stdin.is_empty(),
            })
            .map_err(|e| pod_err(pod, e))?;
        Ok(stdio)
    }

    fn set_paused(&self, id: &str, paused: bool) -> TtrpcResult<()> {
        let task = self.task(id)?;
        if task.init.status() != Status::Running {
            return Err(err(Code::FAILED_PRECONDITION, format!("task {id} is not running")));
        }
        let pod = self.pod()?;
        let r = pod.ctl().freeze(id, paused);
        r.map_err(|e| pod_err(&pod, e))?;
        task.paused.store(paused, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Starts a created process; `task` and `p` from [`Inner::process`].
    fn start(self: &Arc<Self>, task: &Arc<Task>, p: &Arc<Process>) -> TtrpcResult<u32> {
        if p.status() != Status::Created {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("{:?} was started already", p.r#ref),
            ));
        }
        let pod = self.pod()?;
        let pumps = Pumps::open(pod.uds(), &p.r#ref, &p.stdio, p.with_stdin)
            .map_err(|e| pod_err(&pod, e))?;
        p.set_pumps(pumps);
        if let Err(e) = pod.ctl().start(&p.r#ref) {
            // containerd reports a failed start; the process will never run.
            p.set_stopped(if matches!(&e, ClientError::Agent(a) if a.kind == ironpod_protocol::ErrorKind::NotFound) { 127 } else { 126 }, SystemTime::now(), false);
            return Err(pod_err(&pod, e));
        }
        let me = self.clone();
        let container = task.init.r#ref.container.clone();
        let pid = pod.pid();
        p.started(pod.uds().to_path_buf(), move |proc_, code, at, oom| {
            if oom {
                me.publish(topics::TASK_OOM_EVENT_TOPIC, &|| {
                    Box::new(TaskOOM { container_id: container.clone(), ..Default::default() })
                });
            }
            me.publish(topics::TASK_EXIT_EVENT_TOPIC, &|| {
                Box::new(TaskExit {
                    container_id: container.clone(),
                    id: proc_.r#ref.exec_id.clone().unwrap_or_else(|| container.clone()),
                    pid,
                    exit_status: code,
                    exited_at: timestamp(at),
                    ..Default::default()
                })
            });
        });
        Ok(pid)
    }
}

impl containerd_shim::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        log::info!("create {} (bundle {})", req.id, req.bundle);
        let pid = self.inner.create(&req)?;
        self.inner.publish(topics::TASK_CREATE_EVENT_TOPIC, &|| {
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            })
        });
        Ok(api::CreateTaskResponse { pid, ..Default::default() })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        log::debug!("start {:?}", req);
        let (task, p) = self.inner.process(&req.id, &req.exec_id)?;
        let pid = self.inner.start(&task, &p)?;
        if req.exec_id.is_empty() {
            self.inner.publish(topics::TASK_START_EVENT_TOPIC, &|| {
                Box::new(TaskStart { container_id: req.id.clone(), pid, ..Default::default() })
            });
        } else {
            self.inner.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, &|| {
                Box::new(TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                })
            });
        }
        Ok(api::StartResponse { pid, ..Default::default() })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        log::debug!("state {:?}", req);
        let (task, p) = self.inner.process(&req.id, &req.exec_id)?;
        let pid = lock(&self.inner.pod).as_ref().map(|p| p.pid()).unwrap_or(0);
        let mut r = api::StateResponse {
            id: req.id.clone(),
            bundle: task.bundle.clone(),
            pid,
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        r.status = match p.status() {
            Status::Created => api::Status::CREATED,
            Status::Running if task.paused.load(std::sync::atomic::Ordering::SeqCst) => {
                api::Status::PAUSED
            }
            Status::Running => api::Status::RUNNING,
            Status::Stopped { code, at, .. } => {
                r.exit_status = code;
                r.exited_at = timestamp(at);
                api::Status::STOPPED
            }
        }
        .into();
        Ok(r)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        log::debug!("wait {:?}", req);
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        if p.status() == Status::Created && req.exec_id.is_empty() {
            // containerd waits on created tasks too; the exit comes after a start.
        }
        let (code, at) = p.wait();
        Ok(api::WaitResponse { exit_status: code, exited_at: timestamp(at), ..Default::default() })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        log::debug!("kill {:?}", req);
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        match p.status() {
            Status::Stopped { .. } => {
                return Err(err(
                    Code::NOT_FOUND,
                    format!("{:?}: process already finished", p.r#ref),
                ))
            }
            Status::Created => {
                // Never started: it ends without running.
                p.set_stopped(128 + req.signal, SystemTime::now(), false);
                return Ok(api::Empty::new());
            }
            Status::Running => {}
        }
        let sig = i32::try_from(req.signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, format!("bad signal {}", req.signal)))?;
        let pod = self.inner.pod()?;
        let r = pod.ctl().signal(&p.r#ref, sig, req.all);
        r.map_err(|e| pod_err(&pod, e))?;
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        log::debug!("delete {:?}", req);
        let (task, p) = self.inner.process(&req.id, &req.exec_id)?;
        let (code, at) = match p.status() {
            Status::Stopped { code, at, .. } => (code, at),
            Status::Created => (0, SystemTime::now()),
            Status::Running => {
                return Err(err(Code::FAILED_PRECONDITION, format!("{:?} is running", p.r#ref)))
            }
        };
        let pid = lock(&self.inner.pod).as_ref().map(|p| p.pid()).unwrap_or(0);
        if !req.exec_id.is_empty() {
            lock(&task.execs).remove(&req.exec_id);
            return Ok(api::DeleteResponse {
                pid,
                exit_status: code,
                exited_at: timestamp(at),
                ..Default::default()
            });
        }
        if let Ok(pod) = self.inner.pod() {
            if !pod.gone() {
                if let Err(e) = pod.ctl().delete_container(&req.id, true) {
                    log::warn!("delete {} in the guest: {e}", req.id);
                }
            }
            pod.release(&req.id);
            if task.owns_pod {
                pod.stop();
                *lock(&self.inner.pod) = None;
                let _ = std::fs::remove_dir_all(paths::pod_dir(&self.inner.grouping));
            }
        }
        lock(&self.inner.tasks).remove(&req.id);
        self.inner.publish(topics::TASK_DELETE_EVENT_TOPIC, &|| {
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid,
                exit_status: code,
                exited_at: timestamp(at),
                ..Default::default()
            })
        });
        Ok(api::DeleteResponse {
            pid,
            exit_status: code,
            exited_at: timestamp(at),
            ..Default::default()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let task = self.inner.task(&req.id)?;
        if !ironpod_protocol::valid_id(&req.exec_id) {
            return Err(err(Code::INVALID_ARGUMENT, format!("exec id {:?}", req.exec_id)));
        }
        if lock(&task.execs).contains_key(&req.exec_id) {
            return Err(err(Code::ALREADY_EXISTS, format!("exec {} exists", req.exec_id)));
        }
        let any = req
            .spec
            .as_ref()
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let mut process: oci_spec::runtime::Process = serde_json::from_slice(&any.value)
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("exec process spec: {e}")))?;
        process.set_terminal(Some(req.terminal));
        process.set_apparmor_profile(None);
        process.set_selinux_label(None);
        let pod = self.inner.pod()?;
        pod.ctl()
            .exec(ExecProcess {
                container: req.id.clone(),
                exec_id: req.exec_id.clone(),
                process: Box::new(process),
                stdin: !req.stdin.is_empty(),
                user: None,
            })
            .map_err(|e| pod_err(&pod, e))?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let p = Process::new(
            ProcessRef { container: req.id.clone(), exec_id: Some(req.exec_id.clone()) },
            stdio,
            !req.stdin.is_empty(),
        );
        lock(&task.execs).insert(req.exec_id.clone(), p);
        self.inner.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, &|| {
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            })
        });
        Ok(api::Empty::new())
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        let rows = u16::try_from(req.height).unwrap_or(u16::MAX);
        let cols = u16::try_from(req.width).unwrap_or(u16::MAX);
        let pod = self.inner.pod()?;
        let r = pod.ctl().resize(&p.r#ref, rows, cols);
        r.map_err(|e| pod_err(&pod, e))?;
        Ok(api::Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        if req.stdin {
            p.close_stdin();
        }
        Ok(api::Empty::new())
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        self.inner.task(&req.id)?;
        let pod = self.inner.pod()?;
        let list = pod.ctl().processes(&req.id);
        let list = list.map_err(|e| pod_err(&pod, e))?;
        let processes = list
            .into_iter()
            .map(|p| containerd_shim::protos::types::task::ProcessInfo {
                pid: p.pid as u32,
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        self.inner.task(&req.id)?;
        let pod = self.inner.pod()?;
        let s = pod.ctl().stats(&req.id);
        let s = s.map_err(|e| pod_err(&pod, e))?;
        let any = crate::metrics::to_any(&s);
        Ok(api::StatsResponse { stats: MessageField::some(any), ..Default::default() })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.inner.set_paused(&req.id, true)?;
        self.inner.publish(topics::TASK_PAUSED_EVENT_TOPIC, &|| {
            Box::new(TaskPaused { container_id: req.id.clone(), ..Default::default() })
        });
        Ok(api::Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.inner.set_paused(&req.id, false)?;
        self.inner.publish(topics::TASK_RESUMED_EVENT_TOPIC, &|| {
            Box::new(TaskResumed { container_id: req.id.clone(), ..Default::default() })
        });
        Ok(api::Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        self.inner.task(&req.id)?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "update without resources"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("update resources: {e}")))?;
        let pod = self.inner.pod()?;
        let r = pod.ctl().update_resources(&req.id, resources);
        r.map_err(|e| pod_err(&pod, e))?;
        Ok(api::Empty::new())
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: lock(&self.inner.pod).as_ref().map(|p| p.pid()).unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        log::debug!("shutdown");
        if !lock(&self.inner.tasks).is_empty() {
            // containerd asks after every delete; the shim serves until its last task goes.
            return Ok(api::Empty::new());
        }
        if let Some(p) = lock(&self.inner.pod).take() {
            p.stop();
        }
        let _ = std::fs::remove_dir_all(paths::pod_dir(&self.inner.grouping));
        self.inner.exit.signal();
        Ok(api::Empty::new())
    }
}
