//! `cargo xtask bench boot`'s probe rows: our VMM and Firecracker boot the same kernel and
//! the same tiny `/init` (`boot-probe`, which prints the guest's uptime and resets the
//! machine), alternating, in one run. Two clocks: the host's from the VMM's start to its
//! exit, and the guest's own uptime when /init ran (which leaves out the VMM's start and
//! exit and the console).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cpio::CpioWriter;
use crate::util;

/// The guest's command line for both VMMs (each VMM adds its device entries).
pub const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 quiet";
/// Guest memory of the probe boots, MiB.
pub const MEMORY_MIB: u64 = 128;

/// Builds the static probe and its initramfs (`target/ironpod/boot-probe.img`).
pub fn build_probe_initramfs() -> Result<PathBuf> {
    build_init_initramfs("boot-probe")
}

/// Builds `ironpod-tests`' binary `bin` statically and an initramfs holding it as `/init`
/// (`target/ironpod/<bin>.img`): a probe that every VMM compared boots alike.
pub fn build_init_initramfs(bin: &str) -> Result<PathBuf> {
    util::build_static("release", "ironpod-tests", bin)?;
    let bin_path = util::target_dir().join("release").join(bin);
    let exe = std::fs::read(&bin_path).with_context(|| format!("read {}", bin_path.display()))?;
    let mut w = CpioWriter::new(Vec::with_capacity(exe.len() + 1024));
    w.dir("dev", 0o755)?;
    w.dir("proc", 0o755)?;
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.file("init", 0o755, &exe)?;
    let out = init_initramfs(bin);
    util::write_atomic(&out, &w.finish()?)?;
    Ok(out)
}

/// Where [`build_probe_initramfs`] puts the probe initramfs.
pub fn probe_initramfs() -> PathBuf {
    init_initramfs("boot-probe")
}

/// Where [`build_init_initramfs`] puts `bin`'s initramfs.
pub fn init_initramfs(bin: &str) -> PathBuf {
    util::target_dir().join(format!("ironpod/{bin}.img"))
}

/// One probe boot: host milliseconds from start to the probe's line and to exit, guest
/// seconds at /init.
#[derive(Debug, Clone, Copy)]
pub struct ProbeBoot {
    /// Start of the VMM process → the probe's line on its standard output, ms.
    pub init_ms: f64,
    /// Start of the VMM process → its exit, ms.
    pub wall_ms: f64,
    /// The guest's uptime when /init ran, s.
    pub uptime_s: f64,
}

/// A VMM (ours or a peer) started with its guest's console on a pipe, read line by line;
/// the first bytes of the console are kept for error messages.
pub struct ConsoleRun {
    child: Child,
    lines: std::io::Split<BufReader<ChildStdout>>,
    keep: usize,
    console: String,
}

/// How a [`ConsoleRun`] ended.
pub struct Ended {
    /// The process's exit status.
    pub status: ExitStatus,
    /// What it wrote to stderr.
    pub stderr: String,
    /// The first bytes of its console.
    pub console: String,
}

impl ConsoleRun {
    /// Starts `cmd` (stdin closed, stdout and stderr piped).
    pub fn start(cmd: &mut Command, who: &str, keep: usize) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {who}"))?;
        let out = child.stdout.take().context("stdout")?;
        Ok(ConsoleRun {
            child,
            lines: BufReader::new(out).split(b'\n'),
            keep,
            console: String::new(),
        })
    }

    /// The next console line (None once the console closes).
    pub fn next_line(&mut self) -> Option<Result<String>> {
        let line = match self.lines.next()? {
            Ok(l) => String::from_utf8_lossy(&l).into_owned(),
            Err(e) => return Some(Err(e.into())),
        };
        if self.console.len() < self.keep {
            self.console.push_str(&line);
            self.console.push('\n');
        }
        Some(Ok(line))
    }

    /// Waits for the process to exit.
    pub fn wait(mut self) -> Result<Ended> {
        let status = self.child.wait()?;
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        Ok(Ended { status, stderr, console: self.console })
    }
}

