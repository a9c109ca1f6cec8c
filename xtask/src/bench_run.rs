//! `cargo xtask bench run`: `ironpod run --rm demo true` vs `ironpod vm check` (bare VM boot)
//! vs `runc run` of the same root filesystem, side by side; then the memory of idle pods.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::stats;
use crate::{demo_image, util};

fn timed(cmd: &mut Command) -> Result<f64> {
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

/// In the rig, writes and frees most of L1's free RAM once. Under QEMU's emulation the first
/// write to each page of the emulated machine's RAM is slow (measured: after this, `run` is
/// ~0.3 s and `vm check` ~0.15 s faster); real RAM has no such cost, and without this
/// whichever scenario happens to land on never-touched L1 memory pays it.
fn touch_rig_ram() -> Result<()> {
    if std::env::var_os("IRONPOD_RIG").is_none() {
        return Ok(());
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let avail_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("MemAvailable in /proc/meminfo")?;
    let mib = (avail_kib / 1024).saturating_sub(768);
    let t = Instant::now();
    // Anonymous memory (a tmpfs file would stop at /run's size limit); non-zero so that
    // every page is really written, then given back when the vector is dropped.
    let mut v = vec![1u8; (mib as usize) << 20];
    for page in v.chunks_mut(4096) {
        page[0] = 2;
    }
    std::hint::black_box(&v);
    drop(v);
    eprintln!("rig: touched {mib} MiB of L1 RAM in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// `bench cri`'s measuring part, where KVM can run Linux: the CRI client lives in the tests
/// package (`cri-bench`), built with the release binaries.
pub fn cri_driver(runs: usize) -> Result<()> {
    touch_rig_ram()?;
    util::run(
        Command::new(util::target_dir().join("release/cri-bench"))
            .arg("--runs")
            .arg(runs.to_string()),
    )
}

/// The measuring part; runs where KVM can run Linux.
pub fn driver(runs: usize, pods: usize) -> Result<()> {
    let ironpod = util::target_dir().join("release/ironpod");
    std::fs::create_dir_all("/run/ironpod-bench")?;
    let root = tempfile::tempdir_in("/run/ironpod-bench")?;
    touch_rig_ram()?;
    let tarball = demo_image::build_tarball()?;
    let ip = |args: &[&str]| {
        let mut c = Command::new(&ironpod);
        c.arg("--root").arg(root.path()).args(args);
        c
    };
    timed(ip(&["import", &tarball.to_string_lossy(), "demo"]).stdout(std::process::Stdio::null()))?;
    let bundle = root.path().join("bundle");
    runc_bundle(&bundle, &tarball)?;
    // Warm-up: builds the layer disk once, loads the binaries into the page cache.
    timed(&mut ip(&["run", "--rm", "demo", "true"]))?;
    timed(&mut ip(&["vm", "check"]))?;
    let (mut run, mut check, mut runc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bare, mut loose) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // The VM checks first, in alternating order: right after a pod, whatever comes next
        // shares the CPU with that pod's monitor still cleaning up (~10 % slower here).
        if i % 2 == 0 {
            check.push(timed(&mut ip(&["vm", "check"]))?);
            loose.push(timed(&mut ip(&["vm", "check", "--unconfined"]))?);
        } else {
            loose.push(timed(&mut ip(&["vm", "check", "--unconfined"]))?);
            check.push(timed(&mut ip(&["vm", "check"]))?);
        }
        run.push(timed(&mut ip(&["run", "--rm", "demo", "true"]))?);
        bare.push(timed(&mut ip(&["run", "--rm", "--network", "none", "demo", "true"]))?);
        runc.push(timed(
            Command::new("runc").args(["run", "--bundle"]).arg(&bundle).arg(format!("bench{i}")),
        )?);
        eprintln!(
            "run {}: ironpod run {:.0} ms (no network {:.0} ms), vm check {:.0} ms \
             (unconfined {:.0} ms), runc {:.0} ms",
            i + 1,
            run[i],
            bare[i],
            check[i],
            loose[i],
            runc[i]
        );
    }
    let (rm, rmin, rmax) = stats(&mut run);
    let (cm, cmin, cmax) = stats(&mut check);
    let (um, umin, umax) = stats(&mut runc);
    let (nm, nmin, nmax) = stats(&mut bare);
    let (lm, lmin, lmax) = stats(&mut loose);
    println!("| start to exit ({runs} runs each) | median | min | max |");
    println!("|---|---|---|---|");
    println!("| `ironpod run --rm demo true` | {rm:.0} ms | {rmin:.0} ms | {rmax:.0} ms |");
    println!("| `ironpod run --rm --network none demo true` | {nm:.0} ms | {nmin:.0} ms | {nmax:.0} ms |");
    println!("| `ironpod vm check` (bare VM boot + shutdown; jailed + seccomp) | {cm:.0} ms | {cmin:.0} ms | {cmax:.0} ms |");
    println!("| `ironpod vm check --unconfined` (no jail, seccomp, cgroup) | {lm:.0} ms | {lmin:.0} ms | {lmax:.0} ms |");
    println!("| jailed + seccomp / unconfined | {:.3}× | | |", cm / lm);
    println!("| `runc run` (same rootfs, no VM) | {um:.0} ms | {umin:.0} ms | {umax:.0} ms |");
    println!("| run / bare boot | {:.2}× | | |", rm / cm);
    // Idle pods: what each costs on the host once booted and idle.
    let mut ids = Vec::new();
    for _ in 0..pods {
        let out = ip(&["run", "-d", "demo", "sleep", "3600"]).output()?;
        if !out.status.success() {
            bail!("ironpod run -d: {}", String::from_utf8_lossy(&out.stderr));
        }
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    // Idle: booted, the container started, and the guest's free page reports settled.
    std::thread::sleep(Duration::from_secs(10));
    let (mut vmm, mut mon, mut vmm_rss, mut mon_rss, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for id in &ids {
        let out = ip(&["inspect", id]).output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let vp = v[0]["Pod"]["VmmPid"].as_i64().context("vmm pid")?;
        let mp = v[0]["Pod"]["MonitorPid"].as_i64().context("monitor pid")?;
        let (vr, vpss) = rss_pss_kib(vp).context("vmm memory")?;
        let (mr, mpss) = rss_pss_kib(mp).context("monitor memory")?;
        vmm.push(vpss as f64 / 1024.0);
        mon.push(mpss as f64 / 1024.0);
        vmm_rss.push(vr as f64 / 1024.0);
        mon_rss.push(mr as f64 / 1024.0);
        total.push((vpss + mpss) as f64 / 1024.0);
    }
    for id in &ids {
        let _ = ip(&["rm", "-f", id]).output();
    }
    let (vm_, vmin, vmax) = stats(&mut vmm);
    let (mm, mmin, mmax) = stats(&mut mon);
    let (vr, vrmin, vrmax) = stats(&mut vmm_rss);
    let (mr, mrmin, mrmax) = stats(&mut mon_rss);
    let (tm, tmin, tmax) = stats(&mut total);
    println!();
    println!("| idle pod memory ({pods} pods, 256 MiB guests, 10 s idle) | median | min | max |");
    println!("|---|---|---|---|");
    println!("| ironpod-vmm PSS (VMM + guest memory touched) | {vm_:.1} MiB | {vmin:.1} MiB | {vmax:.1} MiB |");
    println!("| pod monitor PSS | {mm:.1} MiB | {mmin:.1} MiB | {mmax:.1} MiB |");
    println!("| **total per pod (PSS)** | {tm:.1} MiB | {tmin:.1} MiB | {tmax:.1} MiB |");
    println!("| (ironpod-vmm RSS) | {vr:.1} MiB | {vrmin:.1} MiB | {vrmax:.1} MiB |");
    println!("| (pod monitor RSS) | {mr:.1} MiB | {mrmin:.1} MiB | {mrmax:.1} MiB |");
    Ok(())
}
