//! Small helpers: running commands, paths, hashing, atomic installs, locks.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Where guest assets are installed for the runtime to find.
pub const ASSET_DIR: &str = "/usr/local/share/ironpod";
/// Cache root.
pub const CACHE_DIR: &str = "/var/cache/ironpod";

/// Runs a command, failing with its name if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let desc = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {desc}"))?;
    if !status.success() {
        bail!("{desc} failed with {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let desc = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot start {desc}"))?;
    if !out.status.success() {
        bail!("{desc} failed with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A cargo command for this workspace.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Builds the release binaries the demo and the Linux guest tests run (the CLI with its
/// monitor, the containerd shim, the static VMM).
pub fn build_release_bins() -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-q",
        "-p",
        "ironpod-cli",
        "-p",
        "ironpod-pods",
        "-p",
        "ironpod-shim",
        "--bins",
    ]))?;
    build_static_vmm("release")
}

/// Links `ironpod-vmm` of cargo profile `profile` statically (in place of the dynamic one a
/// workspace build makes): it runs in a jail that holds no shared libraries. Only the
/// binary's own link changes; its dependencies are the workspace build's.
pub fn build_static_vmm(profile: &str) -> Result<()> {
    build_static(profile, "ironpod-vmm", "ironpod-vmm")
}

/// Links binary `bin` of package `package` statically, in place of the workspace build's.
pub fn build_static(profile: &str, package: &str, bin: &str) -> Result<()> {
    run(cargo().args([
        "rustc",
        "--profile",
        profile,
        "-q",
        "-p",
        package,
        "--bin",
        bin,
        "--",
        "-C",
        "target-feature=+crt-static",
    ]))
}

/// Hex sha256 over several parts (each length-prefixed, so boundaries matter).
pub fn sha256_parts(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies `src` to `dst` through a temporary file and a rename, so readers never see a
/// partial file.
pub fn install(src: &Path, dst: &Path) -> Result<()> {
    let data = fs::read(src).with_context(|| format!("read {}", src.display()))?;
    write_atomic(dst, &data)
}

/// Writes `data` to `dst` through a temporary file and a rename.
pub fn write_atomic(dst: &Path, data: &[u8]) -> Result<()> {
    let dir = dst.parent().context("target has no parent")?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        dst.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        std::process::id()
    ));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, dst)?;
    Ok(())
}

/// An exclusive lock held until dropped (flock on a file).
pub struct Lock {
    _file: fs::File,
}

impl Lock {
    /// Waits for the lock at `path`.
    pub fn acquire(path: &Path) -> Result<Lock> {
        if let Some(d) = path.parent() {
            fs::create_dir_all(d)?;
        }
        let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        // SAFETY: flock on an open fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error());
        }
        Ok(Lock { _file: f })
    }
}

/// Whether this machine can run Linux guests on KVM directly, or why not.
pub fn direct_kvm() -> std::result::Result<(), String> {
    match ironpod_vmm::host::linux_guest_blocker() {
        None => Ok(()),
        Some(why) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_boundaries() {
        assert_ne!(sha256_parts(&[b"ab", b"c"]), sha256_parts(&[b"a", b"bc"]));
        assert_eq!(sha256_parts(&[b"x"]).len(), 64);
    }

    #[test]
    fn atomic_write_and_install() {
        let d = tempfile_dir();
        let a = d.join("a");
        write_atomic(&a, b"hello").unwrap();
        install(&a, &d.join("sub/b")).unwrap();
        assert_eq!(fs::read(d.join("sub/b")).unwrap(), b"hello");
        fs::remove_dir_all(d).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-test-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
