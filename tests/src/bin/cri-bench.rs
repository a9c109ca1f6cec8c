//! `cargo xtask bench cri`'s measuring part: through containerd's CRI plugin, the time from
//! RunPodSandbox to the pod's first container running, with the `ironpod` runtime handler
//! and with `runc`, interleaved in one run. Prints a Markdown table.

use std::time::Instant;

use ironpod_tests::containerd::{Containerd, DEMO_IMAGE};
use ironpod_tests::cri::{container_config, pod_config, Cri};

/// (RunPodSandbox ms, RunPodSandbox → container running ms) of one pod.
fn one_pod(cri: &mut Cri, c: &Containerd, name: &str, handler: &str) -> (f64, f64) {
    let logs = c.dir().join("logs").join(name);
    std::fs::create_dir_all(&logs).expect("log dir");
    let pod_cfg = pod_config(name, &logs);
    let ctr_cfg = container_config("main", DEMO_IMAGE, &["sleep", "3600"]);
    let t = Instant::now();
    let pod = cri
        .run_pod(&pod_cfg, handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox ({handler}): {e}\n{}", c.log()));
    let sandbox = t.elapsed().as_secs_f64() * 1000.0;
    let id = cri.create_container(&pod, &ctr_cfg, &pod_cfg).expect("CreateContainer");
    cri.start_container(&id).expect("StartContainer");
    let running = t.elapsed().as_secs_f64() * 1000.0;
    cri.stop_pod(&pod).expect("StopPodSandbox");
    cri.remove_pod(&pod).expect("RemovePodSandbox");
    (sandbox, running)
}

/// Proportional set size of a process, in KiB.
fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The pid of the process whose command line contains `needle`.
fn pid_with(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmd).replace('\0', " ").contains(needle).then_some(pid)
    })
}

/// Idle memory of `n` ironpod pods (a sleeping container each, 10 s idle): per pod
/// (VMM PSS, shim PSS) in MiB.
fn idle_pods(cri: &mut Cri, c: &Containerd, n: usize) -> Vec<(f64, f64)> {
    let mut pods = Vec::new();
    for i in 0..n {
        let name = format!("idle-{i}");
        let logs = c.dir().join("logs").join(&name);
        std::fs::create_dir_all(&logs).expect("log dir");
        let pod_cfg = pod_config(&name, &logs);
        let pod = cri.run_pod(&pod_cfg, "ironpod").expect("RunPodSandbox");
        let ctr_cfg = container_config("main", DEMO_IMAGE, &["sleep", "3600"]);
        let id = cri.create_container(&pod, &ctr_cfg, &pod_cfg).expect("CreateContainer");
        cri.start_container(&id).expect("StartContainer");
        pods.push(pod);
    }
    std::thread::sleep(std::time::Duration::from_secs(10));
    let tasks = c.tasks();
    let mut out = Vec::new();
    for pod in &pods {
        let vmm = tasks.iter().find(|t| &t.0 == pod).map(|t| t.1).expect("sandbox task");
        let shim = pid_with(&format!("-id {pod} ")).expect("the pod's shim");
        let mib = |kib: Option<u64>| kib.expect("smaps_rollup") as f64 / 1024.0;
        out.push((mib(pss_kib(vmm)), mib(pss_kib(shim))));
    }
    for pod in &pods {
        cri.stop_pod(pod).expect("StopPodSandbox");
        cri.remove_pod(pod).expect("RemovePodSandbox");
    }
    out
}

/// (median, min, max).
fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (median, v[0], v[n - 1])
}

fn main() {
    let mut runs = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or_else(
                    || {
                        eprintln!("cri-bench: --runs needs a positive number");
                        std::process::exit(2)
                    },
                )
            }
            other => {
                eprintln!("cri-bench: unknown argument {other:?} (usage: cri-bench [--runs N])");
                std::process::exit(2);
            }
        }
    }
    let c = Containerd::start_cri();
    let mut cri = Cri::connect(&c.socket());
    let handlers = ["ironpod", "runc"];
    // One warm-up pod each (ironpod builds the layer disks once, runc's snapshots warm up).
    for h in handlers {
        one_pod(&mut cri, &c, &format!("warm-{h}"), h);
    }
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); handlers.len()];
    for i in 0..runs {
        for (h, r) in handlers.iter().zip(results.iter_mut()) {
            let (sandbox, running) = one_pod(&mut cri, &c, &format!("p{i}-{h}"), h);
            eprintln!("cri-bench: run {i} {h}: sandbox {sandbox:.0} ms, running {running:.0} ms");
            r.0.push(sandbox);
            r.1.push(running);
        }
    }
    println!("\n{runs} runs each, interleaved; median (min–max) in ms\n");
    println!("| handler | RunPodSandbox | RunPodSandbox → container running |");
    println!("|---|---|---|");
    for (h, (sandbox, running)) in handlers.iter().zip(results.iter_mut()) {
        let (sm, smin, smax) = stats(sandbox);
        let (rm, rmin, rmax) = stats(running);
        println!("| {h} | {sm:.0} ({smin:.0}–{smax:.0}) | {rm:.0} ({rmin:.0}–{rmax:.0}) |");
    }
    let idle = idle_pods(&mut cri, &c, 5);
    let mut vmm: Vec<f64> = idle.iter().map(|p| p.0).collect();
    let mut shim: Vec<f64> = idle.iter().map(|p| p.1).collect();
    let mut total: Vec<f64> = idle.iter().map(|p| p.0 + p.1).collect();
    println!(
        "\n{} idle ironpod pods (one sleeping container each, 10 s idle), PSS in MiB\n",
        idle.len()
    );
    println!("| | median | min | max |");
    println!("|---|---|---|---|");
    for (what, v) in [("VMM (+ guest)", &mut vmm), ("shim", &mut shim), ("per pod", &mut total)] {
        let (m, lo, hi) = stats(v);
        println!("| {what} | {m:.1} | {lo:.1} | {hi:.1} |");
    }
}
