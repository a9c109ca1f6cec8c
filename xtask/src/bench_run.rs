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

fn rss_kib(pid: i64) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A runc bundle with the demo root filesystem, running `true`.
fn runc_bundle(dir: &Path, tarball: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    util::run(Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&rootfs))?;
    util::run(Command::new("runc").args(["spec"]).current_dir(dir))?;
    let cfg = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg)?)?;
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = serde_json::json!(["true"]);
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v)?)?;
    Ok(())
}

/// The measuring part; runs where KVM can run Linux.
pub fn driver(runs: usize, pods: usize) -> Result<()> {
    let ironpod = util::target_dir().join("release/ironpod");
    std::fs::create_dir_all("/run/ironpod-bench")?;
    let root = tempfile::tempdir_in("/run/ironpod-bench")?;
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
    for i in 0..runs {
        run.push(timed(&mut ip(&["run", "--rm", "demo", "true"]))?);
        check.push(timed(&mut ip(&["vm", "check"]))?);
        runc.push(timed(
            Command::new("runc").args(["run", "--bundle"]).arg(&bundle).arg(format!("bench{i}")),
        )?);
        eprintln!(
            "run {}: ironpod run {:.0} ms, vm check {:.0} ms, runc {:.0} ms",
            i + 1,
            run[i],
            check[i],
            runc[i]
        );
    }
    let (rm, rmin, rmax) = stats(&mut run);
    let (cm, cmin, cmax) = stats(&mut check);
    let (um, umin, umax) = stats(&mut runc);
    println!("| start to exit ({runs} runs each) | median | min | max |");
    println!("|---|---|---|---|");
    println!("| `ironpod run --rm demo true` | {rm:.0} ms | {rmin:.0} ms | {rmax:.0} ms |");
    println!("| `ironpod vm check` (bare VM boot + shutdown) | {cm:.0} ms | {cmin:.0} ms | {cmax:.0} ms |");
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
    std::thread::sleep(Duration::from_secs(3));
    let (mut vmm, mut mon, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for id in &ids {
        let out = ip(&["inspect", id]).output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let vp = v[0]["Pod"]["VmmPid"].as_i64().context("vmm pid")?;
        let mp = v[0]["Pod"]["MonitorPid"].as_i64().context("monitor pid")?;
        let (a, b) =
            (rss_kib(vp).context("vmm rss")? as f64, rss_kib(mp).context("monitor rss")? as f64);
        vmm.push(a / 1024.0);
        mon.push(b / 1024.0);
        total.push((a + b) / 1024.0);
    }
    for id in &ids {
        let _ = ip(&["rm", "-f", id]).output();
    }
    let (vm_, vmin, vmax) = stats(&mut vmm);
    let (mm, mmin, mmax) = stats(&mut mon);
    let (tm, tmin, tmax) = stats(&mut total);
    println!();
    println!("| idle pod memory ({pods} pods, 256 MiB guests) | median | min | max |");
    println!("|---|---|---|---|");
    println!("| ironpod-vmm RSS (VMM + guest memory touched) | {vm_:.1} MiB | {vmin:.1} MiB | {vmax:.1} MiB |");
    println!("| pod monitor RSS | {mm:.1} MiB | {mmin:.1} MiB | {mmax:.1} MiB |");
    println!("| total per pod | {tm:.1} MiB | {tmin:.1} MiB | {tmax:.1} MiB |");
    Ok(())
}
