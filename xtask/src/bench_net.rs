//! `cargo xtask bench net`: TCP throughput in one run — host ↔ pod through a published port
//! (ironpod's user-space proxy, and the same pod through nftables DNAT for comparison),
//! pod ↔ pod on one ironpod network, and the same with runc containers in network
//! namespaces joined by a bridge (no VM).
//!
//! All traffic stays on loopback and inside namespaces made here (the rig is a throwaway
//! machine: the DNAT comparison sets `route_localnet` there, never on a real host).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{stats, BenchRoot};
use crate::bench_run::runc_bundle_with;

/// Bytes moved per measurement.
const SIZE: usize = 32 << 20;
/// The pods' network.
const SUBNET: &str = "10.99.0.0/24";
/// The server pod's address (first lease).
const SERVER: &str = "10.99.0.2";
/// Host ports: proxy sink/source, DNAT sink/source.
const PORTS: [u16; 4] = [18001, 18002, 18011, 18012];
/// Sink (reads to EOF) and source (writes zeros forever) servers, one connection each and
/// started again. `dd` moves 64 KiB per call straight on the socket (`nc -e` hands it
/// over): busybox's `nc` relaying itself moves 1 KiB per call and measures only itself.
const SERVERS: &str =
    "(while true; do nc -l -p 5001 -e dd of=/dev/null bs=64k 2>/dev/null; done) & \
                       while true; do nc -l -p 5002 -e dd if=/dev/zero bs=64k 2>/dev/null; done";
/// A reader of SIZE bytes from a source server, printing its time in ns (from
/// /proc/uptime's centiseconds: busybox's `date` has no %N).
fn reader(host: &str) -> String {
    format!(
        "cs() {{ read u _ < /proc/uptime; echo ${{u%.*}}${{u#*.}}; }}; s=$(cs); \
         nc {host} 5002 -e dd of=/dev/null bs=64k count={} iflag=fullblock 2>/dev/null; \
         e=$(cs); echo $(( (e-s) * 10000000 ))",
        SIZE >> 16
    )
}

fn sh(script: &str) -> Result<String> {
    let out = Command::new("sh").arg("-c").arg(script).output().context("run sh")?;
    if !out.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

/// Host → server: writes SIZE bytes to a sink, until the far end has them all and closes.
/// The sink's `nc` starts again after each connection: one that comes before it listens is
/// reset at once, and tried again.
fn upload(port: u16) -> Result<f64> {
    let mut tries = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        match upload_n(port, SIZE) {
            Ok(v) => return Ok(v),
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("upload to 127.0.0.1:{port}: {e:#}; again");
            }
            Err(e) => return Err(e.context(format!("upload to 127.0.0.1:{port}"))),
        }
    }
}

fn upload_n(port: u16, size: usize) -> Result<f64> {
    let t = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    c.set_write_timeout(Some(Duration::from_secs(60)))?;
    c.set_read_timeout(Some(Duration::from_secs(60)))?;
    let buf = vec![0u8; (1 << 20).min(size)];
    for _ in 0..size / buf.len() {
        c.write_all(&buf)?;
    }
    c.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)?;
    Ok(mbps(size, t.elapsed().as_secs_f64()))
}

/// Server → host: reads SIZE bytes from a source.
fn download(port: u16) -> Result<f64> {
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    c.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < SIZE {
        let n = c.read(&mut buf)?;
        if n == 0 {
            bail!("the source closed after {got} bytes");
        }
        got += n;
    }
    Ok(mbps(SIZE, t.elapsed().as_secs_f64()))
}

