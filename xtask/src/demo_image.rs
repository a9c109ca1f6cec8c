//! The local demo image: Debian's busybox-static as a tiny root filesystem, imported with
//! `ironpod import` (no registry, no internet).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

/// Name of the demo image.
pub const DEMO_IMAGE: &str = "demo:latest";

/// Builds the rootfs tarball (deterministic) and returns its path.
pub fn build_tarball() -> Result<PathBuf> {
    let work = util::target_dir().join("ironpod/demo");
    let rootfs = work.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "run"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("busybox-static is not installed")?;
    let applets = util::output(Command::new("/bin/busybox").arg("--list"))?;
    for a in applets.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        let link = rootfs.join("bin").join(a);
        if !link.exists() {
            symlink("busybox", &link)?;
        }
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(rootfs.join("etc/hostname"), "demo\n")?;
    let tarball = work.join("demo-rootfs.tar");
    util::run(
        Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
    )?;
    Ok(tarball)
}

/// Imports the demo image into the default store with the given `ironpod` binary.
pub fn ensure(ironpod: &Path) -> Result<()> {
    let tarball = build_tarball()?;
    util::run(Command::new(ironpod).arg("import").arg(&tarball).arg(DEMO_IMAGE))?;
    Ok(())
}
