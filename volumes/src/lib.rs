//! Volumes: host directories and named volumes that a pod's containers mount.
//!
//! They reach the guest through one virtio-fs share per pod (see [`share`]): on the host, the
//! pod's share directory holds a bind mount of each volume (read-only ones are read-only
//! bind mounts, so the host kernel refuses writes whatever the guest does); one virtiofsd
//! serves that directory, sandboxed in it, to the VM; the agent mounts the share once and the
//! container spec bind-mounts each volume's subdirectory (read-only again in the guest).
//! Named volumes are directories under the state root ([`store`]).
//!
//! Owns: `-v` parsing, named volumes on disk, a pod's share directory and its virtiofsd
//! (and where that binary is found). Knows nothing of pods' records, specs or monitors:
//! callers hand in a pod id, the volumes' host directories, or which containers use a
//! volume, and get typed results back.

pub mod error;
pub mod mounts;
pub mod share;
pub mod store;
mod userns;
pub mod virtiofsd;

pub use error::VolumeError;
pub use mounts::{
    inspect_mounts, parse, parse_all, resolve, share_entry, spec_mounts, HostDir, Source,
    VolumeMount, MAX_VOLUMES,
};
pub use store::{valid_name, Volume, VolumeStore};
