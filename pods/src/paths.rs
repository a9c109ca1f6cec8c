//! Where a pod's files live: under the state root (its log, writable disk, spec) and under
//! `/run/ironpod/pods/<id>/` (its sockets), and the names derived from its id.

use std::path::{Path, PathBuf};

/// Per-pod runtime files (sockets): `/run/ironpod/pods/<id>/`.
pub const PODS_RUN_DIR: &str = "/run/ironpod/pods";

/// `<root>/containers/<id>/`: the container's log, writable disk and spec.
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join("containers").join(id)
}

/// The container's log file.
pub fn log_path(root: &Path, id: &str) -> PathBuf {
    container_dir(root, id).join("ctr.log")
}

/// The container's writable disk.
pub fn writable_disk(root: &Path, id: &str) -> PathBuf {
    container_dir(root, id).join("rw.ext4")
}

/// The pod's runtime directory.
pub fn run_dir(id: &str) -> PathBuf {
    Path::new(PODS_RUN_DIR).join(id)
}

/// The lock a pod monitor holds while it records its container's end and logs the `die`
/// event ([`crate::lifecycle::exit_logged`]).
pub fn exit_lock(id: &str) -> PathBuf {
    run_dir(id).join("exit.lock")
}

/// The monitor's attach socket.
pub fn attach_socket(id: &str) -> PathBuf {
    run_dir(id).join("attach.sock")
}

/// The lease holder name of a container in the image store.
pub fn lease_holder(id: &str) -> String {
    format!("container:{id}")
}

/// The virtio-blk serial the VMM gives a disk file (the first 20 bytes of its name).
pub fn disk_serial(path: &Path) -> String {
    ironpod_vmm::api::serial_of(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_serials() {
        let root = Path::new("/var/lib/ironpod");
        assert_eq!(log_path(root, "ab"), Path::new("/var/lib/ironpod/containers/ab/ctr.log"));
        assert_eq!(writable_disk(root, "ab"), Path::new("/var/lib/ironpod/containers/ab/rw.ext4"));
        assert_eq!(attach_socket("ab"), Path::new("/run/ironpod/pods/ab/attach.sock"));
        assert_eq!(lease_holder("ab"), "container:ab");
        assert_eq!(
            disk_serial(Path::new("/x/0123456789abcdef0123456789.erofs")),
            "0123456789abcdef0123"
        );
        assert_eq!(disk_serial(Path::new("/x/rw.ext4")), "rw.ext4");
    }
}
