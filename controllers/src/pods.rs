//! Pods: each pod that has not ended has an `ironpod-kubelet` (started here, detached, its
//! output in the pod's `kubelet.log`); a pod deleted while no kubelet runs is cleaned up
//! here (its network lease, image leases and files) and removed from the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ironpod_kube::object::Kind;
use ironpod_kube::pod::PodStatus;
use ironpod_kube::KubeStore;
use ironpod_kubelet::paths;

use crate::ControllerError;

/// The kubelet binary: `$IRONPOD_KUBELET`, else `ironpod-kubelet` next to the running
/// executable, else on PATH.
pub fn kubelet_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONPOD_KUBELET") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("ironpod-kubelet")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("ironpod-kubelet"))
}

/// Kubelets this controller started (reaped when they end) and when.
#[derive(Default)]
pub struct Kubelets {
    children: Vec<Child>,
    started: HashMap<String, Instant>,
}

/// How long a kubelet just started may take to take its pod's lock before another is
/// started.
const START_GRACE: Duration = Duration::from_secs(10);

impl Kubelets {
    /// Collects the kubelets that ended.
    pub fn reap(&mut self) {
        self.children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        self.started.retain(|_, t| t.elapsed() < START_GRACE);
    }

    fn start(&mut self, root: &Path, ns: &str, name: &str, uid: &str) -> Result<(), String> {
        if self.started.get(uid).is_some_and(|t| t.elapsed() < START_GRACE) {
            return Ok(());
        }
        let dir = paths::pod_dir(root, uid);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("kubelet.log"))
            .map_err(|e| format!("kubelet.log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(kubelet_binary());
        cmd.arg("--root").arg(root).args(["--namespace", ns, "--name", name, "--uid", uid]);
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        // Its own session: a signal to the service's process group does not reach it, and
        // it keeps running when the service stops.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child =
            cmd.spawn().map_err(|e| format!("start {}: {e}", kubelet_binary().display()))?;
        tracing::info!(%ns, %name, pid = child.id(), "kubelet started");
        self.children.push(child);
        self.started.insert(uid.to_string(), Instant::now());
        Ok(())
    }
}

/// One pass over the pods.
pub fn sync(
    store: &mut KubeStore,
    root: &Path,
    kubelets: &mut Kubelets,
) -> Result<(), ControllerError> {
    for p in store.list(Kind::Pod, None)? {
        let uid = p.uid().to_string();
        let running = paths::kubelet_running(root, &uid);
        if p.deleting() {
            if !running && !kubelets.started.contains_key(&uid) {
                clean_up(root, &uid);
                crate::each("pod", p.name(), || {
                    Ok(store.finalize(Kind::Pod, p.namespace(), p.name(), &uid)?)
                });
            }
            continue;
        }
        let phase = p.status_as::<PodStatus>().phase;
        if phase == "Succeeded" || phase == "Failed" || running {
            continue;
        }
        if let Err(e) = kubelets.start(root, p.namespace(), p.name(), &uid) {
            tracing::warn!(pod = %p.name(), "{e}");
            let _ = store.record_event(&uid, "Warning", "FailedKubelet", &e, "pod-controller");
        }
    }
    Ok(())
}

/// What a pod leaves on the host once its kubelet is gone.
fn clean_up(root: &Path, uid: &str) {
    let id = paths::pod_id(uid);
    ironpod_net::disconnect(root, &id);
    if let Ok(images) = ironpod_images::ImageStore::open(root) {
        let _ = images.release(&paths::lease_holder(&id));
    }
    let _ = std::fs::remove_dir_all(paths::pod_dir(root, uid));
}
