//! `cargo xtask test` (every test; what CI runs) and `cargo xtask demo`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{deps, initramfs, kernel, rig, util};

/// Test executables of the `ironpod-tests` package (they boot Linux guests).
fn linux_test_executables() -> Result<Vec<PathBuf>> {
    let out = util::output(util::cargo().args([
        "test",
        "-p",
        "ironpod-tests",
        "--no-run",
        "--message-format=json",
        "-q",
    ]))?;
    let mut exes = Vec::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] == "compiler-artifact" && v["profile"]["test"] == true {
            if let Some(e) = v["executable"].as_str() {
                exes.push(PathBuf::from(e));
            }
        }
    }
    if exes.is_empty() {
        bail!("package ironpod-tests produced no test executables");
    }
    Ok(exes)
}

/// Runs every test: formatting, lints, host tests, then the Linux-booting tests directly on
/// KVM or, where KVM cannot run Linux, inside the rig. Never skips them.
pub fn run() -> Result<()> {
    deps::ensure()?;
    let vmlinux = kernel::build()?;
    let initrd = initramfs::build()?;
    eprintln!("xtask test: kernel {}, initramfs {}", vmlinux.display(), initrd.display());
    util::run(util::cargo().args(["fmt", "--all", "--check"]))?;
    util::run(util::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "-q",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::run(util::cargo().args(["test", "--workspace", "--exclude", "ironpod-tests"]))?;
    util::run(util::cargo().args(["build", "--workspace", "--bins", "-q"]))?;
    let exes = linux_test_executables()?;
    let mut script = String::from("set -e\n");
    for e in &exes {
        script.push_str(&format!(
            "echo '== {}'\n{} --test-threads=1 --nocapture\n",
            e.display(),
            e.display()
        ));
    }
    match util::direct_kvm() {
        Ok(()) => {
            eprintln!(
                "xtask test: this machine has hardware KVM: running the Linux guest tests directly"
            );
            util::run(Command::new("bash").arg("-c").arg(&script))
        }
        Err(why) => {
            eprintln!("xtask test: {why}, so the Linux guest tests run inside the rig");
            let code = rig::run(
                &["bash".into(), "-c".into(), script],
                false,
                Duration::from_secs(1500),
                4096,
            )?;
            if code != 0 {
                bail!("Linux guest tests failed in the rig (exit status {code})");
            }
            Ok(())
        }
    }
}

/// Builds everything and boots a microVM with our VMM, printing what the agent reports.
pub fn demo() -> Result<()> {
    deps::ensure()?;
    kernel::build()?;
    initramfs::build()?;
    util::run(util::cargo().args(["build", "--release", "--workspace", "--bins", "-q"]))?;
    let ironpod = util::target_dir().join("release/ironpod");
    crate::demo_image::ensure(&ironpod)?;
    println!("The local demo image, made from Debian's busybox-static with `ironpod import`:");
    util::run(Command::new(&ironpod).arg("images"))?;
    println!();
    // A bare VM first (boot time, guest kernel), then a container in a microVM of its own.
    let script = "set -e\n\
        echo '$ ironpod vm check --vcpus 2'\n\
        ironpod vm check --vcpus 2\n\
        echo\n\
        echo \"$ ironpod run --rm demo sh -c 'echo hello from a container; uname -r; hostname; id'\"\n\
        ironpod run --rm demo sh -c 'echo hello from a container in its own microVM; uname -r; hostname; id'\n";
    let args: Vec<String> = vec!["bash".into(), "-c".into(), script.into()];
    match util::direct_kvm() {
        Ok(()) => {
            let mut path = std::ffi::OsString::from(util::target_dir().join("release"));
            path.push(":");
            path.push(std::env::var_os("PATH").unwrap_or_default());
            util::run(Command::new("bash").args(&args[1..]).env("PATH", path)).context("the demo")
        }
        Err(why) => {
            eprintln!(
                "xtask demo: {why}: booting inside the test rig (a QEMU machine with nested KVM)"
            );
            let code = rig::run(&args, true, Duration::from_secs(600), 2048)?;
            if code != 0 {
                bail!("the demo failed in the rig (exit status {code})");
            }
            Ok(())
        }
    }
}
