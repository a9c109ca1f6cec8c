//! `containerd-shim-ironpod-v2`: ironpod as a containerd runtime (shim v2 task API).
//!
//! containerd starts the binary with `start` for each new task; tasks of one pod (CRI
//! annotation `io.kubernetes.cri.sandbox-id`, or the task itself for a plain `ctr run`)
//! share one long-running shim process and so one VM. The sandbox task (or the only task)
//! boots the VM; containers of the pod join it.
//!
//! Owns: the shim v2 task service, the pod VM of a shim process, containerd's rootfs
//! mounts turned into layer disks, stdio FIFOs and metrics. It uses `ironpod-pods` (VM
//! launcher, agent client, writable disks), `ironpod-net` (the CNI namespace's tap) and
//! `ironpod-volumes` (virtio-fs shares); it knows nothing of the CLI's records, monitors or
//! networks.

pub mod copies;
pub mod guest_spec;
pub mod kube_dirs;
pub mod metrics;
mod pod;
mod process;
pub mod rootfs;
mod service;
pub mod stdio;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};
use oci_spec::runtime::Spec;

pub use service::Service;

/// containerd's name for this runtime.
pub const RUNTIME_ID: &str = "io.containerd.ironpod.v2";
/// CRI annotation: `sandbox` or `container`.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI annotation: the pod sandbox a container belongs to.
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Annotation on the container that boots a pod (the CRI sandbox, or a plain task): the size
/// of the pod's writable disk (`2g`, `512m`; default 8g). A pod annotation reaches the
/// sandbox when containerd's runtime options pass it (`pod_annotations = ["org.ironpod.*"]`).
pub const ANNOTATION_STORAGE_SIZE: &str = "org.ironpod.storage-size";

/// Annotation on the container that boots a pod: `false` boots its VM instead of restoring
/// the pod template of its shape (`true`, the default; see ironpod's README, "Pod
/// templates"). The environment variable `IRONPOD_NO_TEMPLATE=1` of the shim turns
/// templates off for every pod.
pub const ANNOTATION_TEMPLATE: &str = "org.ironpod.template";

/// Whether a pod booted for `spec` may restore a pod template.
pub fn use_template(spec: &Spec) -> Result<bool, String> {
    let env = !ironpod_pods::template::disabled_by_env();
    match spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION_TEMPLATE)) {
        None => Ok(env),
        Some(v) if v == "true" => Ok(env),
        Some(v) if v == "false" => Ok(false),
        Some(v) => {
            Err(format!("annotation {ANNOTATION_TEMPLATE}: {v:?} is neither true nor false"))
        }
    }
}

/// The size of the writable disk of a pod booted for `spec`.
pub fn storage_size(spec: &Spec) -> Result<u64, String> {
    match spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION_STORAGE_SIZE)) {
        None => Ok(ironpod_pods::disks::WRITABLE_DISK_BYTES),
        Some(v) => ironpod_pods::spec::parse_size(v)
            .and_then(ironpod_pods::disks::check_disk_size)
            .map_err(|e| format!("annotation {ANNOTATION_STORAGE_SIZE}: {e}")),
    }
}

/// Where the shim keeps its files.
pub mod paths {
    use std::path::PathBuf;

    /// Persistent state (layer disk cache, writable-disk template):
    /// `$IRONPOD_SHIM_ROOT` or `/var/lib/ironpod/shim`.
    pub fn state_root() -> PathBuf {
        std::env::var_os("IRONPOD_SHIM_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/ironpod/shim"))
    }

    /// Erofs disks built from containerd's snapshots.
    pub fn layer_cache() -> PathBuf {
        state_root().join("layers")
    }

    /// Runtime files of a pod (its writable disk, the VMM's pid).
    pub fn pod_dir(grouping: &str) -> PathBuf {
        PathBuf::from("/run/ironpod/shim").join(grouping)
    }
}