/// Runs `cmd` (a VMM that prints the guest console on stdout) to its exit; the probe's line.
fn time_probe(mut cmd: Command, who: &str) -> Result<ProbeBoot> {
    let t = Instant::now();
    let mut run = ConsoleRun::start(&mut cmd, who, 4096)?;
    let (mut uptime, mut init_ms) = (None, 0.0);
    while let Some(line) = run.next_line() {
        if let Some(v) = line?.trim().strip_prefix("boot-probe: uptime ") {
            init_ms = t.elapsed().as_secs_f64() * 1000.0;
            uptime = v.trim().parse::<f64>().ok();
        }
    }
    let ended = run.wait()?;
    let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
    let console = &ended.console;
    if !ended.status.success() {
        bail!("{who} exited with {}: {}\nconsole:\n{console}", ended.status, ended.stderr);
    }
    let uptime_s = uptime
        .with_context(|| format!("{who}: the probe printed no uptime; console:\n{console}"))?;
    Ok(ProbeBoot { init_ms, wall_ms, uptime_s })
}

/// Boots the probe under `ironpod-vmm` (unjailed, its seccomp filters on, as a pod's VMM
/// runs them).
pub fn ours(vmm: &Path, kernel: &str, dir: &Path) -> Result<ProbeBoot> {
    let config = dir.join("ironpod-vmm.json");
    let v = serde_json::json!({
        "vcpus": 1,
        "memory_mib": MEMORY_MIB,
        "kernel": kernel,
        "initrd": probe_initramfs(),
        "cmdline": CMDLINE,
    });
    std::fs::write(&config, v.to_string())?;
    let mut cmd = Command::new(vmm);
    cmd.arg("--config").arg(&config);
    time_probe(cmd, "ironpod-vmm")
}

/// Boots the probe under Firecracker (`--no-api`, a config file; no jailer).
pub fn firecracker(fc: &Path, kernel: &str, dir: &Path) -> Result<ProbeBoot> {
    let config = dir.join("firecracker.json");
    let v = serde_json::json!({
        "boot-source": {
            "kernel_image_path": kernel,
            "initrd_path": probe_initramfs(),
            "boot_args": CMDLINE,
        },
        "drives": [],
        "machine-config": { "vcpu_count": 1, "mem_size_mib": MEMORY_MIB },
    });
    std::fs::write(&config, v.to_string())?;
    let mut cmd = Command::new(fc);
    cmd.args(["--no-api", "--level", "Error", "--config-file"]).arg(&config);
    time_probe(cmd, "firecracker")
}

/// Prints the probe rows (medians, min, max) and the ratios to Firecracker.
pub fn table(runs: usize, ours: &[ProbeBoot], fc: &[ProbeBoot]) {
    let col = |v: &[ProbeBoot], f: fn(&ProbeBoot) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        crate::bench::stats(&mut x)
    };
    println!();
    println!(
        "| probe /init ({runs} runs each, 1 vCPU, {MEMORY_MIB} MiB), median (min–max) | start → /init's line | start → exit | guest uptime at /init |"
    );
    println!("|---|---|---|---|");
    let mut medians = Vec::new();
    for (who, v) in [("ironpod-vmm (seccomp on, no jail)", ours), ("Firecracker (no jailer)", fc)] {
        if v.is_empty() {
            continue;
        }
        let (im, imin, imax) = col(v, |b| b.init_ms);
        let (wm, wmin, wmax) = col(v, |b| b.wall_ms);
        let (um, umin, umax) = col(v, |b| b.uptime_s);
        println!(
            "| {who} | {im:.0} ms ({imin:.0}–{imax:.0}) | {wm:.0} ms ({wmin:.0}–{wmax:.0}) | {um:.2} s ({umin:.2}–{umax:.2}) |"
        );
        medians.push((im, wm, um));
    }
    if let [(oi, ow, ou), (fi, fw, fu)] = medians[..] {
        println!(
            "| ironpod-vmm / Firecracker | {:.2}× | {:.2}× | {:.2}× |",
            oi / fi,
            ow / fw,
            ou / fu
        );
    }
}
