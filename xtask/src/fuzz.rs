//! `cargo xtask fuzz [--seconds N] [TARGET…]`: the libFuzzer targets of `fuzz/` (cargo-fuzz,
//! nightly toolchain, AddressSanitizer, debug assertions on), each run for N seconds, two at
//! a time (one per core). Prints a table — runs, coverage, corpus, result — and fails when
//! a target crashed; the crashing input stays in `fuzz/artifacts/TARGET/`. The build and the
//! corpus live in the machine's cache (`/var/cache/ironpod/fuzz-target`, `…/fuzz-corpus/TARGET`),
//! like the kernel's: a fresh machine builds from scratch, later runs reuse both and the
//! corpus grows from run to run.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util;

/// Every target, guest-facing first.
pub const TARGETS: &[&str] = &[
    "virtio_blk",
    "virtio_net",
    "virtio_vsock",
    "virtio_balloon",
    "virtio_mmio",
    "vsock_muxer",
    "agent_frames",
    "oci_json",
    "layer_unpack",
    "www_authenticate",
    "cli_options",
];

/// The cargo-fuzz release `xtask` installs when it is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Targets (default: all).
    pub targets: Vec<String>,
}

/// One target's run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Target.
    pub target: String,
    /// Inputs executed.
    pub runs: u64,
    /// Coverage points (`cov`) and features (`ft`) libFuzzer reached.
    pub cov: u64,
    /// Features.
    pub ft: u64,
    /// Inputs in the corpus afterwards.
    pub corpus: u64,
    /// Whether it ended without a crash, leak or timeout.
    pub ok: bool,
    /// The last lines of its output, when it failed.
    pub tail: String,
}

fn fuzz_dir() -> PathBuf {
    util::root().join("fuzz")
}

fn cache() -> PathBuf {
    PathBuf::from(util::CACHE_DIR)
}

fn cargo_fuzz() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").arg("fuzz").current_dir(fuzz_dir());
    c
}

/// Makes sure the nightly toolchain and cargo-fuzz are there (installs cargo-fuzz).
fn ensure_tools() -> Result<()> {
    let nightly = Command::new("cargo").args(["+nightly", "--version"]).output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        bail!("fuzzing needs the nightly toolchain (`rustup toolchain install nightly`)");
    }
    let have = cargo_fuzz().arg("--version").output();
    if !have.is_ok_and(|o| o.status.success()) {
        eprintln!("xtask fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
        util::run(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    Ok(())
}

/// Builds every target (optimised, debug assertions on, AddressSanitizer).
pub fn build() -> Result<()> {
    ensure_tools()?;
    util::run(
        cargo_fuzz()
            .args(["build", "-O", "--debug-assertions", "--target-dir"])
            .arg(cache().join("fuzz-target")),
    )
    .context("build the fuzz targets")?;
    Ok(())
}

/// The numbers of libFuzzer's last status line (`#N DONE cov: C ft: F corp: K/…`).
fn parse_status(out: &str) -> (u64, u64, u64, u64) {
    let mut last = (0, 0, 0, 0);
    for line in out.lines().filter(|l| l.starts_with('#')) {
        let mut f = line.split_whitespace();
        let runs = f.next().and_then(|n| n[1..].parse().ok()).unwrap_or(0);
        let get = |key: &str| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .and_then(|v| v.split('/').next()?.parse().ok())
                .unwrap_or(0)
        };
        let (cov, ft, corp) = (get("cov:"), get("ft:"), get("corp:"));
        if runs > 0 {
            last = (runs, cov, ft, corp);
        }
    }
    last
}

fn start(target: &str, seconds: u64) -> Result<std::process::Child> {
    let corpus = cache().join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    cargo_fuzz()
        .args(["run", "-O", "--debug-assertions", "--target-dir"])
        .arg(cache().join("fuzz-target"))
        .arg(target)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A target that allocates past this is a finding (the guest made the VMM grow).
        .arg("-rss_limit_mb=2048")
        .arg("-timeout=10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start fuzz target {target}"))
}

fn finish(target: &str, child: std::process::Child) -> Result<Report> {
    let out = child.wait_with_output()?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (runs, cov, ft, corpus) = parse_status(&text);
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    Ok(Report {
        target: target.to_string(),
        runs,
        cov,
        ft,
        corpus,
        ok: out.status.success(),
        tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// Runs `targets` (all when empty) for `seconds` each, two at a time.
pub fn run_targets(targets: &[String], seconds: u64) -> Result<Vec<Report>> {
    let all: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    let chosen = if targets.is_empty() { all } else { targets.to_vec() };
    for t in &chosen {
        if !TARGETS.contains(&t.as_str()) {
            bail!("no fuzz target {t:?} (have: {})", TARGETS.join(", "));
        }
    }
    build()?;
    let mut reports = Vec::new();
    for pair in chosen.chunks(2) {
        let children: Vec<_> =
            pair.iter().map(|t| start(t, seconds).map(|c| (t, c))).collect::<Result<_>>()?;
        for (t, c) in children {
            let r = finish(t, c)?;
            if !r.ok {
                eprintln!("xtask fuzz: {t} FAILED:\n{}", r.tail);
            }
            reports.push(r);
        }
    }
    Ok(reports)
}

/// Prints the reports as a table.
pub fn print(reports: &[Report], seconds: u64) {
    println!("| target | seconds | runs | cov | ft | corpus | result |");
    println!("|---|---|---|---|---|---|---|");
    for r in reports {
        println!(
            "| {} | {seconds} | {} | {} | {} | {} | {} |",
            r.target,
            r.runs,
            r.cov,
            r.ft,
            r.corpus,
            if r.ok { "ok" } else { "FAILED" }
        );
    }
}

/// `cargo xtask fuzz`.
pub fn run(a: FuzzArgs) -> Result<()> {
    let t = Instant::now();
    let reports = run_targets(&a.targets, a.seconds)?;
    print(&reports, a.seconds);
    eprintln!("xtask fuzz: {:?}", Duration::from_secs(t.elapsed().as_secs()));
    let failed: Vec<&str> = reports.iter().filter(|r| !r.ok).map(|r| r.target.as_str()).collect();
    if !failed.is_empty() {
        bail!("fuzz targets failed: {} (inputs in fuzz/artifacts/)", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let out = "INFO: seed\n#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0\n\
                   #4096\tpulse  cov: 80 ft: 120 corp: 9/300b lim: 43 exec/s: 2048\n\
                   #9000\tDONE   cov: 85 ft: 130 corp: 12/1Kb lim: 60 exec/s: 3000 rss: 40Mb\n\
                   Done 9000 runs in 3 second(s)\n";
        assert_eq!(parse_status(out), (9000, 85, 130, 12));
        assert_eq!(parse_status("nothing"), (0, 0, 0, 0));
    }
}
