//! `cargo xtask bench kube`: the Kubernetes front end on one host. Time from `kube apply`
//! of a 10-replica Deployment (behind a Service) to 10 pods ready, against podman starting
//! the same 10 containers (`podman run -d --restart always`, all at once, runc; Debian's
//! podman 4.3 cannot run `kube play`'s pods where the benchmark runs — its pods' infra
//! containers need systemd's cgroups on a cgroup v2 host, and the rig has no systemd);
//! time from `kill -9` of one pod's VMM to the pod ready and back in the Service's
//! endpoints, against podman restarting a killed container (its restart policy); and the
//! latency of one HTTP request to the Service's cluster address against the same request
//! to a pod's own address, from the namespace's network.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{stats, BenchRoot, Podman};
use crate::util;

const REPLICAS: usize = 10;

/// The container every pod runs: a web server answering with its host name.
const WEB_CMD: &str =
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

/// The Deployment's container (`WEB_CMD` is replaced).
const CONTAINER: &str = r#"
      - name: web
        image: demo
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "WEB_CMD"]
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        resources: {limits: {memory: 128Mi}}
"#;

fn deployment() -> String {
    let container = CONTAINER.replace("WEB_CMD", WEB_CMD);
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {REPLICAS}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:{container}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
    )
}

fn json(b: &BenchRoot, args: &[&str]) -> Result<serde_json::Value> {
    let mut a = vec!["kube", "get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&b.ip(&a)?)?)
}

fn ready_pods(b: &BenchRoot) -> Result<Vec<serde_json::Value>> {
    let list = json(b, &["pods", "-l", "app=web"])?;
    let ready = |p: &serde_json::Value| {
        p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            && p["metadata"]["deletionTimestamp"].is_null()
    };
    Ok(list["items"].as_array().cloned().unwrap_or_default().into_iter().filter(ready).collect())
}

fn endpoints(b: &BenchRoot) -> Result<usize> {
    let e = json(b, &["endpoints", "web"])?;
    let subsets = e["subsets"].as_array().cloned().unwrap_or_default();
    Ok(subsets.iter().map(|s| s["addresses"].as_array().map_or(0, |a| a.len())).sum())
}

fn until(what: &str, limit: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let t = Instant::now();
    while !ok()? {
        if t.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The VMM of a kube pod's VM, as its kubelet records it in kubelet.json.
fn vmm_of(root: &Path, uid: &str) -> Result<i32> {
    let info = root.join("kube/pods").join(uid).join("kubelet.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&info)?)?;
    match v["vmm_pid"].as_i64() {
        Some(pid) => Ok(pid as i32),
        None => bail!("pod {uid} has no VM running ({})", info.display()),
    }
}

/// One HTTP/1.0 GET of `/` at `addr`, the whole reply read; milliseconds.
fn request(addr: &str) -> Result<f64> {
    let t = Instant::now();
    let to: std::net::SocketAddr = addr.parse().with_context(|| addr.to_string())?;
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let status = reply.split(|&b| b == b'\n').next().unwrap_or_default();
    if !status.starts_with(b"HTTP/1.") || !status.windows(5).any(|w| w == b" 200 ") {
        bail!("GET {addr}: {}", String::from_utf8_lossy(&reply));
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Request latencies to the cluster address and to a pod's address, alternating, from a
/// thread inside the network namespace `ns`.
fn latencies(ns: &str, service: String, pod: String, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).with_context(|| ns.to_string())?;
    std::thread::spawn(move || -> Result<(Vec<f64>, Vec<f64>)> {
        // SAFETY: f is an open namespace file; setns moves only this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        // Warm-up: connection tracking and ARP entries.
        for _ in 0..10 {
            request(&service)?;
            request(&pod)?;
        }
        let (mut svc, mut direct) = (Vec::new(), Vec::new());
        for _ in 0..n {
            svc.push(request(&service)?);
            direct.push(request(&pod)?);
        }
        Ok((svc, direct))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the request thread panicked"))?
}

fn row(what: &str, v: &mut [f64]) {
    let (median, min, max) = stats(v);
    println!("| {what} | {median:.1} | {min:.1} | {max:.1} |");
}

/// The peer's web containers: how many run and accept connections on port 8080 (what
/// ironpod's readiness probe asks of a pod).
fn podman_ready(podman: &Podman) -> Result<usize> {
    let out = podman.ok(&["ps", "--filter", "status=running", "--format", "{{.Names}}"])?;
    let mut n = 0;
    for name in out.lines().filter(|n| n.starts_with("web-") && n.ends_with("-web")) {
        let ip = podman.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name])?;
        let Ok(to) = format!("{}:8080", ip.trim()).parse::<std::net::SocketAddr>() else {
            continue;
        };
        if TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// The peer's web containers, removed when dropped (also when a run fails half-way).
struct WebContainers<'a>(&'a Podman);

impl WebContainers<'_> {
    fn remove_all(&self) -> Result<()> {
        let names: Vec<String> = (0..REPLICAS).map(|i| format!("web-{i}-web")).collect();
        let mut rm = vec!["rm", "-f", "-i", "-t", "0"];
        rm.extend(names.iter().map(String::as_str));
        self.0.ok(&rm).map(drop)
    }
}

impl Drop for WebContainers<'_> {
    fn drop(&mut self) {
        let _ = self.remove_all();
    }
}

/// The measuring part; runs where KVM is.
pub fn driver(runs: usize) -> Result<()> {
    let b = BenchRoot::new()?;
    let _svc = b.service()?;
    let manifest = b.root.path().join("web.yaml");
    std::fs::write(&manifest, deployment())?;
    let manifest = manifest.to_string_lossy().into_owned();
    let podman = Podman::new(&b)?;
    let web = WebContainers(&podman);

    let (mut up, mut peer_up, mut back, mut peer_back) = (vec![], vec![], vec![], vec![]);
    let mut latency = None;
    for run in 0..runs {
        // ironpod: apply → 10 ready.
        let t = Instant::now();
        b.ip(&["kube", "apply", "-f", &manifest])?;
        until("10 ready pods", Duration::from_secs(600), || Ok(ready_pods(&b)?.len() == REPLICAS))?;
        up.push(t.elapsed().as_secs_f64());
        until("10 endpoints", Duration::from_secs(60), || Ok(endpoints(&b)? == REPLICAS))?;
        if run == 0 {
            let svc = json(&b, &["service", "web"])?;
            let ip = svc["spec"]["clusterIP"].as_str().context("no cluster IP")?.to_string();
            let pod =
                ready_pods(&b)?[0]["status"]["podIP"].as_str().context("no pod IP")?.to_string();
            let net: serde_json::Value =
                serde_json::from_str(&b.ip(&["network", "inspect", "kube-default"])?)?;
            let ns = net[0]["Namespace"].as_str().context("no namespace")?.to_string();
            latency = Some(latencies(&ns, format!("{ip}:80"), format!("{pod}:8080"), 200)?);
        }
        // One VMM killed → that pod ready and in the endpoints again.
        let victim = ready_pods(&b)?[0].clone();
        let name = victim["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let uid = victim["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let restarts =
            |p: &serde_json::Value| p["status"]["containerStatuses"][0]["restartCount"].as_i64();
        let before = restarts(&victim);
        let pid = vmm_of(b.root.path(), &uid)?;
        let t = Instant::now();
        util::run(Command::new("kill").args(["-9", &pid.to_string()]))?;
        until("the killed pod back", Duration::from_secs(120), || {
            let ready = ready_pods(&b)?;
            let again = ready
                .iter()
                .any(|p| p["metadata"]["name"] == name.as_str() && restarts(p) != before);
            Ok(again && ready.len() == REPLICAS && endpoints(&b)? == REPLICAS)
        })?;
        back.push(t.elapsed().as_secs_f64());
        b.ip(&["kube", "delete", "-f", &manifest])?;
        until("the pods gone", Duration::from_secs(300), || {
            Ok(json(&b, &["pods", "-l", "app=web"])?["items"]
                .as_array()
                .is_none_or(|a| a.is_empty()))
        })?;

        // podman: the same containers, started at once → 10 running.
        let t = Instant::now();
        let starts: Vec<Child> = (0..REPLICAS)
            .map(|i| {
                podman
                    .cmd(&["run", "-d", "--name", &format!("web-{i}-web"), "--restart", "always"])
                    .args(["--memory", "128m", "localhost/demo:latest", "sh", "-c", WEB_CMD])
                    .stdout(Stdio::null())
                    .spawn()
                    .context("run podman (package podman)")
            })
            .collect::<Result<_>>()?;
        for mut c in starts {
            if !c.wait()?.success() {
                bail!("podman run failed");
            }
        }
        until("10 ready podman containers", Duration::from_secs(600), || {
            Ok(podman_ready(&podman)? == REPLICAS)
        })?;
        peer_up.push(t.elapsed().as_secs_f64());
        let pid = podman.ok(&["inspect", "-f", "{{.State.Pid}}", "web-0-web"])?;
        let started = podman.ok(&["inspect", "-f", "{{.State.StartedAt}}", "web-0-web"])?;
        let t = Instant::now();
        util::run(Command::new("kill").args(["-9", pid.trim()]))?;
        until("the killed podman container back", Duration::from_secs(120), || {
            let now = podman.ok(&["inspect", "-f", "{{.State.StartedAt}}", "web-0-web"])?;
            Ok(now != started && podman_ready(&podman)? == REPLICAS)
        })?;
        peer_back.push(t.elapsed().as_secs_f64());
        web.remove_all()?;
    }
    println!("| what (s) | median | min | max |");
    println!("|---|---|---|---|");
    row(&format!("ironpod: `kube apply` of a {REPLICAS}-replica Deployment → all ready"), &mut up);
    row(
        &format!("podman 4.3: {REPLICAS} × `podman run -d` at once → all serving (runc)"),
        &mut peer_up,
    );
    row("ironpod: `kill -9` of a pod's VMM → pod ready and in the endpoints", &mut back);
    row("podman 4.3: `kill -9` of a container → serving again (restart policy)", &mut peer_back);
    if let Some((mut svc, mut direct)) = latency {
        println!();
        println!("| one HTTP request from the namespace's network (ms) | median | min | max |");
        println!("|---|---|---|---|");
        row("to the Service's cluster address (nftables DNAT)", &mut svc);
        row("to a pod's own address", &mut direct);
    }
    Ok(())
}
