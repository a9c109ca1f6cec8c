//! The kubelet of one pod: one process per pod (like podman's conmon or the CLI's pod
//! monitor), started by the controller, holding the pod's lock for its life. It boots the
//! pod's VM, sets up its volumes, runs its init containers in order and then its
//! containers, restarts them as the pod's `restartPolicy` says with the kubelet's back-off,
//! runs their probes, writes the pod's status to the object store, and carries out the
//! pod's deletion (SIGTERM, the grace period, SIGKILL, the VM down, the object gone).
//!
//! When the VM itself ends (a crash, a killed VMM) the containers count as ended; under
//! `Always` or `OnFailure` the pod boots again (init containers again, as a node does when
//! a pod's sandbox is recreated), under `Never` it has failed.

mod containers;
pub mod podvm;
mod supervise;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironpod_kube::meta::ObjectMeta;
use ironpod_kube::object::{Body, Kind};
use ironpod_kube::pod::{PodSpec, RestartPolicy};
use ironpod_kube::KubeStore;

use crate::backoff::Backoff;
use crate::env::ConfigSource;
use crate::paths::{self, KubeletInfo, KubeletLock};
use crate::status::{self, Conditions, StatusInput};
use containers::Slot;

/// How often the runner looks at the store (deletion, ConfigMaps and Secrets) and the VM.
const TICK: Duration = Duration::from_millis(500);
/// Default grace period of a pod's deletion.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Runs pod `namespace/name` (uid `uid`) until it has ended or is deleted. Returns the
/// process's exit code.
pub fn run(root: &Path, namespace: &str, name: &str, uid: &str) -> i32 {
    let _lock = match KubeletLock::take(root, uid) {
        Ok(Some(l)) => l,
        Ok(None) => {
            eprintln!("ironpod-kubelet: pod {namespace}/{name} has a kubelet already");
            return 0;
        }
        Err(e) => {
            eprintln!("ironpod-kubelet: pod {namespace}/{name}: lock: {e}");
            return 1;
        }
    };
    match Runner::new(root, namespace, name, uid) {
        Ok(Some(mut r)) => r.main(),
        Ok(None) => 0,
        Err(e) => {
            eprintln!("ironpod-kubelet: pod {namespace}/{name}: {e}");
            1
        }
    }
}

/// How a run of the pod's VM ended.
enum End {
    /// The pod was deleted: everything is down.
    Deleted,
    /// Every container ended for good.
    Finished,
    /// The VM ended under the containers.
    Crashed(String),
    /// The VM could not be made.
    BootFailed(String, &'static str),
}

/// ConfigMaps and Secrets of the pod's namespace, read from the store.
struct StoreSource<'a> {
    store: &'a KubeStore,
    ns: &'a str,
}

impl ConfigSource for StoreSource<'_> {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        match self.store.get(Kind::ConfigMap, self.ns, name).ok()??.object.body {
            Body::ConfigMap(d) => d.values().ok(),
            _ => None,
        }
    }
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        match self.store.get(Kind::Secret, self.ns, name).ok()??.object.body {
            Body::Secret(d) => d.values().ok(),
            _ => None,
        }
    }
}

struct Runner {
    root: PathBuf,
    uid: String,
    pod_id: String,
    store: KubeStore,
    meta: ObjectMeta,
    pod: PodSpec,
    slots: Vec<Slot>,
    initialized: bool,
    conds: Conditions,
    pod_ip: Option<String>,
    start_time: Option<String>,
    message: Option<String>,
    written: Option<serde_json::Value>,
    vm_backoff: Backoff,
    info: KubeletInfo,
    /// The Service lines last written to `/etc/hosts`.
    hosts: Option<Vec<(String, Vec<String>)>>,
}

