//! `cargo xtask bench run`: `ironpod run --rm demo true` restored from the pod template vs
//! booted cold vs `ironpod vm check` (bare VM boot) vs `runc run` of the same root
//! filesystem, side by side; then the memory of idle pods, templated and cold; optionally
//! how many idle pods fit in memory.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::stats;
use crate::bench_prep::{mem_available_mib, settle};
use crate::{demo_image, util};

/// Runs `cmd` to its end; its wall time in ms (an error if it failed).
pub fn timed(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(ms)
}

/// (RSS, PSS) of a process in KiB. PSS charges each shared page (the binaries' code, shared
/// by every pod's VMM and monitor) in equal parts to the processes that map it: with many
/// pods it is what one more pod costs. Guest memory is private and counts in full in both.
fn rss_pss_kib(pid: i64) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// A runc bundle with the demo root filesystem, running `true`.
fn runc_bundle(dir: &Path, tarball: &Path) -> Result<()> {
    runc_bundle_with(dir, tarball, &["true"], None)
}

/// A runc bundle with the demo root filesystem running `args`, in the network namespace
/// `/run/netns/NETNS` if given.
pub fn runc_bundle_with(
    dir: &Path,
    tarball: &Path,
    args: &[&str],
    netns: Option<&str>,
) -> Result<()> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    util::run(Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&rootfs))?;
    util::run(Command::new("runc").args(["spec"]).current_dir(dir))?;
    let cfg = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg)?)?;
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = serde_json::json!(args);
    if let (Some(ns), Some(list)) = (netns, v["linux"]["namespaces"].as_array_mut()) {
        for n in list.iter_mut().filter(|n| n["type"] == "network") {
            n["path"] = format!("/run/netns/{ns}").into();
        }
    }
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v)?)?;
    Ok(())
}

/// `bench cri`'s measuring part, where KVM can run Linux: the CRI client lives in the tests
/// package (`cri-bench`), built with the release binaries.
pub fn cri_driver(runs: usize) -> Result<()> {
    util::run(
        Command::new(util::target_dir().join("release/cri-bench"))
            .arg("--runs")
            .arg(runs.to_string()),
    )
}

/// One timed command of the comparison.
struct Contender {
    row: &'static str,
    /// Its command for run `i`.
    cmd: Box<dyn Fn(usize) -> Command>,
    times: Vec<f64>,
}

/// The measuring part; runs where KVM can run Linux.
pub fn driver(runs: usize, pods: usize, density: bool) -> Result<()> {
    let ironpod = util::target_dir().join("release/ironpod");
    std::fs::create_dir_all("/run/ironpod-bench")?;
    let root = tempfile::tempdir_in("/run/ironpod-bench")?;
    let tarball = demo_image::build_tarball()?;
    let rootp = root.path().to_path_buf();
    let ip = move |args: &[&str]| {
        let mut c = Command::new(&ironpod);
        c.arg("--root").arg(&rootp).args(args);
        c
    };
    timed(ip(&["import", &tarball.to_string_lossy(), "demo"]).stdout(std::process::Stdio::null()))?;
    let bundle = root.path().join("bundle");
    runc_bundle(&bundle, &tarball)?;
    let ipc = |args: &'static [&'static str]| {
        let ip = ip.clone();
        Box::new(move |_: usize| ip(args)) as Box<dyn Fn(usize) -> Command>
    };
    let b = bundle.clone();
    let mut all = vec![
        ("`ironpod run --rm demo true`, from the template", ipc(&["run", "--rm", "demo", "true"])),
        (
            "`ironpod run --rm --no-template demo true` (cold boot)",
            ipc(&["run", "--rm", "--no-template", "demo", "true"]),
        ),
        (
            "`ironpod run --rm --network none demo true`, from the template",
            ipc(&["run", "--rm", "--network", "none", "demo", "true"]),
        ),
        (
            "`ironpod run --rm --network none --no-template demo true`",
            ipc(&["run", "--rm", "--network", "none", "--no-template", "demo", "true"]),
        ),
        ("`ironpod vm check` (bare VM: boot, agent answers, shutdown)", ipc(&["vm", "check"])),
        (
            "`ironpod vm check --unconfined` (no jail, seccomp, cgroup)",
            ipc(&["vm", "check", "--unconfined"]),
        ),
        (
            "`runc run` (same rootfs, no VM)",
            Box::new(move |i: usize| {
                let mut c = Command::new("runc");
                c.args(["run", "--bundle"]).arg(&b).arg(format!("bench{i}"));
                c
            }) as Box<dyn Fn(usize) -> Command>,
        ),
    ]
    .into_iter()
    .map(|(row, cmd)| Contender { row, cmd, times: Vec::new() })
    .collect::<Vec<_>>();
    // Warm-up, untimed: every contender once (this makes the layer disk and the pod
    // template, and loads every binary into the page cache).
    for (i, c) in all.iter().enumerate() {
        timed(&mut (c.cmd)(1000 + i)).with_context(|| format!("warm-up of {}", c.row))?;
        settle();
    }
    // Each run in another order (a rotation), each step after the machine settled.
    let n = all.len();
    for i in 0..runs {
        for k in 0..n {
            let c = &mut all[(i + k) % n];
            let ms = timed(&mut (c.cmd)(i))?;
            c.times.push(ms);
            settle();
        }
        let line: Vec<String> =
            all.iter().map(|c| format!("{:.0}", c.times.last().copied().unwrap_or(0.0))).collect();
        eprintln!("run {}: {} ms", i + 1, line.join(" / "));
    }
    println!(
        "| start → exit ({runs} runs each, after a warm-up run of each) | median | min | max |"
    );
    println!("|---|---|---|---|");
    let mut medians = Vec::new();
    for c in &mut all {
        let (m, lo, hi) = stats(&mut c.times);
        medians.push(m);
        println!("| {} | {m:.0} ms | {lo:.0} ms | {hi:.0} ms |", c.row);
    }
    let (tpl, cold, check, loose, runc) =
        (medians[0], medians[1], medians[4], medians[5], medians[6]);
    println!("| from the template / cold boot | {:.2}× | | |", tpl / cold);
    println!("| from the template / runc | {:.2}× | | |", tpl / runc);
    println!("| cold boot / runc | {:.2}× | | |", cold / runc);
    println!("| jailed + seccomp / unconfined (`vm check`) | {:.3}× | | |", check / loose);
    println!();
    idle_memory(&ip, pods)?;
    if density {
        println!();
        println!("| idle pods that fit (until MemAvailable < {DENSITY_FLOOR_MIB} MiB, at most {DENSITY_CAP}) | pods | MemAvailable per pod |");
        println!("|---|---|---|");
        for (name, extra) in [("from the template", &[][..]), ("cold boot", &["--no-template"][..])]
        {
            let (count, per_pod, why) = fill(&ip, extra)?;
            println!("| {name} | {count} ({why}) | {per_pod:.1} MiB |");
        }
    }
    Ok(())
}

