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
    // Debian's docker-compose 1.29 (docker-py), driven against the Docker API service;
    // without recommends, so no docker.io daemon package comes with it.
    "docker-compose",
    // Debian's podman 4.3 (buildah 1.28): the reference `ironpod build` is compared with.
    "podman",
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

/// Debian's docker.io 20.10 CLI, the real client the Docker API tests drive: only its
/// `docker` binary, taken out of the package (installing the package would start dockerd).
pub const DOCKER_CLI: &str = "/var/cache/ironpod/docker-cli/docker";

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
    ensure_packages(PACKAGES)?;
    if !std::path::Path::new(DOCKER_CLI).is_file() {
        docker_cli()?;
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

/// Downloads Debian's docker.io package and keeps its `docker` binary as [`DOCKER_CLI`].
fn docker_cli() -> Result<()> {
    eprintln!("xtask: fetching the docker CLI from Debian's docker.io package");
    let tmp = tempfile::tempdir()?;
    // apt drops privileges to _apt for downloads: let it write there.
    util::run(Command::new("chmod").arg("0777").arg(tmp.path()))?;
    let download = || {
        util::run(Command::new("apt-get").current_dir(tmp.path()).args([
            "download",
            "-q",
            "docker.io",
        ]))
    };
    if download().is_err() {
        // A machine whose package lists were never fetched.
        util::run(Command::new("apt-get").arg("update").arg("-q"))?;
        download()?;
    }
    let deb = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow::anyhow!("apt-get download docker.io left no .deb"))?;
    let x = tmp.path().join("x");
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    let dest = std::path::Path::new(DOCKER_CLI);
    std::fs::create_dir_all(dest.parent().unwrap())?;
    let part = dest.with_extension("part");
    std::fs::copy(x.join("usr/bin/docker"), &part)?;
    std::fs::rename(&part, dest)?;
    Ok(())
}

/// Installs whichever of `packages` are missing (without recommends).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
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
    Ok(())
}
