//! `cargo xtask bench net`'s VMM rows: ironpod-vmm and QEMU (`-M microvm`, its user-space
//! virtio-net, no vhost) boot the same kernel and the same `/init` (`net-probe`), each with
//! one virtio-net card on the same tap, alternating, in one run. The probe sends and then
//! receives a fixed amount over TCP to a server on the tap's host end; the host times both
//! directions. Nothing differs between the two but the VMM, so the figures say whether our
//! virtio-net or the machine is the bottleneck.
//!
//! The tap and the server live in a network namespace made here (10.0.2.0/24 never leaves
//! it).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::stats;
use crate::bench_boot::{init_initramfs, ConsoleRun};

/// The benchmark's network namespace and tap.
const NS: &str = "ipq";
const TAP: &str = "ipq0";
/// The tap's host end (the probe is 10.0.2.2).
const HOST: &str = "10.0.2.1";
/// MiB per transfer and rounds (one send, one receive each) per boot.
const MIB: usize = 32;
const ROUNDS: usize = 3;
/// Guest memory, MiB, for both VMMs.
const MEMORY_MIB: u64 = 256;

/// Throughput of one round, MiB/s: guest → host, host → guest.
type Round = (f64, f64);

/// The namespace with the tap; removed on drop.
struct Ns;

impl Ns {
    fn new() -> Result<Ns> {
        let _ = Command::new("ip").args(["netns", "del", NS]).status();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -e; ip netns add {NS}; ip -n {NS} link set lo up
                 ip -n {NS} tuntap add dev {TAP} mode tap vnet_hdr
                 ip -n {NS} addr add {HOST}/24 dev {TAP}; ip -n {NS} link set {TAP} up"
            ))
            .output()?;
        if !out.status.success() {
            bail!("set up namespace {NS}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Ns)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NS]).status();
    }
}

/// Accepts one connection, giving up when `stop` is set or after two minutes.
fn accept(l: &TcpListener, stop: &AtomicBool) -> Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match l.accept() {
            Ok((c, _)) => {
                c.set_nonblocking(false)?;
                c.set_read_timeout(Some(Duration::from_secs(120)))?;
                c.set_write_timeout(Some(Duration::from_secs(120)))?;
                return Ok(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    bail!("the probe never connected");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn mbps(bytes: usize, t: Instant) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64()
}

/// The host's side of one probe boot, on a thread inside the namespace: `ROUNDS` times,
/// reads a transfer to its end (guest → host), then writes one and waits for the probe to
/// close (host → guest). Sends `()` once it listens.
fn serve(stop: Arc<AtomicBool>, ready: mpsc::Sender<()>) -> JoinHandle<Result<Vec<Round>>> {
    std::thread::spawn(move || {
        let ns = File::open(format!("/run/netns/{NS}"))?;
        // SAFETY: setns(2) takes a descriptor we hold and a flag; it moves only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        let up = TcpListener::bind((HOST, 5001))?;
        let down = TcpListener::bind((HOST, 5002))?;
        up.set_nonblocking(true)?;
        down.set_nonblocking(true)?;
        let _ = ready.send(());
        let bytes = MIB << 20;
        let mut buf = vec![0u8; 1 << 20];
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            let mut c = accept(&up, &stop)?;
            let t = Instant::now();
            let mut got = 0;
            loop {
                let n = c.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let to_host = mbps(got, t);
            if got != bytes {
                bail!("received {got} bytes of {bytes}");
            }
            drop(c);
            let mut c = accept(&down, &stop)?;
            let t = Instant::now();
            for _ in 0..MIB {
                c.write_all(&buf)?;
            }
            c.shutdown(Shutdown::Write)?;
            while c.read(&mut buf)? > 0 {}
            rounds.push((to_host, mbps(bytes, t)));
        }
        Ok(rounds)
    })
}

/// Boots the probe with `cmd` (a VMM printing the guest's console on stdout) while the host
/// side serves it; the rounds' figures.
fn probe(mut cmd: Command, who: &str) -> Result<Vec<Round>> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let server = serve(stop.clone(), tx);
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        return match server.join() {
            Ok(r) => r.and_then(|_| bail!("the server did not start")),
            Err(_) => bail!("the server panicked"),
        };
    }
    let mut run = ConsoleRun::start(&mut cmd, who, 8192)?;
    let mut done = false;
    while let Some(line) = run.next_line() {
        done |= line?.trim() == "net-probe: done";
    }
    let ended = run.wait()?;
    stop.store(true, Ordering::Relaxed);
    let served = server.join().map_err(|_| anyhow::anyhow!("the server panicked"))?;
    if !done {
        let (status, err, console) = (ended.status, ended.stderr, ended.console);
        bail!("{who} ({status}): the probe did not finish: {err}\nconsole:\n{console}");
    }
    served.with_context(|| format!("{who}: host side"))
}

