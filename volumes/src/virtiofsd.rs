//! Where the virtio-fs server is found.

use std::path::{Path, PathBuf};

use crate::error::VolumeError;

/// Where `cargo xtask deps` installs virtiofsd (built from crates.io; Debian 12 has none).
pub const CACHE: &str = "/var/cache/ironpod/virtiofsd/bin/virtiofsd";

/// Debian's virtiofsd (newer releases package it).
const DEBIAN: &str = "/usr/libexec/virtiofsd";

/// The virtio-fs server for volumes: `$IRONPOD_VIRTIOFSD`, else the one `cargo xtask deps`
/// installs, else Debian's (`/usr/libexec/virtiofsd`).
pub fn path() -> Result<PathBuf, VolumeError> {
    if let Some(p) = std::env::var_os("IRONPOD_VIRTIOFSD") {
        return existing(PathBuf::from(p), "check $IRONPOD_VIRTIOFSD");
    }
    if !Path::new(CACHE).is_file() && Path::new(DEBIAN).is_file() {
        return Ok(PathBuf::from(DEBIAN));
    }
    existing(PathBuf::from(CACHE), "run `cargo xtask deps`")
}

fn existing(path: PathBuf, hint: &'static str) -> Result<PathBuf, VolumeError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(VolumeError::Missing { path, hint })
    }
}