/// Waits until a source server answers on `port`.
fn wait_source(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ok = TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut b = [0u8; 1];
            c.read_exact(&mut b)
        });
        if ok.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no source on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn median(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<(f64, f64, f64)> {
    let mut v = Vec::new();
    for _ in 0..runs {
        v.push(f()?);
        eprintln!("  {:.1} MiB/s", v[v.len() - 1]);
    }
    Ok(stats(&mut v))
}

/// Routes the host to the server pod through a veth of its own into the network's namespace
/// (a /32: egress already routes the whole subnet through the network's uplink) and DNATs two loopback ports to the pod (what a DNAT-based
/// publisher would set up), in L1 only.
fn dnat_setup(net_ns: &str) -> Result<()> {
    sh(&format!(
        "set -e
         ip link add ipb0 type veth peer name ipb1 netns {net_ns}
         ip addr add 10.254.0.1/30 dev ipb0; ip link set ipb0 up
         ip -n {net_ns} addr add 10.254.0.2/30 dev ipb1; ip -n {net_ns} link set ipb1 up
         ip netns exec {net_ns} sysctl -qw net.ipv4.ip_forward=1
         ip route add {SERVER}/32 via 10.254.0.2
         sysctl -qw net.ipv4.conf.all.route_localnet=1
         nft -f - <<EOF
table ip ipbench {{
  chain out {{
    type nat hook output priority -100;
    ip daddr 127.0.0.1 tcp dport {} dnat to {SERVER}:5001;
    ip daddr 127.0.0.1 tcp dport {} dnat to {SERVER}:5002;
  }}
  chain post {{
    type nat hook postrouting priority 100;
    oifname \"ipb0\" masquerade;
  }}
}}
EOF",
        PORTS[2], PORTS[3]
    ))?;
    Ok(())
}

fn dnat_teardown() {
    let _ = sh("nft delete table ip ipbench; ip link del ipb0; \
                sysctl -qw net.ipv4.conf.all.route_localnet=0");
}

/// The measuring part; runs where KVM can run Linux. The VMM rows come last (or alone,
/// with `vmm_only`).
pub fn driver(runs: usize, vmm_only: bool) -> Result<()> {
    if !vmm_only {
        pods(runs)?;
    }
    let kernel = format!("{}/vmlinux", crate::util::ASSET_DIR);
    let vmm = crate::util::target_dir().join("release/ironpod-vmm");
    crate::bench_net_vmm::driver(runs, &vmm, &kernel)
}

/// The pod rows.
fn pods(runs: usize) -> Result<()> {
    let bench = BenchRoot::new()?;
    let ip = |args: &[&str]| bench.ip(args);
    let (root, tarball) = (&bench.root, &bench.tarball);
    ip(&["network", "create", "--subnet", SUBNET, "benchnet"])?;
    let p = |host: u16, pod: u16| format!("127.0.0.1:{host}:{pod}");
    ip(&[
        "run",
        "-d",
        "--name",
        "server",
        "--network",
        "benchnet",
        "-p",
        &p(PORTS[0], 5001),
        "-p",
        &p(PORTS[1], 5002),
        "demo",
        "sh",
        "-c",
        SERVERS,
    ])?;
    ip(&["run", "-d", "--name", "client", "--network", "benchnet", "demo", "sleep", "3600"])?;
    eprintln!("pods started");
    wait_source(PORTS[1])?;
    eprintln!("source answers");
    let net: serde_json::Value = serde_json::from_str(&ip(&["network", "inspect", "benchnet"])?)?;
    let net_ns = net[0]["Namespace"].as_str().context("network namespace")?.to_string();

    let proxy_up = median(runs, || upload(PORTS[0]))?;
    let proxy_down = median(runs, || {
        wait_source(PORTS[1])?;
        download(PORTS[1]).context("proxy download")
    })?;
    eprintln!("proxy: up {:.0} MiB/s, down {:.0} MiB/s", proxy_up.0, proxy_down.0);
    dnat_setup(&net_ns)?;
    let dnat = (|| -> Result<_> {
        let up = median(runs, || upload(PORTS[2]))?;
        let down = median(runs, || {
            wait_source(PORTS[3])?;
            download(PORTS[3]).context("DNAT download")
        })?;
        Ok((up, down))
    })();
    dnat_teardown();
    let (dnat_up, dnat_down) = dnat?;
    eprintln!("dnat: up {:.0} MiB/s, down {:.0} MiB/s", dnat_up.0, dnat_down.0);
    let pod_pod = median(runs, || {
        let ns: f64 = ip(&["exec", "client", "sh", "-c", &reader(SERVER)])?.trim().parse()?;
        Ok(mbps(SIZE, ns / 1e9))
    })?;
    eprintln!("pod to pod: {:.0} MiB/s", pod_pod.0);
    let _ = ip(&["rm", "-f", "server", "client"]);
    let _ = ip(&["network", "rm", "benchnet"]);

    // runc: two containers in namespaces on a bridge (the same topology, no VM).
    let work = root.path().join("runc");
    let r = (|| -> Result<(f64, f64, f64)> {
        sh("set -e
            for n in ipr-br ipr-a ipr-b; do ip netns add $n; done
            ip -n ipr-br link add br0 type bridge; ip -n ipr-br link set br0 up
            for x in a b; do
              ip link add v$x type veth peer name eth0 netns ipr-$x
              ip link set v$x netns ipr-br
              ip -n ipr-br link set v$x master br0; ip -n ipr-br link set v$x up
              ip -n ipr-$x link set lo up; ip -n ipr-$x link set eth0 up
            done
            ip -n ipr-a addr add 10.98.0.2/24 dev eth0
            ip -n ipr-b addr add 10.98.0.3/24 dev eth0")?;
        runc_bundle_with(&work.join("a"), tarball, &["sh", "-c", SERVERS], Some("ipr-a"))?;
        // The reader is a container of its own per run (`runc exec` fails in the rig).
        let read = reader("10.98.0.2");
        runc_bundle_with(&work.join("b"), tarball, &["sh", "-c", &read], Some("ipr-b"))?;
        // Detached: its stdio must not be our pipes (nothing would end them).
        let st = Command::new("runc")
            .args(["run", "-d", "--bundle"])
            .arg(work.join("a"))
            .arg("ipr-a")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if !st.success() {
            bail!("runc run ipr-a: {st}");
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut n = 0;
        median(runs, || {
            n += 1;
            let out = Command::new("runc")
                .args(["run", "--bundle"])
                .arg(work.join("b"))
                .arg(format!("ipr-b{n}"))
                .stdin(std::process::Stdio::null())
                .output()?;
            let ns: f64 =
                String::from_utf8_lossy(&out.stdout).trim().parse().with_context(|| {
                    format!("runc run: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr))
                })?;
            Ok(mbps(SIZE, ns / 1e9))
        })
    })();
    let _ = sh("runc kill ipr-a KILL; runc delete -f ipr-a; \
                for n in ipr-br ipr-a ipr-b; do ip netns del $n; done");
    let runc = r?;
    eprintln!("runc pod to pod: {:.0} MiB/s", runc.0);

    println!("| TCP, {} MiB per run, {runs} runs each (MiB/s) | median | min | max |", SIZE >> 20);
    println!("|---|---|---|---|");
    let row = |name: &str, (m, lo, hi): (f64, f64, f64)| {
        println!("| {name} | {m:.0} | {lo:.0} | {hi:.0} |");
    };
    row("host → pod, published port (ironpod proxy)", proxy_up);
    row("pod → host, published port (ironpod proxy)", proxy_down);
    row("host → pod, nftables DNAT (comparison)", dnat_up);
    row("pod → host, nftables DNAT (comparison)", dnat_down);
    row("pod → pod, one ironpod network", pod_pod);
    row("runc: container → container over a bridge", runc);
    Ok(())
}
