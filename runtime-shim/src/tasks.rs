//! The shim's tasks (containers of one pod VM) and the work behind creating and starting
//! them; [`crate::service`] serves them to containerd.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::copies::CopyKind;

use containerd_shim::api;
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code, Status as RpcStatus};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, TtrpcResult};
use ironpod_pods::agent_client::ClientError;
use ironpod_protocol::{CreateContainer, ProcessRef};
use oci_spec::runtime::Spec;

use crate::guest_spec;
use crate::pod::PodVm;
use crate::process::{Process, Status};
use crate::rootfs::{self, LayerCache, RootMount};
use crate::stdio::{Pumps, StdioPaths};
use crate::{paths, ANNOTATION_CONTAINER_TYPE};

/// A container of the pod.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) bundle: String,
    pub(crate) init: Arc<Process>,
    pub(crate) execs: Mutex<HashMap<String, Arc<Process>>>,
    /// This task booted the pod VM (the CRI sandbox, or a pod of one).
    pub(crate) owns_pod: bool,
    /// The CRI pod sandbox: its stats are the pod's host-side usage.
    pub(crate) sandbox: bool,
    /// Its processes are frozen.
    pub(crate) paused: std::sync::atomic::AtomicBool,
}

/// What the service shares between its calls: the pod VM, the tasks, and the way back to
/// containerd (events, the shim's exit).
pub(crate) struct Inner {
    pub(crate) namespace: String,
    pub(crate) publisher: Mutex<RemotePublisher>,
    pub(crate) exit: Arc<ExitSignal>,
    pub(crate) grouping: String,
    pub(crate) pod: Mutex<Option<Arc<PodVm>>>,
    pub(crate) tasks: Mutex<HashMap<String, Arc<Task>>>,
}

/// Locks `m`, also after a panic in another holder (the data stays usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A ttrpc error with `code` and `msg` (also logged).
pub(crate) fn err(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    let msg = msg.into();
    log::warn!("{msg}");
    ttrpc::Error::RpcStatus(RpcStatus { code: code.into(), message: msg, ..Default::default() })
}

/// The ttrpc error for an agent's error.
pub(crate) fn agent_err(e: ClientError) -> ttrpc::Error {
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
pub(crate) fn pod_err(pod: &PodVm, e: ClientError) -> ttrpc::Error {
    match pod.exit_reason() {
        Some(why) => err(Code::UNAVAILABLE, format!("the pod VM has exited ({why}): {e}")),
        None => agent_err(e),
    }
}

/// A protobuf timestamp.
pub(crate) fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    MessageField::some(ts)
}

impl Inner {
    /// Publishes an event to containerd. After a containerd restart the old connection is
    /// dead: the publisher reconnects (containerd's TTRPC address is in our environment)
    /// and sends it again.
    pub(crate) fn publish(&self, topic: &str, make: &dyn Fn() -> Box<dyn Event>) {
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

    pub(crate) fn task(&self, id: &str) -> TtrpcResult<Arc<Task>> {
        lock(&self.tasks)
            .get(id)
            .cloned()
            .ok_or_else(|| err(Code::NOT_FOUND, format!("task {id} not found")))
    }

    pub(crate) fn process(
        &self,
        id: &str,
        exec_id: &str,
    ) -> TtrpcResult<(Arc<Task>, Arc<Process>)> {
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

    pub(crate) fn pod(&self) -> TtrpcResult<Arc<PodVm>> {
        lock(&self.pod)
            .clone()
            .ok_or_else(|| err(Code::FAILED_PRECONDITION, "the pod VM is not running"))
    }

    pub(crate) fn create(&self, req: &api::CreateTaskRequest) -> TtrpcResult<u32> {
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
                    let (vcpus, memory_mib) = crate::vm_size(&spec);
                    let disk_bytes =
                        crate::storage_size(&spec).map_err(|e| err(Code::INVALID_ARGUMENT, e))?;
                    let template =
                        crate::use_template(&spec).map_err(|e| err(Code::INVALID_ARGUMENT, e))?;
                    let size = crate::pod::PodSize { vcpus, memory_mib, disk_bytes, template };
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
                        size,
                    )
                    .map_err(|e| err(Code::INTERNAL, e))?;
                    let p = Arc::new(p);
                    *slot = Some(p.clone());
                    p
                }
            }
        };
        let sandbox = owns_pod && crate::is_sandbox(&spec);
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
            sandbox,
            paused: std::sync::atomic::AtomicBool::new(false),
        });
        lock(&self.tasks).insert(req.id.clone(), task);
        Ok(pod.pid())
    }

    pub(crate) fn create_in(
        &self,
        pod: &Arc<PodVm>,
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
        for (i, source, shape) in &binds.memory_dirs {
            let guest = pod.memory_dir(source, *shape).map_err(|e| {
                err(Code::INTERNAL, format!("a tmpfs for {}: {e}", source.display()))
            })?;
            guest_spec::set_mount_source(spec, *i, &guest);
        }
        for m in binds.copied {
            let copied = match pod.copy_file(&req.id, m.mount, &m.source, m.kind) {
                // A volume that cannot be copied (too large, odd) is shared instead.
                Err(e) if m.kind == CopyKind::Volume => {
                    log::info!("{}: shared, not copied: {e}", m.source.display());
                    pod.share_path(&req.id, m.mount, &m.source, true)
                }
                other => other,
            };
            let guest = copied
                .map_err(|e| err(Code::INTERNAL, format!("copy {}: {e}", m.source.display())))?;
            guest_spec::set_mount_source(spec, m.mount, &guest);
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

    pub(crate) fn set_paused(&self, id: &str, paused: bool) -> TtrpcResult<()> {
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
    pub(crate) fn start(self: &Arc<Self>, task: &Arc<Task>, p: &Arc<Process>) -> TtrpcResult<u32> {
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
        // After the init's exit, before it is reported: what the container leaves for the
        // host (its termination message) goes back.
        let is_init = p.r#ref.exec_id.is_none();
        let (back_pod, back_id) = (pod.clone(), container.clone());
        let before_stop = move || {
            if is_init {
                back_pod.write_back(&back_id);
            }
        };
        p.started(pod.uds().to_path_buf(), before_stop, move |proc_, code, at, oom| {
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
