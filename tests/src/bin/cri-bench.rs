//! `cargo xtask bench cri`'s measuring part: through containerd's CRI plugin, the time from
//! RunPodSandbox to the pod's first container running, with the `ironpod` runtime handler
//! from the pod template (the default) and booting (`org.ironpod.template=false`), and with
//! `runc`, interleaved in one run; then the idle memory of templated and booted pods.
//! Prints Markdown tables.

use std::time::Instant;

use ironpod_tests::containerd::{Containerd, DEMO_IMAGE};
use ironpod_tests::cri::{container_config, pod_config, Cri};

/// How a pod is started: its row, the runtime handler and whether an ironpod pod boots.
#[derive(Clone, Copy)]
struct Way {
    row: &'static str,
    handler: &'static str,
    cold: bool,
}

const WAYS: [Way; 3] = [
    Way { row: "ironpod, from the template", handler: "ironpod", cold: false },
    Way { row: "ironpod, booted (`org.ironpod.template=false`)", handler: "ironpod", cold: true },
    Way { row: "runc", handler: "runc", cold: false },
];

/// The sandbox configuration of pod `name` started `way`.
fn config(c: &Containerd, name: &str, way: Way) -> k8s_cri::v1::PodSandboxConfig {
    let logs = c.dir().join("logs").join(name);
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut cfg = pod_config(name, &logs);
    if way.cold {
        cfg.annotations.insert("org.ironpod.template".into(), "false".into());
    }
    cfg
}

/// (RunPodSandbox ms, RunPodSandbox → container running ms) of one pod.
fn one_pod(cri: &mut Cri, c: &Containerd, name: &str, way: Way) -> (f64, f64) {
    let handler = way.handler;
    let pod_cfg = config(c, name, way);
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

/// Idle memory of `n` ironpod pods started `way` (a sleeping container each, 10 s idle):
/// per pod (VMM PSS, shim PSS) in MiB.
fn idle_pods(cri: &mut Cri, c: &Containerd, n: usize, way: Way) -> Vec<(f64, f64)> {
    let mut pods = Vec::new();
    for i in 0..n {
        let name = format!("idle-{}-{i}", if way.cold { "cold" } else { "tpl" });
        let pod_cfg = config(c, &name, way);
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
    // One warm-up pod each (ironpod makes the template and the layer disks once, runc's
    // snapshots warm up).
    for (k, way) in WAYS.iter().enumerate() {
        one_pod(&mut cri, &c, &format!("warm-{k}"), *way);
    }
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); WAYS.len()];
    for i in 0..runs {
        // Each run in another order (a rotation).
        for k in 0..WAYS.len() {
            let k = (i + k) % WAYS.len();
            let way = WAYS[k];
            let (sandbox, running) = one_pod(&mut cri, &c, &format!("p{i}-{k}"), way);
            eprintln!(
                "cri-bench: run {i} {}: sandbox {sandbox:.0} ms, running {running:.0} ms",
                way.row
            );
            results[k].0.push(sandbox);
            results[k].1.push(running);
        }
    }
    println!("\n{runs} runs each, interleaved; median (min–max) in ms\n");
    println!("| pod | RunPodSandbox | RunPodSandbox → container running |");
    println!("|---|---|---|");
    for (way, (sandbox, running)) in WAYS.iter().zip(results.iter_mut()) {
        let (sm, smin, smax) = stats(sandbox);
        let (rm, rmin, rmax) = stats(running);
        println!("| {} | {sm:.0} ({smin:.0}–{smax:.0}) | {rm:.0} ({rmin:.0}–{rmax:.0}) |", way.row);
    }
    for way in &WAYS[..2] {
        let idle = idle_pods(&mut cri, &c, 5, *way);
        let mut vmm: Vec<f64> = idle.iter().map(|p| p.0).collect();
        let mut shim: Vec<f64> = idle.iter().map(|p| p.1).collect();
        let mut total: Vec<f64> = idle.iter().map(|p| p.0 + p.1).collect();
        println!(
            "\n{} idle pods, {} (one sleeping container each, 10 s idle), PSS in MiB\n",
            idle.len(),
            way.row
        );
        println!("| | median | min | max |");
        println!("|---|---|---|---|");
        for (what, v) in [("VMM (+ guest)", &mut vmm), ("shim", &mut shim), ("per pod", &mut total)]
        {
            let (m, lo, hi) = stats(v);
            println!("| {what} | {m:.1} | {lo:.1} | {hi:.1} |");
        }
    }
}