fn cmdline(reboot: char) -> String {
    format!("console=ttyS0 reboot={reboot} panic=1 quiet probe_rounds={ROUNDS} probe_mib={MIB}")
}

/// One probe boot under `ironpod-vmm` (unjailed, its seccomp filters on).
fn ours(vmm: &Path, kernel: &str, dir: &Path) -> Result<Vec<Round>> {
    let config = dir.join("ironpod-vmm-net.json");
    let v = serde_json::json!({
        "vcpus": 1,
        "memory_mib": MEMORY_MIB,
        "kernel": kernel,
        "initrd": init_initramfs("net-probe"),
        "cmdline": cmdline('k'),
        "net": [{ "tap": TAP, "netns": format!("/run/netns/{NS}") }],
    });
    std::fs::write(&config, v.to_string())?;
    let mut cmd = Command::new(vmm);
    cmd.arg("--config").arg(&config);
    probe(cmd, "ironpod-vmm")
}

/// One probe boot under QEMU's microvm, virtio-net in QEMU's own process (`vhost=off`), or
/// the host kernel's vhost-net with `vhost`.
fn qemu(kernel: &str, vhost: bool) -> Result<Vec<Round>> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NS, "qemu-system-x86_64"])
        .args(["-accel", "kvm", "-M", "microvm,acpi=off", "-cpu", "host", "-smp", "1"])
        .args(["-m", &MEMORY_MIB.to_string()])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio"])
        .args(["-kernel", kernel, "-initrd"])
        .arg(init_initramfs("net-probe"))
        .args(["-append", &cmdline('t')])
        .args([
            "-netdev",
            &format!(
                "tap,id=n0,ifname={TAP},script=no,downscript=no,vhost={}",
                if vhost { "on" } else { "off" }
            ),
            "-device",
            "virtio-net-device,netdev=n0",
        ]);
    probe(cmd, if vhost { "qemu (vhost-net)" } else { "qemu" })
}

/// Runs `runs` boots of each VMM, alternating (each boot `ROUNDS` rounds), and prints the
/// table.
pub fn driver(runs: usize, vmm: &Path, kernel: &str) -> Result<()> {
    let _ns = Ns::new()?;
    let dir = tempfile::tempdir()?;
    let vhost = Path::new("/dev/vhost-net").exists();
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        for k in 0..2 {
            if (i + k) % 2 == 0 {
                a.extend(ours(vmm, kernel, dir.path())?);
            } else {
                b.extend(qemu(kernel, false)?);
            }
        }
        if vhost {
            c.extend(qemu(kernel, true)?);
        }
        eprintln!("VMM rows, boot {}: ours {a:.0?}, qemu {b:.0?}, vhost {c:.0?}", i + 1);
    }
    println!();
    println!(
        "| TCP, the same probe /init and kernel, 1 vCPU, {MIB} MiB per transfer, {} transfers \
         each (MiB/s), median (min–max) | guest → host | host → guest |",
        runs * ROUNDS
    );
    println!("|---|---|---|");
    let col = |v: &[Round], f: fn(&Round) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        stats(&mut x)
    };
    let mut medians = Vec::new();
    for (who, v) in [
        ("ironpod-vmm virtio-net (user space, tap)", &a),
        ("QEMU microvm virtio-net (user space, tap, `vhost=off`)", &b),
        ("QEMU microvm vhost-net (in the host kernel; for scale)", &c),
    ] {
        if v.is_empty() {
            println!("| {who} | not measured: no /dev/vhost-net | |");
            continue;
        }
        let (um, ulo, uhi) = col(v, |r| r.0);
        let (dm, dlo, dhi) = col(v, |r| r.1);
        println!("| {who} | {um:.0} ({ulo:.0}–{uhi:.0}) | {dm:.0} ({dlo:.0}–{dhi:.0}) |");
        medians.push((um, dm));
    }
    if let [(ou, od), (qu, qd), ..] = medians[..] {
        println!("| ironpod-vmm / QEMU user space | {:.2}× | {:.2}× |", ou / qu, od / qd);
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