/// The shim instance a task belongs to: its pod's sandbox id, or its own id.
pub fn grouping(spec: Option<&Spec>, id: &str) -> String {
    spec.and_then(|s| s.annotations().as_ref())
        .and_then(|a| a.get(ANNOTATION_SANDBOX_ID))
        .filter(|s| ironpod_protocol::valid_id(s))
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

fn bundle_spec(bundle: &Path) -> Option<Spec> {
    Spec::load(bundle.join("config.json")).ok()
}

/// The host network namespace `spec` asks for (the CNI-prepared one of a CRI sandbox).
pub fn network_namespace(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)?
        .path()
        .clone()
}

/// Whether `spec` is a CRI pod sandbox (the container that starts a Kubernetes pod).
pub fn is_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CONTAINER_TYPE))
        .is_some_and(|t| t == "sandbox")
}

/// The VM size for a pod booted for `spec`: its CPU quota rounded up (at least one vCPU)
/// and its memory limit plus the guest's own overhead, as for `ironpod run`.
pub fn vm_size(spec: &Spec) -> (u8, u64) {
    let res = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let cpus = res
        .and_then(|r| r.cpu().as_ref())
        .and_then(|c| Some((c.quota()?, c.period()?)))
        .filter(|(q, p)| *q > 0 && *p > 0)
        .map(|(q, p)| (q as f64 / p as f64).ceil());
    let memory = res.and_then(|r| r.memory().as_ref()).and_then(|m| m.limit()).filter(|l| *l > 0);
    let opts = ironpod_pods::spec::RunOptions {
        cpus,
        memory: memory.map(|m| m as u64),
        ..Default::default()
    };
    ironpod_pods::launch::vm_size(&opts)
}

/// The shim binary's entry points (`start`, `delete`, and the serving process).
pub struct IronpodShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    id: String,
    bundle: PathBuf,
}

/// The settings the shim runs with: it waits for its own children (the VMMs), so the
/// library's reaper stays off.
pub fn config() -> Config {
    Config { no_reaper: true, no_sub_reaper: true, ..Default::default() }
}

