//! Debian packages the build, the rig and the tests need.

use std::process::Command;

use anyhow::Result;

use crate::util;

/// Packages: kernel build, rig (QEMU, busybox), disk images for tests, containerd with the
/// CNI plugins its CRI tests use, the tools the runtime and the tests call (`ip`, `nft`,
/// `pgrep`/`pkill`), and protoc for the CRI client the tests build.
pub const PACKAGES: &[&str] = &[
    "linux-source-6.12",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "make",
    "gcc",
    "cpio",
    "xz-utils",
    "zstd",
    "lz4",
    "qemu-system-x86",
    "busybox-static",
    "erofs-utils",
    "e2fsprogs",
    "skopeo",
    "docker-registry",
    "curl",
    "openssl",
    "apache2-utils",
    "containerd",
    "containernetworking-plugins",
    "iproute2",
    "procps",
    "protobuf-compiler",
    "nftables",
    // virtiofsd (volumes) is built from crates.io against these.
    "libseccomp-dev",
    "libcap-ng-dev",
];

/// virtiofsd, the virtio-fs server for volumes: Debian 12 has none, so it is built from
/// crates.io once and kept here (the path `ironpod` looks for).
const VIRTIOFSD_ROOT: &str = "/var/cache/ironpod/virtiofsd";
const VIRTIOFSD_VERSION: &str = "1.14.0";

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs whatever is missing (fast when nothing is).
pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing {}", missing.join(" "));
        util::run(Command::new("apt-get").arg("update").arg("-q"))?;
        util::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    let virtiofsd = std::path::Path::new(VIRTIOFSD_ROOT).join("bin/virtiofsd");
    if !virtiofsd.is_file() {
        eprintln!("xtask: building virtiofsd {VIRTIOFSD_VERSION} (about a minute)");
        util::run(Command::new("cargo").args([
            "install",
            "--locked",
            "--quiet",
            "--root",
            VIRTIOFSD_ROOT,
            "--version",
            VIRTIOFSD_VERSION,
            "virtiofsd",
        ]))?;
    }
    Ok(())
}
