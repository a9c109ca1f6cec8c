//! Benchmarks. `cargo xtask bench boot`: our VMM vs QEMU's microvm machine booting the same
//! kernel and initramfs, and vs Firecracker booting the same kernel and probe /init
//! (`bench_boot`), side by side in one run (inside the rig where KVM cannot run Linux).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{bench_boot, initramfs, kernel, rig, util};

/// Which benchmark.
#[derive(clap::Subcommand, Clone)]
pub enum Which {
    /// VMM start → agent ready (ours) vs VMM start → /init running (QEMU microvm); the same
    /// kernel and a probe /init under ours and Firecracker (start → exit, guest uptime).
    Boot {
        /// Runs of each.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// A Firecracker binary to compare with (built from its repository; README says
        /// how). Without it the Firecracker rows are left out.
        #[arg(long, value_name = "PATH")]
        firecracker: Option<std::path::PathBuf>,
    },
    /// `ironpod run --rm demo true` from the pod template vs cold vs bare VM boot vs runc;
    /// idle pod memory, templated and cold; with `--density`, how many idle pods fit.
    Run {
        /// Runs of each.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Idle pods measured, of each kind.
        #[arg(long, default_value_t = 20)]
        pods: usize,
        /// Also start idle pods until memory runs low, templated and cold (long).
        #[arg(long)]
        density: bool,
    },
    /// Through containerd's CRI: RunPodSandbox → first container running, ironpod vs runc.
    Cri {
        /// Pods of each handler.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// TCP throughput: host ↔ pod through a published port (proxy vs DNAT), pod ↔ pod,
    /// and runc containers over a bridge; then ironpod-vmm's virtio-net against QEMU's on
    /// one probe guest.
    Net {
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Only the VMM rows (ironpod-vmm vs QEMU on the probe guest).
        #[arg(long)]
        vmm_only: bool,
    },
    /// File I/O on a virtio-fs volume vs ext4 on virtio-blk in a pod; a volume's start-up
    /// cost; virtiofsd's memory.
    Volumes {
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The Docker API's cost: `docker run --rm` through the service vs `ironpod run --rm`;
    /// `GET /containers/json` latency with 20 containers.
    Api {
        /// Runs of each.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Kubernetes objects: a 10-replica Deployment applied → ready, and a killed pod's VMM
    /// → back, vs podman (the same containers, runc); a Service's request latency vs a
    /// pod's own address.
    Kube {
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A 6-step Dockerfile (FROM, COPY, three RUN, CMD) built cold and cached, ironpod
    /// (RUN in microVMs) vs podman (RUN in runc containers).
    Build {
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Pull of a ~200 MB 5-layer image from a local registry, ironpod vs skopeo; layer disks.
    Pull {
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

/// Builds what the benchmark needs and runs its driver where KVM can run Linux.
pub fn run(which: Which) -> Result<()> {
    let mut extra = Vec::new();
    let mut density = false;
    let (name, runs, pods) = match which {
        Which::Pull { runs } => return crate::bench_pull::run(runs),
        Which::Boot { runs, ref firecracker } => {
            if let Some(fc) = firecracker {
                let fc = std::fs::canonicalize(fc)
                    .with_context(|| format!("--firecracker {}", fc.display()))?;
                extra = vec!["--firecracker".to_string(), fc.to_string_lossy().into_owned()];
            }
            ("boot", runs, 0)
        }
        Which::Run { runs, pods, density: d } => {
            density = d;
            ("run", runs, pods)
        }
        Which::Cri { runs } => ("cri", runs, 0),
        Which::Net { runs, vmm_only } => {
            if vmm_only {
                extra = vec!["--vmm-only".to_string()];
            }
            ("net", runs, 0)
        }
        Which::Volumes { runs } => ("volumes", runs, 0),
        Which::Api { runs } => {
            crate::deps::ensure()?;
            ("api", runs, 0)
        }
        Which::Kube { runs } => {
            crate::deps::ensure()?;
            // The peer.
            crate::deps::ensure_packages(&["podman"])?;
            ("kube", runs, 0)
        }
        Which::Build { runs } => {
            // The peer.
            crate::deps::ensure_packages(&["podman"])?;
            ("build", runs, 0)
        }
    };
    kernel::build()?;
    initramfs::build()?;
    util::run(util::cargo().args(["build", "--release", "--workspace", "--bins", "-q"]))?;
    // The jailed VMM must be static (the workspace build linked it dynamically).
    util::build_static_vmm("release")?;
    if name == "boot" {
        crate::bench_boot::build_probe_initramfs()?;
    }
    if name == "net" {
        crate::bench_boot::build_init_initramfs("net-probe")?;
    }
    let me = std::env::current_exe()?;
    let args: Vec<String> = vec![
        me.to_string_lossy().into(),
        "bench-driver".into(),
        name.into(),
        "--runs".into(),
        runs.to_string(),
    ]
    .into_iter()
    .chain((name == "run").then(|| ["--pods".to_string(), pods.to_string()]).into_iter().flatten())
    .chain(density.then(|| "--density".to_string()))
    .chain(extra)
    .collect();
    match util::direct_kvm() {
        Ok(()) => util::run(Command::new(&args[0]).args(&args[1..])),
        Err(why) => {
            eprintln!("xtask bench: {why}: running inside the rig");
            let code = rig::run(&args, true, Duration::from_secs(3600), 4096)?;
            if code != 0 {
                bail!("benchmark failed in the rig (exit status {code})");
            }
            Ok(())
        }
    }
}

/// A throwaway ironpod state root (under /run, a real tmpfs in the rig too) with the demo
/// image imported as `demo`, for a benchmark driver.
pub struct BenchRoot {
    /// The state root.
    pub root: tempfile::TempDir,
    /// The demo image's rootfs tarball.
    pub tarball: std::path::PathBuf,
    ironpod: std::path::PathBuf,
}

impl BenchRoot {
    /// Makes the root and imports the demo image.
    pub fn new() -> Result<Self> {
        std::fs::create_dir_all("/run/ironpod-bench")?;
        let b = BenchRoot {
            root: tempfile::tempdir_in("/run/ironpod-bench")?,
            tarball: crate::demo_image::build_tarball()?,
            ironpod: util::target_dir().join("release/ironpod"),
        };
        b.ip(&["import", &b.tarball.to_string_lossy(), "demo"])?;
        Ok(b)
    }

    /// Runs `ironpod ARGS` on this root; its standard output, or why it failed.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let out =
            Command::new(&self.ironpod).arg("--root").arg(self.root.path()).args(args).output()?;
        if !out.status.success() {
            bail!("ironpod {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `ironpod system service` (the Docker API and the controllers) on this root,
    /// listening on `docker.sock` in it; returns once it accepts connections.
    pub fn service(&self) -> Result<BenchService> {
        let socket = self.root.path().join("docker.sock");
        let child = Command::new(&self.ironpod)
            .arg("--root")
            .arg(self.root.path())
            .args(["system", "service", "--socket"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("start the service")?;
        let svc = BenchService { child, socket };
        let t = std::time::Instant::now();
        while std::os::unix::net::UnixStream::connect(&svc.socket).is_err() {
            if t.elapsed() > std::time::Duration::from_secs(30) {
                bail!("the service did not listen");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(svc)
    }
}

/// A benchmark root's `ironpod system service`, stopped when dropped.
pub struct BenchService {
    child: std::process::Child,
    /// Its Docker API socket.
    pub socket: std::path::PathBuf,
}

impl Drop for BenchService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peer: Debian's podman on storage of its own under a benchmark root (runc, overlay,
/// cgroupfs: the rig has no systemd), the demo image imported as `localhost/demo:latest`.
pub struct Podman {
    root: std::path::PathBuf,
}

impl Podman {
    /// Sets podman's storage up under `b` and imports the demo image.
    pub fn new(b: &BenchRoot) -> Result<Self> {
        let podman = Podman { root: b.root.path().join("podman") };
        std::fs::create_dir_all(&podman.root)?;
        // Its containers' limits: podman's default (the hard limits) can exceed what a
        // machine's root may set.
        std::fs::write(
            podman.root.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n",
        )?;
        let tarball = b.tarball.to_string_lossy();
        let path = "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin";
        podman.ok(&["import", "--change", path, &tarball, "localhost/demo:latest"])?;
        Ok(podman)
    }

    /// `podman ARGS` on this storage.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.root.join("containers.conf"));
        c.arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"])
            .args(args);
        c
    }

    /// Runs `podman ARGS`, which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd(args).output().context("run podman (package podman)")?;
        if !out.status.success() {
            bail!("podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// (median, min, max).
pub fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (median, v[0], v[n - 1])
}

/// Time from starting QEMU to the agent's first console line (/init is running).
fn qemu_to_init(kernel: &str, initrd: &str) -> Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-M", "microvm,acpi=off", "-cpu", "host", "-smp", "1", "-m", "256"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio"])
        .args([
            "-kernel",
            kernel,
            "-initrd",
            initrd,
            "-append",
            "console=ttyS0 reboot=t panic=-1 quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start qemu")?;
    let out = child.stdout.take().context("qemu stdout")?;
    let mut found = None;
    for line in BufReader::new(out).split(b'\n') {
        if String::from_utf8_lossy(&line?).contains("ironpod-agent:") {
            found = Some(t.elapsed().as_secs_f64() * 1000.0);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    found.context("QEMU's guest never printed the agent's line")
}

/// The measuring part; runs where KVM is.
pub fn driver(which: Which) -> Result<()> {
    // The same preparation for every benchmark.
    crate::bench_prep::touch_rig_ram()?;
    let (runs, fc) = match which {
        Which::Boot { runs, firecracker } => (runs, firecracker),
        Which::Run { runs, pods, density } => return crate::bench_run::driver(runs, pods, density),
        Which::Cri { runs } => return crate::bench_run::cri_driver(runs),
        Which::Net { runs, vmm_only } => return crate::bench_net::driver(runs, vmm_only),
        Which::Volumes { runs } => return crate::bench_volumes::driver(runs),
        Which::Api { runs } => return crate::bench_api::driver(runs),
        Which::Kube { runs } => return crate::bench_kube::driver(runs),
        Which::Build { runs } => return crate::bench_build::driver(runs),
        Which::Pull { .. } => anyhow::bail!("the pull benchmark has no driver"),
    };
    let kernel = format!("{}/vmlinux", util::ASSET_DIR);
    let initrd = format!("{}/initramfs.img", util::ASSET_DIR);
    let ironpod = util::target_dir().join("release/ironpod");
    // Ready time and VMM overhead of one `ironpod vm check` (with `extra` arguments).
    let check = |extra: &[&str]| -> Result<(f64, Option<f64>)> {
        let out = util::output(Command::new(&ironpod).args(["vm", "check", "--json"]).args(extra))?;
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).context("ironpod vm check --json")?;
        Ok((v["ready_ms"].as_f64().context("ready_ms")?, v["vmm_overhead_kib"].as_f64()))
    };
    let (mut ours, mut loose, mut qemu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rss, mut loose_rss) = (Vec::new(), Vec::new());
    let vmm = util::target_dir().join("release/ironpod-vmm");
    let scratch = tempfile::tempdir()?;
    let (mut probe_ours, mut probe_fc) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // The probe boots, in alternating order.
        let mut pair = [None, None];
        for k in 0..2 {
            let fc_turn = (i + k) % 2 == 1;
            if fc_turn {
                if let Some(fc) = &fc {
                    pair[1] = Some(bench_boot::firecracker(fc, &kernel, scratch.path())?);
                }
            } else {
                pair[0] = Some(bench_boot::ours(&vmm, &kernel, scratch.path())?);
            }
        }
        eprintln!("run {}: probe: ours {:?}, firecracker {:?}", i + 1, pair[0], pair[1]);
        probe_ours.extend(pair[0]);
        probe_fc.extend(pair[1]);
        let (ms, kib) = check(&[])?;
        ours.push(ms);
        rss.extend(kib);
        let (ms, kib) = check(&["--unconfined"])?;
        loose.push(ms);
        loose_rss.extend(kib);
        qemu.push(qemu_to_init(&kernel, &initrd)?);
        eprintln!(
            "run {}: ours {:.0} ms (unconfined {:.0} ms), qemu {:.0} ms",
            i + 1,
            ours[i],
            loose[i],
            qemu[i]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (om, omin, omax) = stats(&mut ours);
    let (lm, lmin, lmax) = stats(&mut loose);
    let (qm, qmin, qmax) = stats(&mut qemu);
    println!("| boot ({runs} runs each, 1 vCPU, 256 MiB) | median | min | max |");
    println!("|---|---|---|---|");
    println!("| ironpod-vmm, jailed + seccomp: start → agent answers ping over vsock | {om:.0} ms | {omin:.0} ms | {omax:.0} ms |");
    println!("| ironpod-vmm unconfined (no jail, seccomp, cgroup): the same | {lm:.0} ms | {lmin:.0} ms | {lmax:.0} ms |");
    println!("| jailed + seccomp / unconfined | {:.3}× | | |", om / lm);
    println!("| qemu -M microvm,acpi=off: start → agent's first console line | {qm:.0} ms | {qmin:.0} ms | {qmax:.0} ms |");
    for (what, v) in [("jailed + seccomp", &mut rss), ("unconfined", &mut loose_rss)] {
        if !v.is_empty() {
            let (rm, rmin, rmax) = stats(v);
            println!(
                "| ironpod-vmm RSS without guest RAM, {what} | {rm:.0} KiB | {rmin:.0} KiB | {rmax:.0} KiB |"
            );
        }
    }
    bench_boot::table(runs, &probe_ours, &probe_fc);
    Ok(())
}
