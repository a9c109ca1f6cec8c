//! The guest kernel: Debian's linux-source-6.12 + `guest-kernel/ironpod.config` on top of
//! `make tinyconfig`, cached by hash of (source package version, fragment, recipe).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{deps, util};

/// Bumped whenever the build steps change in a way that changes the output.
const RECIPE: &str = "tinyconfig+merge+olddefconfig;make vmlinux bzImage;v1";
const SOURCE_PKG: &str = "linux-source-6.12";
const SOURCE_TAR: &str = "/usr/src/linux-source-6.12.tar.xz";

fn fragment_path() -> PathBuf {
    util::root().join("guest-kernel/ironpod.config")
}

/// The cache key for the current fragment and installed source.
pub fn cache_key() -> Result<String> {
    let version =
        util::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", SOURCE_PKG]))?;
    let fragment = fs::read(fragment_path()).context("read guest-kernel/ironpod.config")?;
    Ok(key_for(version.trim(), &fragment))
}

fn key_for(version: &str, fragment: &[u8]) -> String {
    util::sha256_parts(&[version.as_bytes(), fragment, RECIPE.as_bytes()])
}

/// Checks that every option of the fragment ended up in `.config` as asked.
fn verify_config(config: &str, fragment: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for line in fragment.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(opt) = rest.strip_suffix(" is not set") {
                if config.lines().any(|l| l.starts_with(&format!("{opt}="))) {
                    bad.push(format!("{opt} should be unset"));
                }
            }
        } else if line.starts_with("CONFIG_") && !config.lines().any(|l| l.trim() == line) {
            bad.push(format!("{line} not applied"));
        }
    }
    bad
}

/// Builds the kernel unless the cache has it; installs it to the asset dir; returns the
/// cached vmlinux.
pub fn build() -> Result<PathBuf> {
    deps::ensure()?;
    let _lock = util::Lock::acquire(Path::new("/var/cache/ironpod/kernel.lock"))?;
    let key = cache_key()?;
    let entry = Path::new(util::CACHE_DIR).join("kernel").join(&key);
    if !entry.join("vmlinux").is_file() {
        eprintln!("xtask: building the guest kernel (cache key {key}); this takes minutes");
        build_into(&entry)?;
    }
    let asset = Path::new(util::ASSET_DIR);
    for f in ["vmlinux", "bzImage"] {
        util::install(&entry.join(f), &asset.join(f))?;
    }
    Ok(entry.join("vmlinux"))
}

fn build_into(entry: &Path) -> Result<()> {
    let kbuild = Path::new(util::CACHE_DIR).join("kbuild");
    let tree = kbuild.join("linux-source-6.12");
    if !tree.join("Makefile").is_file() {
        fs::create_dir_all(&kbuild)?;
        util::run(Command::new("tar").arg("xf").arg(SOURCE_TAR).arg("-C").arg(&kbuild))?;
    }
    let make = |args: &[&str]| -> Result<()> {
        util::run(Command::new("make").arg("-C").arg(&tree).arg("-s").args(args))
    };
    make(&["tinyconfig"])?;
    util::run(
        Command::new("./scripts/kconfig/merge_config.sh")
            .current_dir(&tree)
            .args(["-m", ".config"])
            .arg(fragment_path())
            .stdout(std::process::Stdio::null()),
    )?;
    make(&["olddefconfig"])?;
    let config = fs::read_to_string(tree.join(".config"))?;
    let bad = verify_config(&config, &fs::read_to_string(fragment_path())?);
    if !bad.is_empty() {
        bail!("the kernel config does not match guest-kernel/ironpod.config: {}", bad.join(", "));
    }
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string();
    util::run(
        Command::new("make")
            .arg("-C")
            .arg(&tree)
            .arg(format!("-j{jobs}"))
            .args(["vmlinux", "bzImage"]),
    )?;
    // Fill a temporary entry, then rename: a killed build never leaves a half entry.
    let tmp = entry.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    fs::copy(tree.join("vmlinux"), tmp.join("vmlinux"))?;
    fs::copy(tree.join("arch/x86/boot/bzImage"), tmp.join("bzImage"))?;
    fs::copy(tree.join(".config"), tmp.join("config"))?;
    for f in ["vmlinux", "bzImage", "config"] {
        fs::File::open(tmp.join(f))?.sync_all()?;
    }
    fs::rename(&tmp, entry)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_inputs() {
        let a = key_for("6.12.117-1", b"CONFIG_A=y\n");
        assert_ne!(a, key_for("6.12.118-1", b"CONFIG_A=y\n"));
        assert_ne!(a, key_for("6.12.117-1", b"CONFIG_A=n\n"));
        assert_eq!(a, key_for("6.12.117-1", b"CONFIG_A=y\n"));
    }

    #[test]
    fn config_verification() {
        let frag = "# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=64\n";
        assert!(verify_config("CONFIG_A=y\nCONFIG_C=64\n", frag).is_empty());
        let bad = verify_config("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=32\n", frag);
        assert_eq!(bad.len(), 2, "{bad:?}");
    }
}
