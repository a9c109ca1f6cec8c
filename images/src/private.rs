//! Directories only root may enter: the state root and `/run/ironpod` hold container
//! records (with their environment), registry credentials, image layers and the sockets of
//! pods' VMMs, agents and monitors, none of which another local user may read or connect to.

use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// `/run/ironpod`: the runtime files (sockets, pid files, shares) of every pod.
pub const RUN_ROOT: &str = "/run/ironpod";

/// What only a state root of ironpod's holds (the image and container databases, the
/// shim's layer cache and disk templates).
const OWN_ENTRIES: [&str; 4] = ["images.db", "containers.db", "layers", "templates"];

/// Makes `dir` (and missing parents) a directory of mode 0700. An existing directory with
/// looser permissions is tightened to 0700 when this process owns it and it is empty or
/// already a state root of ironpod's; any other directory (say `--root /tmp`) is left as
/// it is, not made unusable for everyone else.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let ours = std::fs::read_dir(dir)?.next().is_none()
        || OWN_ENTRIES.iter().any(|e| dir.join(e).exists());
    if ours {
        tighten(dir)?;
    }
    Ok(())
}

fn tighten(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.mode() & 0o077 != 0 && meta.uid() == me {
        std::fs::set_permissions(dir, Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Makes [`RUN_ROOT`] (ironpod's own) a directory of mode 0700, tightening it if needed.
pub fn private_run_root() -> io::Result<()> {
    let dir = Path::new(RUN_ROOT);
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    tighten(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_loose_directories_become_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
        let loose = tmp.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, Permissions::from_mode(0o755)).unwrap();
        private_dir(&loose).unwrap();
        assert_eq!(std::fs::metadata(&loose).unwrap().mode() & 0o777, 0o700, "empty: ours");
        // A busy directory of someone else's is left alone; a state root of ours is not.
        let busy = tmp.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("notes"), b"x").unwrap();
        std::fs::set_permissions(&busy, Permissions::from_mode(0o1777)).unwrap();
        private_dir(&busy).unwrap();
        assert_eq!(std::fs::metadata(&busy).unwrap().mode() & 0o7777, 0o1777);
        std::fs::write(busy.join("containers.db"), b"").unwrap();
        private_dir(&busy).unwrap();
        assert_eq!(std::fs::metadata(&busy).unwrap().mode() & 0o777, 0o700);
    }
}
