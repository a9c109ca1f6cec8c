//! What every benchmark driver does before and between its timed steps, so that no step
//! pays for another's leftovers: the rig's RAM touched once before any driver starts, and
//! a settle between steps (the pods of the step before gone, the machine idle).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// In the rig, writes and frees most of L1's free RAM once, before any benchmark driver
/// runs. Under QEMU's emulation the first write to each page of the emulated machine's RAM
/// is slow (measured: after this, `run` is ~0.3 s and `vm check` ~0.15 s faster); real RAM
/// has no such cost, and without this whichever step happens to land on never-touched L1
/// memory pays it. Every driver gets it (`bench::driver`), so all benchmarks are prepared
/// alike; outside the rig it does nothing.
pub fn touch_rig_ram() -> Result<()> {
    if std::env::var_os("IRONPOD_RIG").is_none() {
        return Ok(());
    }
    let mib = (mem_available_mib()? as u64).saturating_sub(768);
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

/// The host's MemAvailable, MiB.
pub fn mem_available_mib() -> Result<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("MemAvailable in /proc/meminfo")?;
    Ok(kib / 1024.0)
}

/// Processes of ironpod's that belong to a pod (a monitor, a VMM, a volume server).
fn pod_processes() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|c| matches!(c.trim(), "ironpod-monitor" | "ironpod-vmm" | "virtiofsd"))
        .count()
}

/// (busy, total) jiffies of all CPUs so far.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Waits, untimed, until the step before has ended everywhere: no pod process of this host
/// is left (`ironpod run --rm` returns before its monitor has taken the pod's network
/// down) and the CPUs have been at least 90 % idle for 200 ms (the kernel destroys network
/// namespaces and frees a VM's memory in the background). Gives up after 30 s, saying so.
pub fn settle() {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pod_processes() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    loop {
        let a = cpu_jiffies();
        std::thread::sleep(Duration::from_millis(200));
        let b = cpu_jiffies();
        let idle = match (a, b) {
            (Some((busy_a, all_a)), Some((busy_b, all_b))) if all_b > all_a => {
                (busy_b - busy_a) as f64 / (all_b - all_a) as f64 <= 0.1
            }
            _ => true,
        };
        if idle {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("bench: the machine did not settle within 30 s; going on");
            return;
        }
    }
}
