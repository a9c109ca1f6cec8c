//! Debian's podman 4.3 as the reference a test compares with: storage of its own (vfs, so
//! any filesystem holds it), cgroupfs (the rig has no systemd), no events.

use std::path::Path;
use std::process::{Command, Output};

/// podman on a storage of its own, removed with it.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// Storage under a new directory in `parent`.
    pub fn new_in(parent: &Path) -> Podman {
        let dir = tempfile::tempdir_in(parent).expect("podman's directory");
        // Its containers' limits: podman's default (the hard limits) can exceed what a
        // machine's root may set.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\"]\n[engine]\nevents_logger = \"none\"\n",
        )
        .unwrap();
        Podman { dir }
    }

    /// `podman ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("podman (cargo xtask deps installs it)")
    }

    /// `podman ARGS`, which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}