impl containerd_shim::Shim for IronpodShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        IronpodShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle,
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        let grouping = grouping(bundle_spec(&self.bundle).as_ref(), &opts.id);
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        // containerd cleans up after a shim that is gone: end the pod VM this task booted.
        let grouping = grouping(bundle_spec(&self.bundle).as_ref(), &self.id);
        if grouping == self.id {
            pod::kill_orphan(&paths::state_root(), &paths::pod_dir(&grouping));
        }
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut ts =
            containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp::new();
        ts.seconds = now.as_secs() as i64;
        ts.nanos = now.subsec_nanos() as i32;
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: containerd_shim::protos::protobuf::MessageField::some(ts),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(
        &self,
        publisher: containerd_shim::publisher::RemotePublisher,
    ) -> Self::T {
        let grouping = grouping(bundle_spec(&self.bundle).as_ref(), &self.id);
        Service::new(&self.namespace, &grouping, publisher, self.exit.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn tasks_group_by_sandbox() {
        let mut s = Spec::default();
        assert_eq!(grouping(Some(&s), "c1"), "c1");
        assert_eq!(grouping(None, "c1"), "c1");
        s.set_annotations(Some(HashMap::from([(
            ANNOTATION_SANDBOX_ID.to_string(),
            "sb".to_string(),
        )])));
        assert_eq!(grouping(Some(&s), "c1"), "sb");
        s.set_annotations(Some(HashMap::from([(
            ANNOTATION_SANDBOX_ID.to_string(),
            "../x".to_string(),
        )])));
        assert_eq!(grouping(Some(&s), "c1"), "c1");
    }

    #[test]
    fn sandboxes_and_their_network_namespace() {
        use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType};
        let mut s = Spec::default();
        assert!(!is_sandbox(&s));
        s.set_annotations(Some(HashMap::from([(
            ANNOTATION_CONTAINER_TYPE.to_string(),
            "sandbox".to_string(),
        )])));
        assert!(is_sandbox(&s));
        let ns = |typ, path: Option<&str>| {
            let mut b = LinuxNamespaceBuilder::default().typ(typ);
            if let Some(p) = path {
                b = b.path(p);
            }
            b.build().unwrap()
        };
        s.set_linux(Some(
            LinuxBuilder::default()
                .namespaces(vec![
                    ns(LinuxNamespaceType::Pid, None),
                    ns(LinuxNamespaceType::Network, Some("/var/run/netns/cni-1")),
                ])
                .build()
                .unwrap(),
        ));
        assert_eq!(network_namespace(&s), Some(PathBuf::from("/var/run/netns/cni-1")));
        s.set_linux(Some(
            LinuxBuilder::default()
                .namespaces(vec![ns(LinuxNamespaceType::Network, None)])
                .build()
                .unwrap(),
        ));
        assert_eq!(network_namespace(&s), None);
    }

    #[test]
    fn spare_slots_fit_the_interrupt_lines() {
        assert_eq!(pod::spare_slots(1), pod::MAX_SPARE_SLOTS as u8);
        // 19 interrupt lines: 13 layers, the writable disk, the card, the share, the
        // balloon and vsock leave 1 (the 16-disk limit would allow 2).
        assert_eq!(pod::spare_slots(13), 1);
        assert_eq!(pod::spare_slots(11), 3);
        assert_eq!(pod::spare_slots(16), 0);
        assert_eq!(pod::spare_slots(40), 0);
    }

    #[test]
    fn vm_size_follows_limits() {
        use oci_spec::runtime::{
            LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder,
        };
        let mut s = Spec::default();
        assert_eq!(vm_size(&s), (1, ironpod_pods::launch::DEFAULT_MEMORY_MIB));
        let res = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().quota(150_000i64).period(100_000u64).build().unwrap())
            .memory(LinuxMemoryBuilder::default().limit(512i64 << 20).build().unwrap())
            .build()
            .unwrap();
        s.set_linux(Some(LinuxBuilder::default().resources(res).build().unwrap()));
        let (cpus, mem) = vm_size(&s);
        let host = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        assert_eq!(cpus as usize, 2.min(host));
        assert_eq!(mem, 512 + ironpod_pods::launch::MEMORY_OVERHEAD_MIB);
    }

    #[test]
    fn template_switch_from_the_annotation() {
        let mut s = Spec::default();
        s.set_annotations(None);
        let env = !ironpod_pods::template::disabled_by_env();
        assert_eq!(use_template(&s), Ok(env));
        for (v, want) in [("true", Ok(env)), ("false", Ok(false))] {
            s.set_annotations(Some(HashMap::from([(ANNOTATION_TEMPLATE.into(), v.into())])));
            assert_eq!(use_template(&s), want, "{v}");
        }
        s.set_annotations(Some(HashMap::from([(ANNOTATION_TEMPLATE.into(), "no".into())])));
        assert!(use_template(&s).is_err());
    }

    #[test]
    fn storage_size_from_the_annotation() {
        let mut s = Spec::default();
        s.set_annotations(None);
        assert_eq!(storage_size(&s), Ok(ironpod_pods::disks::WRITABLE_DISK_BYTES));
        for (v, want) in [("512m", Ok(512 << 20)), ("1.5g", Ok(1536 << 20))] {
            s.set_annotations(Some(HashMap::from([(ANNOTATION_STORAGE_SIZE.into(), v.into())])));
            assert_eq!(storage_size(&s), want, "{v}");
        }
        for v in ["1k", "lots", "100t"] {
            s.set_annotations(Some(HashMap::from([(ANNOTATION_STORAGE_SIZE.into(), v.into())])));
            assert!(storage_size(&s).is_err(), "{v}");
        }
    }
}
