//! The guest initramfs: the static agent as /init plus the few nodes it needs before it
//! mounts devtmpfs. Uncompressed: it is under 2 MiB, and the guest then spends no time
//! decompressing.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cpio::CpioWriter;
use crate::util;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the static agent and the initramfs; installs it; returns the built path.
pub fn build() -> Result<PathBuf> {
    let agent_target = util::target_dir().join("agent");
    util::run(
        util::cargo()
            // Static and not position-independent: no relocations to apply when the agent
            // (and every container child, which re-executes it) starts.
            .env("RUSTFLAGS", "-C target-feature=+crt-static -C relocation-model=static")
            // The binary lives in guest RAM (the initramfs is its only filesystem) and is
            // paid for by every pod: optimise for size, one codegen unit, no symbols, no
            // unwinding tables (a panic ends the VM anyway). 5.0 MB → 3.1 MB.
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
            .env("CARGO_PROFILE_RELEASE_LTO", "fat")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
            .args([
                "build",
                "--release",
                "-q",
                "-p",
                "ironpod-agent",
                "--target",
                TARGET,
                "--target-dir",
            ])
            .arg(&agent_target),
    )?;
    let agent = agent_target.join(TARGET).join("release/ironpod-agent");
    let bin = fs::read(&agent).with_context(|| format!("read {}", agent.display()))?;
    let mut w = CpioWriter::new(Vec::with_capacity(bin.len() + 4096));
    for d in ["dev", "proc", "sys", "tmp", "run", "mnt"] {
        w.dir(d, 0o755)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    w.file("init", 0o755, &bin)?;
    let image = w.finish()?;
    let out = util::target_dir().join("ironpod/initramfs.img");
    util::write_atomic(&out, &image)?;
    util::install(&out, &PathBuf::from(util::ASSET_DIR).join("initramfs.img"))?;
    Ok(out)
}
