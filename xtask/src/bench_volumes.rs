//! `cargo xtask bench volumes`: file I/O in a pod on a volume (virtio-fs, what ironpod
//! uses) and on an ext4 file system on a virtio-blk disk (the pod's writable disk: the
//! block-device way of giving a pod storage), in one run; the start-up cost of a volume;
//! virtiofsd's memory.
//!
//! Times are taken in the guest from /proc/uptime (busybox's `date` has no %N).

use anyhow::{Context, Result};

use crate::bench::{stats, BenchRoot};

/// Size of the sequential file.
const BIG_MIB: usize = 64;
/// Small files written, then listed and read.
const SMALL_FILES: usize = 500;

/// The guest-side measurement in directory `dir`: centiseconds for the sequential write
/// (with fsync), the sequential read (page cache dropped first), the small-file writes (and
/// sync), and listing + reading them.
fn script(dir: &str) -> String {
    format!(
        "cs() {{ read u _ < /proc/uptime; echo ${{u%.*}}${{u#*.}}; }}; d={dir}/bench; \
         mkdir -p $d; \
         s=$(cs); dd if=/dev/zero of=$d/big bs=1M count={BIG_MIB} conv=fsync 2>/dev/null; \
         e=$(cs); w=$((e-s)); \
         sync; echo 3 > /proc/sys/vm/drop_caches; \
         s=$(cs); dd if=$d/big of=/dev/null bs=1M 2>/dev/null; e=$(cs); r=$((e-s)); \
         s=$(cs); i=0; while [ $i -lt {SMALL_FILES} ]; do echo x > $d/f$i; i=$((i+1)); done; \
         sync; e=$(cs); c=$((e-s)); \
         sync; echo 3 > /proc/sys/vm/drop_caches; \
         s=$(cs); ls -l $d > /dev/null; cat $d/f* > /dev/null; e=$(cs); l=$((e-s)); \
         rm -rf $d; echo $w $r $c $l"
    )
}

/// Memory (KiB, PSS) of the processes whose command line contains `needle`, without the
/// guest memory they map (shared memory: counted with the VM).
fn own_pss_kib(needle: &str) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmd).contains(needle) {
            continue;
        }
        let rollup = std::fs::read_to_string(e.path().join("smaps_rollup")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            rollup
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        total += field("Pss:").saturating_sub(field("Pss_Shmem:"));
    }
    total
}

/// The measuring part; runs where KVM is.
pub fn driver(runs: usize) -> Result<()> {
    let bench = BenchRoot::new()?;
    let ip = |args: &[&str]| bench.ip(args);
    ip(&["volume", "create", "benchvol"])?;
    let id = ip(&[
        "run",
        "-d",
        "--privileged",
        "--network",
        "none",
        "--name",
        "b",
        "-v",
        "benchvol:/vol",
        "demo",
        "sleep",
        "3600",
    ])?
    .trim()
    .to_string();
    // [write, read, small writes, list+read] per target.
    let mut fs_runs: Vec<[f64; 4]> = Vec::new();
    let mut blk_runs: Vec<[f64; 4]> = Vec::new();
    for i in 0..runs {
        for (dir, out) in [("/vol", &mut fs_runs), ("/blk", &mut blk_runs)] {
            let text = ip(&["exec", "b", "sh", "-c", &script(dir)])?;
            let v: Vec<f64> = text
                .split_whitespace()
                .map(|x| x.parse::<f64>().map(|cs| cs * 10.0))
                .collect::<Result<_, _>>()
                .with_context(|| format!("bench output {text:?}"))?;
            let row: [f64; 4] = v.try_into().map_err(|v| anyhow::anyhow!("output {v:?}"))?;
            eprintln!("run {} {dir}: {row:?} ms", i + 1);
            out.push(row);
        }
    }
    let virtiofsd_kib = own_pss_kib(&format!("shares/{id}"));
    ip(&["rm", "-f", "b"])?;

    // Start-up: a pod with a volume against one without.
    let (mut plain, mut with_vol) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(5) {
        for (args, out) in [
            (&["run", "--rm", "--network", "none", "demo", "true"][..], &mut plain),
            (
                &["run", "--rm", "--network", "none", "-v", "benchvol:/vol", "demo", "true"][..],
                &mut with_vol,
            ),
        ] {
            let t = std::time::Instant::now();
            ip(args)?;
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }

    let col = |rows: &[[f64; 4]], k: usize| -> (f64, f64, f64) {
        let mut v: Vec<f64> = rows.iter().map(|r| r[k]).collect();
        stats(&mut v)
    };
    println!("| volumes: {runs} runs each (ms) | median | min | max |");
    println!("|---|---|---|---|");
    let names = [
        format!("write {BIG_MIB} MiB + fsync"),
        format!("read {BIG_MIB} MiB (guest cache dropped)"),
        format!("write {SMALL_FILES} small files + sync"),
        format!("list + read {SMALL_FILES} small files (guest cache dropped)"),
    ];
    for (k, name) in names.iter().enumerate() {
        for (what, rows) in [("virtio-fs volume", &fs_runs), ("ext4 on virtio-blk", &blk_runs)] {
            let (m, lo, hi) = col(rows, k);
            println!("| {name}: {what} | {m:.0} | {lo:.0} | {hi:.0} |");
        }
    }
    let (pm, plo, phi) = stats(&mut plain);
    let (vm, vlo, vhi) = stats(&mut with_vol);
    println!("| `run --rm --network none demo true` | {pm:.0} | {plo:.0} | {phi:.0} |");
    println!("| the same with `-v benchvol:/vol` | {vm:.0} | {vlo:.0} | {vhi:.0} |");
    println!(
        "| virtiofsd of a pod with a volume: PSS without the guest memory it maps | {virtiofsd_kib} KiB | | |"
    );
    Ok(())
}
