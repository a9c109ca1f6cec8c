//! Helpers shared by the CLI test binaries.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `ironpod --root ROOT ARGS…`.
pub fn ironpod(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironpod")).arg("--root").arg(root).args(args).output().unwrap()
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The manifest digest of an image in a store.
pub fn manifest_of(root: &Path, r: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(root, &["image", "inspect", r]))).unwrap();
    v[0]["manifest"].as_str().unwrap().to_string()
}

/// A rootfs tarball `DIR/NAME.tar` holding `etc/motd` with `content`.
pub fn tarball(dir: &Path, name: &str, content: &str) -> PathBuf {
    let rootfs = dir.join(format!("rootfs-{name}"));
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), content).unwrap();
    let t = dir.join(format!("{name}.tar"));
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&t)
        .arg(".")
        .status()
        .unwrap()
        .success());
    t
}

/// `len` bytes of incompressible (xorshift) data.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs skopeo, asserting success.
pub fn skopeo(args: &[&str]) -> Output {
    let o = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by `cargo xtask deps`");
    assert!(o.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Debian's docker.io 20.10 CLI, put there by `cargo xtask test` (its dependency step).
pub fn docker_cli() -> PathBuf {
    let p = PathBuf::from(
        std::env::var("IRONPOD_DOCKER_CLI")
            .unwrap_or_else(|_| "/var/cache/ironpod/docker-cli/docker".into()),
    );
    assert!(
        p.is_file(),
        "{} is missing: `cargo xtask test` installs Debian's docker CLI there",
        p.display()
    );
    p
}
