//! The task service containerd calls over ttrpc: tasks (containers) of one pod VM.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use containerd_shim::api;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskPaused, TaskResumed,
    TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::Code;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};
use ironpod_protocol::{ExecProcess, ProcessRef};

use crate::paths;
use crate::process::{Process, Status};
use crate::stdio::StdioPaths;
use crate::tasks::{err, lock, pod_err, timestamp, Inner};

/// The shim's task service.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
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
        let task = self.inner.task(&req.id)?;
        let pod = self.inner.pod()?;
        let s = pod.ctl().stats(&req.id);
        let mut s = s.map_err(|e| pod_err(&pod, e))?;
        if task.sandbox {
            // The sandbox stands for the pod: what its VMM and virtiofsd use on the host.
            if let Some(u) = pod.host_usage() {
                s.memory_bytes = u.memory;
                s.memory_limit = Some(u.memory_limit);
                s.cpu_usage_usec = u.cpu_usec;
                s.pids = u.pids;
            }
        }
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