impl Runner {
    fn new(root: &Path, ns: &str, name: &str, uid: &str) -> Result<Option<Runner>, String> {
        let store = KubeStore::open(root).map_err(|e| e.to_string())?;
        let Some(found) = store.get(Kind::Pod, ns, name).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if found.uid() != uid {
            return Ok(None);
        }
        let Body::Pod(pod) = found.object.body.clone() else { return Ok(None) };
        let mut slots: Vec<Slot> = pod
            .init_containers
            .iter()
            .map(|c| (c, true))
            .chain(pod.containers.iter().map(|c| (c, false)))
            .enumerate()
            .map(|(i, (c, init))| Slot::new(c, i, init, i))
            .collect();
        // A kubelet before this one (its host rebooted, it was killed) ran the pod: the
        // restart counts go on from where it left them.
        let prior: ironpod_kube::pod::PodStatus = found.status_as();
        let before = prior.init_container_statuses.iter().chain(&prior.container_statuses);
        for cs in before {
            let Some(s) = slots.iter_mut().find(|s| s.c.name == cs.name) else { continue };
            s.run.restart_count = cs.restart_count;
            if cs.container_id.is_some() {
                s.guest_id = Some(s.guest_id_for(cs.restart_count));
                s.run.last_state = match cs.state.terminated {
                    Some(_) => cs.state.clone(),
                    None => cs.last_state.clone(),
                };
            }
        }
        if prior.phase == "Succeeded" || prior.phase == "Failed" {
            return Ok(None);
        }
        let info = KubeletInfo { pid: std::process::id() as i32, ..Default::default() };
        let _ = paths::write_info(root, uid, &info);
        Ok(Some(Runner {
            root: root.to_path_buf(),
            uid: uid.to_string(),
            pod_id: paths::pod_id(uid),
            store,
            initialized: pod.init_containers.is_empty(),
            meta: found.object.metadata,
            pod,
            slots,
            conds: Conditions::default(),
            pod_ip: None,
            start_time: None,
            message: None,
            written: None,
            vm_backoff: Backoff::default(),
            info,
            hosts: None,
        }))
    }

    fn policy(&self) -> RestartPolicy {
        self.pod.restart_policy.unwrap_or_default()
    }

    fn grace(&self) -> Duration {
        match self.pod.termination_grace_period_seconds {
            Some(s) => Duration::from_secs(s.max(0) as u64),
            None => DEFAULT_GRACE,
        }
    }

    fn event(&mut self, kind: &str, reason: &str, message: &str) {
        if let Err(e) = self.store.record_event(&self.uid, kind, reason, message, "kubelet") {
            tracing::warn!("record event: {e}");
        }
    }

    /// The pod as stored now: `None` when it is gone (or another pod took its name),
    /// `Some(true)` when its deletion was asked for.
    fn deleting(&self) -> Option<bool> {
        let ns = self.meta.namespace();
        match self.store.get(Kind::Pod, ns, &self.meta.name) {
            Ok(Some(p)) if p.uid() == self.uid => Some(p.deleting()),
            Ok(_) => None,
            // A store that cannot be read now is no deletion.
            Err(_) => Some(false),
        }
    }

    fn write_status(&mut self) {
        let (inits, conts): (Vec<_>, Vec<_>) = self.slots.iter().partition(|s| s.init);
        let inits: Vec<_> = inits.into_iter().map(|s| s.run.clone()).collect();
        let conts: Vec<_> = conts.into_iter().map(|s| s.run.clone()).collect();
        let input = StatusInput {
            policy: self.policy(),
            initialized: self.initialized,
            inits: &inits,
            containers: &conts,
            pod_ip: self.pod_ip.clone(),
            start_time: self.start_time.clone(),
            uid: &self.uid,
            message: self.message.clone(),
        };
        let s = status::pod_status(&input, &mut self.conds);
        let v = serde_json::to_value(&s).unwrap_or_default();
        if self.written.as_ref() == Some(&v) {
            return;
        }
        let ns = self.meta.namespace().to_string();
        match self.store.set_status(Kind::Pod, &ns, &self.meta.name, &self.uid, &v) {
            Ok(_) => self.written = Some(v),
            Err(e) => tracing::warn!("write the pod's status: {e}"),
        }
    }

