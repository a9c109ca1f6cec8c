//! `cargo xtask bench api`: what the Docker API costs — `docker run --rm demo true` through
//! `ironpod system service` against `ironpod run --rm demo true` on the same state root,
//! alternating; then the latency of `GET /containers/json?all=1` (what `docker ps -a` asks)
//! with 20 containers, over the socket and through the docker CLI.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::bench::{stats, BenchRoot};
use crate::bench_run::timed;
use crate::deps::DOCKER_CLI;
use crate::util;

/// One `GET` over the socket, the whole reply read (HTTP/1.0: the server closes).
fn get(socket: &Path, path: &str) -> Result<(f64, usize)> {
    let t = Instant::now();
    let mut s = UnixStream::connect(socket)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: d\r\n\r\n")?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !reply.starts_with(b"HTTP/1.0 200") && !reply.starts_with(b"HTTP/1.1 200") {
        bail!("GET {path}: {}", String::from_utf8_lossy(&reply[..reply.len().min(200)]));
    }
    Ok((ms, reply.len()))
}

fn row(what: &str, v: &mut [f64]) {
    let (median, min, max) = stats(v);
    println!("| {what} | {median:.0} | {min:.0} | {max:.0} |");
}

/// The measuring part; runs where KVM is.
pub fn driver(runs: usize) -> Result<()> {
    let b = BenchRoot::new()?;
    let svc = b.service()?;
    let socket = svc.socket.clone();
    let ironpod = util::target_dir().join("release/ironpod");
    let docker = |args: &[&str]| {
        let mut c = Command::new(DOCKER_CLI);
        c.arg("-H").arg(format!("unix://{}", socket.display())).args(args);
        c.env("DOCKER_CONFIG", b.root.path().join("docker-config"));
        c
    };
    let ip = |args: &[&str]| {
        let mut c = Command::new(&ironpod);
        c.arg("--root").arg(b.root.path()).args(args);
        c
    };
    // Warm-up: the pod template is made by the first run.
    timed(&mut ip(&["run", "--rm", "demo", "true"]))?;
    timed(&mut docker(&["run", "--rm", "demo", "true"]))?;
    let (mut api, mut cli, mut version) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        api.push(timed(&mut docker(&["run", "--rm", "demo", "true"]))?);
        cli.push(timed(&mut ip(&["run", "--rm", "demo", "true"]))?);
        version.push(timed(&mut docker(&["version"]))?);
    }
    println!("| what (ms) | median | min | max |");
    println!("|---|---|---|---|");
    row("`docker run --rm demo true` through the service", &mut api);
    row("`ironpod run --rm demo true`", &mut cli);
    row("`docker version` (the CLI's own start and one round trip)", &mut version);
    // 20 containers (records and disks; listing does not depend on running VMs).
    for i in 0..20 {
        let out = docker(&["create", "--name", &format!("c{i}"), "demo", "true"]).output()?;
        if !out.status.success() {
            bail!("docker create: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let (mut raw, mut ps) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..(runs * 5).max(20) {
        let (ms, n) = get(&socket, "/v1.41/containers/json?all=1")?;
        raw.push(ms);
        bytes = n;
    }
    for _ in 0..runs {
        ps.push(timed(&mut docker(&["ps", "-a"]))?);
    }
    row(&format!("`GET /containers/json?all=1`, 20 containers ({bytes} bytes)"), &mut raw);
    row("`docker ps -a`, 20 containers", &mut ps);
    Ok(())
}
