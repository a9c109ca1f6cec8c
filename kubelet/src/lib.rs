//! `ironpod-kubelet`: runs one Kubernetes pod in one microVM. The controller of `ironpod
//! system service` starts one per pod (and again after a host reboot); it boots the pod's
//! VM with every container's image, makes its volumes, runs its init containers and
//! containers with Kubernetes' restart policies, back-off and probes, keeps its status in
//! the object store (`ironpod-kube`), and takes it down when the pod is deleted.
//!
//! Below it: `ironpod-pods` (the VM, the agent client, the CLI's container specs, logs,
//! cgroups), `ironpod-net` (the namespace's network), `ironpod-volumes` (the `hostPath`
//! share), `ironpod-images`. It knows nothing of the controllers or the command line.

pub mod backoff;
pub mod env;
pub mod paths;
pub mod probe;
pub mod runner;
pub mod spec;
pub mod status;
pub mod volumes;

pub use runner::run;