    fn phase(&self) -> &'static str {
        let (inits, conts): (Vec<_>, Vec<_>) = self.slots.iter().partition(|s| s.init);
        let inits: Vec<_> = inits.into_iter().map(|s| s.run.clone()).collect();
        let conts: Vec<_> = conts.into_iter().map(|s| s.run.clone()).collect();
        status::phase(self.policy(), self.initialized, &inits, &conts)
    }

    fn main(&mut self) -> i32 {
        self.event(
            "Normal",
            "Scheduled",
            &format!(
                "Successfully assigned {}/{} to this host",
                self.meta.namespace(),
                self.meta.name
            ),
        );
        loop {
            match self.deleting() {
                None => return self.cleanup(false),
                Some(true) => return self.cleanup(true),
                Some(false) => {}
            }
            let began = Instant::now();
            let end = self.boot_and_run();
            match end {
                End::Deleted => return self.cleanup(true),
                End::Finished => {
                    self.write_status();
                    // The disk goes; the logs stay until the pod is deleted.
                    let _ = std::fs::remove_file(
                        paths::pod_dir(&self.root, &self.uid).join("disk.ext4"),
                    );
                    return 0;
                }
                End::Crashed(why) => {
                    self.event(
                        "Warning",
                        "SandboxChanged",
                        &format!("Pod sandbox changed, it will be killed and re-created: {why}"),
                    );
                    if !self.vm_ended(&why) {
                        self.write_status();
                        return 0;
                    }
                }
                End::BootFailed(why, reason) => {
                    self.message = Some(why.clone());
                    self.event("Warning", "Failed", &why);
                    for s in self.slots.iter_mut().filter(|s| !s.run.running()) {
                        s.run.state = status::waiting(reason, Some(why.clone()));
                    }
                }
            }
            self.write_status();
            let delay = self.vm_backoff.next_delay(began.elapsed());
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if self.deleting() != Some(false) {
                    break;
                }
                std::thread::sleep(TICK);
            }
        }
    }

    /// The VM ended under the containers: they count as ended. Returns whether the pod
    /// boots again.
    fn vm_ended(&mut self, why: &str) -> bool {
        let policy = self.policy();
        let msg = format!("the pod's VM ended: {why}");
        let mut again = false;
        for s in &mut self.slots {
            s.stop_probes();
            if s.run.running() {
                let started = s.run.state.running.as_ref().and_then(|r| r.started_at.clone());
                let t = status::terminated(137, "Error", Some(msg.clone()), started);
                s.run.last_state = t.clone();
                s.run.state = t;
                s.run.ready = false;
                if status::restarts(policy, 137) {
                    again = true;
                } else {
                    s.done = true;
                }
            } else if !s.done {
                again = true;
            }
        }
        if !again {
            return false;
        }
        // A new VM runs the init containers again.
        self.initialized = self.pod.init_containers.is_empty();
        for s in self.slots.iter_mut() {
            if s.init {
                s.done = false;
            }
            s.next_start = None;
        }
        true
    }

    /// Takes everything of the pod down for good; `delete`: and removes the object.
    fn cleanup(&mut self, delete: bool) -> i32 {
        ironpod_net::disconnect(&self.root, &self.pod_id);
        if let Ok(images) = ironpod_images::ImageStore::open(&self.root) {
            let _ = images.release(&paths::lease_holder(&self.pod_id));
        }
        if delete {
            let _ = std::fs::remove_dir_all(paths::pod_dir(&self.root, &self.uid));
            let ns = self.meta.namespace().to_string();
            if let Err(e) = self.store.finalize(Kind::Pod, &ns, &self.meta.name, &self.uid) {
                eprintln!("ironpod-kubelet: remove pod {}: {e}", self.meta.name);
                return 1;
            }
        }
        0
    }
}