/// Starts an idle pod (`sleep`), from the template unless `extra` says otherwise.
fn idle_pod(ip: &dyn Fn(&[&str]) -> Command, extra: &[&str]) -> Result<String> {
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["demo", "sleep", "36000"]);
    let out = ip(&args).output()?;
    if !out.status.success() {
        bail!("ironpod run -d: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn remove_all(ip: &dyn Fn(&[&str]) -> Command, ids: &[String]) {
    for chunk in ids.chunks(20) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk.iter().map(String::as_str));
        let _ = ip(&args).output();
    }
    settle();
}

/// The memory of `pods` idle pods, from the template and cold: each pod's VMM and monitor
/// (PSS: a page shared by n processes counts 1/n to each — the template's memory file's
/// pages, the binaries), and what the host's MemAvailable lost per pod (page cache and
/// kernel memory too).
fn idle_memory(ip: &dyn Fn(&[&str]) -> Command, pods: usize) -> Result<()> {
    println!(
        "| idle pod memory ({pods} pods each, 256 MiB guests, 10 s idle) | median | min | max |"
    );
    println!("|---|---|---|---|");
    for (name, extra) in [("from the template", &[][..]), ("cold boot", &["--no-template"][..])] {
        let before = mem_available_mib()?;
        let mut ids = Vec::new();
        for _ in 0..pods {
            ids.push(idle_pod(ip, extra)?);
        }
        // Idle: the containers started, the guests' free page reports settled.
        std::thread::sleep(Duration::from_secs(10));
        let after = mem_available_mib()?;
        let (mut vmm, mut mon, mut total) = (Vec::new(), Vec::new(), Vec::new());
        for id in &ids {
            let out = ip(&["inspect", id]).output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let vp = v[0]["Pod"]["VmmPid"].as_i64().context("vmm pid")?;
            let mp = v[0]["Pod"]["MonitorPid"].as_i64().context("monitor pid")?;
            let (_, vpss) = rss_pss_kib(vp).context("vmm memory")?;
            let (_, mpss) = rss_pss_kib(mp).context("monitor memory")?;
            vmm.push(vpss as f64 / 1024.0);
            mon.push(mpss as f64 / 1024.0);
            total.push((vpss + mpss) as f64 / 1024.0);
        }
        remove_all(ip, &ids);
        let (vm_, vmin, vmax) = stats(&mut vmm);
        let (mm, mmin, mmax) = stats(&mut mon);
        let (tm, tmin, tmax) = stats(&mut total);
        println!("| {name}: ironpod-vmm PSS (VMM + guest memory) | {vm_:.1} MiB | {vmin:.1} MiB | {vmax:.1} MiB |");
        println!("| {name}: pod monitor PSS | {mm:.1} MiB | {mmin:.1} MiB | {mmax:.1} MiB |");
        println!(
            "| **{name}: total per pod (PSS)** | {tm:.1} MiB | {tmin:.1} MiB | {tmax:.1} MiB |"
        );
        println!(
            "| {name}: MemAvailable lost per pod | {:.1} MiB | | |",
            (before - after) / pods as f64
        );
    }
    Ok(())
}

/// Density: idle pods are started until the host's MemAvailable falls below this.
const DENSITY_FLOOR_MIB: f64 = 512.0;
/// …or this many run.
const DENSITY_CAP: usize = 400;

/// Starts idle pods until memory runs low, a start fails or [`DENSITY_CAP`]; returns how
/// many ran, MemAvailable lost per pod, and why it stopped. Removes them.
fn fill(ip: &dyn Fn(&[&str]) -> Command, extra: &[&str]) -> Result<(usize, f64, String)> {
    let before = mem_available_mib()?;
    let mut ids = Vec::new();
    let why = loop {
        if ids.len() >= DENSITY_CAP {
            break "the cap".to_string();
        }
        if mem_available_mib()? < DENSITY_FLOOR_MIB {
            break "memory".to_string();
        }
        match idle_pod(ip, extra) {
            Ok(id) => ids.push(id),
            Err(e) => break format!("a start failed: {e}"),
        }
        if ids.len() % 25 == 0 {
            eprintln!(
                "density {extra:?}: {} pods, {:.0} MiB available",
                ids.len(),
                mem_available_mib()?
            );
        }
    };
    std::thread::sleep(Duration::from_secs(10));
    let per_pod = (before - mem_available_mib()?) / ids.len().max(1) as f64;
    let count = ids.len();
    remove_all(ip, &ids);
    Ok((count, per_pod, why))
}
