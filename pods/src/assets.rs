//! Where the guest kernel, the initramfs and the VMM binary are found (virtiofsd:
//! `ironpod_volumes::virtiofsd`).

use std::path::{Path, PathBuf};

/// Default install directory of the guest assets (`cargo xtask kernel|initramfs`).
pub const DEFAULT_ASSET_DIR: &str = "/usr/local/share/ironpod";

/// A required file is missing.
#[derive(Debug, thiserror::Error)]
#[error("{what} not found at {path}: {hint}")]
pub struct MissingAsset {
    /// What it is.
    pub what: &'static str,
    /// Where we looked.
    pub path: PathBuf,
    /// How to get it.
    pub hint: &'static str,
}

/// `$VAR`, else `../share/ironpod/NAME` beside the running executable (an install under
/// another prefix: `cargo xtask install --prefix`), else the default directory's.
fn from_env_or(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("share/ironpod").join(name)))
        .filter(|p| p.is_file());
    beside.unwrap_or_else(|| Path::new(DEFAULT_ASSET_DIR).join(name))
}

fn existing(
    what: &'static str,
    path: PathBuf,
    hint: &'static str,
) -> Result<PathBuf, MissingAsset> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingAsset { what, path, hint })
    }
}

/// The guest kernel: `$IRONPOD_KERNEL`, `../share/ironpod/vmlinux` beside the executable,
/// or `/usr/local/share/ironpod/vmlinux`.
pub fn kernel() -> Result<PathBuf, MissingAsset> {
    existing("guest kernel", from_env_or("IRONPOD_KERNEL", "vmlinux"), "run `cargo xtask kernel`")
}

/// The agent initramfs: `$IRONPOD_INITRAMFS`, `../share/ironpod/initramfs.img` beside the
/// executable, or `/usr/local/share/ironpod/initramfs.img`.
pub fn initramfs() -> Result<PathBuf, MissingAsset> {
    existing(
        "initramfs",
        from_env_or("IRONPOD_INITRAMFS", "initramfs.img"),
        "run `cargo xtask initramfs`",
    )
}

/// The VMM binary: `$IRONPOD_VMM`, else `ironpod-vmm` next to the running executable, else
/// `ironpod-vmm` on PATH.
pub fn vmm_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONPOD_VMM") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let sibling = dir.join("ironpod-vmm");
            if sibling.is_file() {
                return sibling;
            }
            // Test executables live one level down, in target/<profile>/deps.
            if let Some(parent) = dir.parent() {
                let p = parent.join("ironpod-vmm");
                if dir.ends_with("deps") && p.is_file() {
                    return p;
                }
            }
        }
    }
    PathBuf::from("ironpod-vmm")
}
