//! `cargo xtask deb [--out DIR]`: a Debian package of ironpod, made with `dpkg-deb` (what
//! Debian builds its packages with): what `cargo xtask install --prefix /usr` puts in place
//! — the binaries, the guest kernel and initramfs, the systemd units and the README — with
//! the host tools ironpod runs as dependencies. Install it with `apt install ./FILE.deb`,
//! then `systemctl enable --now ironpod.socket` for the Docker API. Compressed with zstd
//! (dpkg 1.21.18 or later: Debian 12 and newer), which takes a second where xz takes 20.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{initramfs, install, kernel, util};

/// What the binaries run on the host (mkfs.erofs/fsck.erofs, mkfs.ext4, ip, nft).
const DEPENDS: &str = "libc6, erofs-utils, e2fsprogs, iproute2, nftables";
/// For volumes (virtio-fs) and the containerd shim.
const RECOMMENDS: &str = "virtiofsd, containerd";

/// Builds everything, then the package in `out`; returns its path.
pub fn run(out: &Path) -> Result<PathBuf> {
    let vmlinux = kernel::build()?;
    let initrd = initramfs::build()?;
    util::build_release_bins()?;
    let deb = build(out, &util::target_dir().join("release"), &vmlinux, &initrd)?;
    check(&deb)?;
    println!("{}", deb.display());
    Ok(deb)
}

/// Makes `out/ironpod_VERSION_ARCH.deb` from built binaries and the guest's kernel and
/// initramfs.
pub fn build(out: &Path, built: &Path, vmlinux: &Path, initrd: &Path) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = util::output(Command::new("dpkg").arg("--print-architecture"))
        .context("dpkg --print-architecture")?
        .trim()
        .to_string();
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let stage = out.join(format!(".ironpod-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let made = (|| {
        install::install_staged(&stage.join("usr"), Path::new("/usr"), built, vmlinux, initrd)?;
        let control = control(version, &arch, du_kib(&stage)?);
        util::write_atomic(&stage.join("DEBIAN/control"), control.as_bytes())?;
        normal_modes(&stage)?;
        let deb = out.join(format!("ironpod_{version}_{arch}.deb"));
        util::run(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zzstd", "-z6", "--build"])
                .arg(&stage)
                .arg(&deb),
        )?;
        Ok(deb)
    })();
    let _ = std::fs::remove_dir_all(&stage);
    made
}

/// The package's control file.
fn control(version: &str, arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: ironpod\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: ironpod developers <ironpod@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {DEPENDS}\n\
         Recommends: {RECOMMENDS}\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: https://github.com/ironpod/ironpod\n\
         Description: containers in KVM microVMs, one VM per pod\n \
         ironpod runs OCI containers the way Docker and Kubernetes do, each pod in a\n \
         microVM of its own: its VMM (ironpod-vmm), a guest kernel whose PID 1 is the\n \
         ironpod agent, a docker-shaped CLI, the Docker Engine API (ironpod.socket) and\n \
         a containerd shim (containerd-shim-ironpod-v2).\n"
    )
}

/// Calls `each` with every directory (`dir` first) and file under `dir` and its metadata.
fn walk(dir: &Path, mut each: impl FnMut(&Path, &std::fs::Metadata) -> Result<()>) -> Result<()> {
    each(dir, &std::fs::metadata(dir)?)?;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let path = e?.path();
            let meta = std::fs::metadata(&path)?;
            each(&path, &meta)?;
            if meta.is_dir() {
                todo.push(path);
            }
        }
    }
    Ok(())
}

/// Gives what is under `dir` the modes a package ships, whatever the builder's umask:
/// directories and executables 0755, other files 0644.
fn normal_modes(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    walk(dir, |path, meta| {
        let exec = meta.is_dir() || meta.permissions().mode() & 0o100 != 0;
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))
    })
}

/// The size of what is under `dir`, in KiB (as `Installed-Size` counts).
fn du_kib(dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    walk(dir, |_, meta| {
        if !meta.is_dir() {
            total += meta.len().div_ceil(1024);
        }
        Ok(())
    })?;
    Ok(total)
}

/// Checks a built package: its fields, its files, and that its `ironpod` runs.
pub fn check(deb: &Path) -> Result<()> {
    let info = util::output(Command::new("dpkg-deb").arg("--info").arg(deb))?;
    for want in ["Package: ironpod", "Depends: libc6, erofs-utils", "Installed-Size: "] {
        if !info.contains(want) {
            bail!("{}: no {want:?} in its control file:\n{info}", deb.display());
        }
    }
    let contents = util::output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    for f in install::BINARIES
        .iter()
        .map(|b| format!("./usr/bin/{b}"))
        .chain(["./usr/share/ironpod/vmlinux".into(), "./usr/share/ironpod/initramfs.img".into()])
        .chain(["./usr/lib/systemd/system/ironpod.socket".into()])
    {
        if !contents
            .lines()
            .any(|l| l.ends_with(&f) && l.starts_with("-") && l.contains("root/root"))
        {
            bail!("{}: no {f} owned by root:\n{contents}", deb.display());
        }
    }
    let x = deb.with_extension("x");
    let _ = std::fs::remove_dir_all(&x);
    let checked = (|| {
        util::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x))?;
        let unit = std::fs::read_to_string(x.join("usr/lib/systemd/system/ironpod.service"))?;
        if !unit.contains("ExecStart=/usr/bin/ironpod system service")
            || unit.contains("/usr/local")
        {
            bail!("the packaged ironpod.service does not start /usr/bin/ironpod:\n{unit}");
        }
        let v = util::output(Command::new(x.join("usr/bin/ironpod")).arg("--version"))?;
        if !v.starts_with("ironpod ") {
            bail!("the packaged ironpod does not run");
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&x);
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_file_has_what_dpkg_needs() {
        let c = control("1.2.3", "amd64", 42);
        for want in ["Package: ironpod\n", "Version: 1.2.3\n", "Architecture: amd64\n"] {
            assert!(c.contains(want), "{c}");
        }
        assert!(c.contains("Installed-Size: 42\n") && c.ends_with(".\n"), "{c}");
        // Continuation lines of the description start with a space.
        let desc = c.split("Description:").nth(1).unwrap();
        assert!(desc.lines().skip(1).all(|l| l.starts_with(' ')), "{c}");
    }
}
