//! Pods on the host: the library the `ironpod` CLI and the containerd shim share.
//!
//! Owns a pod's life: its files ([`paths`], [`disks`]), the container's OCI spec from Docker
//! run options ([`spec`], [`seccomp`]), creating, reconciling and removing containers
//! ([`pod`]), the pod monitor that boots the VM and runs the container ([`launch`],
//! [`monitor_handle`], [`monitor`], with [`attach`] and [`logs`]), the VM launcher and the
//! clients of the VMM and the agent ([`vm`], [`vmm_api`], [`agent_client`], [`assets`]), and
//! `commit` and a container's files ([`commit`], [`files`]).
//!
//! Below it: `ironpod-state` (records), `ironpod-net` (networks), `ironpod-volumes`,
//! `ironpod-ids`, `ironpod-images`, and the VMM's and agent's types. It knows nothing of
//! its front ends: no argument parsing, no output formats, no containerd.

pub mod agent_client;
pub mod assets;
pub mod attach;
pub mod cgroup;
pub mod commit;
pub mod disks;
pub mod error;
pub mod events;
pub mod files;
pub mod health;
pub mod jail;
pub mod launch;
pub mod lifecycle;
pub mod logs;
pub mod monitor;
pub mod monitor_handle;
pub mod paths;
pub mod pod;
pub mod restart;
pub mod seccomp;
pub mod spawn;
pub mod spec;
pub mod template;
pub mod vm;
pub mod vmm_api;

pub use error::PodError;

/// Logs to stderr, quiet unless `RUST_LOG` asks: errors reach the user as one line.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
}
