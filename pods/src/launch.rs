//! What a pod monitor is handed: the pod's shape at once (to start the VMM and the
//! network while the caller prepares the container), then its disks ([`Launch`]), then the
//! recorded container ([`Prepared`]); and the VM size a container's options ask for.

use std::path::PathBuf;

use ironpod_volumes::HostDir;
use serde::{Deserialize, Serialize};

use crate::spec::RunOptions;

/// Guest memory when no limit is set.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Guest memory on top of a container's memory limit (kernel, agent, page cache).
pub const MEMORY_OVERHEAD_MIB: u64 = 128;

/// What the monitor needs to start the VMM at once, handed over on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    /// Read-only layer disks, bottom first.
    pub layers: Vec<PathBuf>,
    /// The writable disk.
    pub writable: PathBuf,
}

/// What the monitor needs next, once the container is recorded: sent as a second line
/// while the VM boots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    /// The run options.
    pub options: RunOptions,
    /// The container's OCI runtime spec.
    pub spec: oci_spec::runtime::Spec,
}

/// What the monitor needs at once, to start the VMM and the network while the caller
/// prepares the container.
#[derive(Debug, Clone, PartialEq)]
pub struct PodShape {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory.
    pub memory_mib: u64,
    /// CPU time the pod may use, in CPUs (`--cpus`; its host cgroup's cpu limit).
    pub cpus: Option<f64>,
    /// The network to join (`None`: loopback only).
    pub network: Option<String>,
    /// The container's volumes (host directories, in the order of its `-v` options), shared
    /// with the VM through virtio-fs; their server starts with the VMM.
    pub volumes: Vec<HostDir>,
    /// Restore the VM from the pod template of its shape ([`crate::template`]) instead of
    /// booting it.
    pub template: bool,
}

impl PodShape {
    /// The shape of the template its VM restores.
    pub fn template_shape(&self) -> crate::template::Shape {
        crate::template::Shape {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            card: self.network.is_some(),
            share: !self.volumes.is_empty(),
        }
    }

    /// Whether an image of `layers` layers fits its template's disk slots.
    pub fn template_fits(&self, layers: usize) -> bool {
        layers <= usize::from(self.template_shape().read_only_slots())
    }
}

/// The pod's shape for a container's options and its volumes' host directories.
pub fn pod_shape(o: &RunOptions, volumes: Vec<HostDir>) -> PodShape {
    let (vcpus, memory_mib) = vm_size(o);
    let network = o.network_name().map(str::to_string);
    let template = !crate::template::disabled_by_env();
    PodShape { vcpus, memory_mib, cpus: o.cpus, network, volumes, template }
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
