//! `cargo xtask install [--prefix DIR]`: builds ironpod and puts it in place — the binaries in
//! `PREFIX/bin`, the guest kernel and initramfs in `PREFIX/share/ironpod` (where the binaries
//! look, beside themselves), the systemd units in `PREFIX/lib/systemd/system` (pointing at
//! this prefix), the README in `PREFIX/share/doc/ironpod`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{initramfs, kernel, util};

/// The binaries a host needs.
pub const BINARIES: [&str; 5] =
    ["ironpod", "ironpod-vmm", "ironpod-monitor", "ironpod-kubelet", "containerd-shim-ironpod-v2"];

/// What went where.
pub struct Installed {
    /// `PREFIX/bin`.
    pub bin: PathBuf,
    /// `PREFIX/share/ironpod`.
    pub assets: PathBuf,
    /// `PREFIX/lib/systemd/system`.
    pub units: PathBuf,
}

/// Builds everything, then installs under `prefix`.
pub fn run(prefix: &Path) -> Result<Installed> {
    let vmlinux = kernel::build()?;
    let initrd = initramfs::build()?;
    util::build_release_bins()?;
    let installed = install(prefix, &util::target_dir().join("release"), &vmlinux, &initrd)?;
    println!(
        "installed: {} ({}), guest kernel and initramfs in {}, systemd units in {}",
        installed.bin.display(),
        BINARIES.join(", "),
        installed.assets.display(),
        installed.units.display()
    );
    println!("start the Docker API with: systemctl enable --now ironpod.socket");
    Ok(installed)
}

/// Copies built files under `prefix` (each through a temporary file and a rename, so a
/// running `ironpod` is not overwritten in place).
pub fn install(prefix: &Path, built: &Path, vmlinux: &Path, initrd: &Path) -> Result<Installed> {
    install_staged(prefix, prefix, built, vmlinux, initrd)
}

/// Like [`install`], into `dest`, for files that will live under `prefix` (a package's
/// staging tree: the units name the binaries where they will be).
pub fn install_staged(
    dest: &Path,
    prefix: &Path,
    built: &Path,
    vmlinux: &Path,
    initrd: &Path,
) -> Result<Installed> {
    let final_bin = prefix.join("bin");
    let final_doc = prefix.join("share/doc/ironpod");
    let prefix = dest;
    let i = Installed {
        bin: prefix.join("bin"),
        assets: prefix.join("share/ironpod"),
        units: prefix.join("lib/systemd/system"),
    };
    for b in BINARIES {
        let dst = i.bin.join(b);
        util::install(&built.join(b), &dst)?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", dst.display()))?;
    }
    util::install(vmlinux, &i.assets.join("vmlinux"))?;
    util::install(initrd, &i.assets.join("initramfs.img"))?;
    let ironpod = final_bin.join("ironpod");
    for unit in ["ironpod.service", "ironpod.socket"] {
        let src = Path::new("contrib/systemd").join(unit);
        let text =
            std::fs::read_to_string(&src).with_context(|| format!("read {}", src.display()))?;
        let text = text
            .replace("/usr/local/bin/ironpod", &ironpod.display().to_string())
            .replace("/usr/local/share/doc/ironpod", &final_doc.display().to_string());
        util::write_atomic(&i.units.join(unit), text.as_bytes())?;
    }
    util::install(Path::new("README.md"), &prefix.join("share/doc/ironpod/README.md"))?;
    Ok(i)
}
