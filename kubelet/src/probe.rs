//! Running one probe of a container, as the kubelet does: a command in the container (exit
//! 0 passes), an HTTP GET to the pod (a status from 200 to 399 passes) or a TCP connection
//! to it (connecting passes). Network probes connect from the pod network's namespace, as a
//! node reaches its pods.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironpod_kube::pod::{Container, HttpGetAction, Probe};
use ironpod_kube::quantity::IntOrString;

/// The three kinds of probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Restarts the container when it fails.
    Liveness,
    /// Decides the container's readiness.
    Readiness,
    /// Holds the others back until it passes.
    Startup,
}

impl ProbeKind {
    /// Its name in events (`Liveness probe failed: …`).
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// A probe's timing with Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Before the first probe.
    pub initial_delay: Duration,
    /// Between probes.
    pub period: Duration,
    /// Longest a probe may take.
    pub timeout: Duration,
    /// Passes in a row that make it pass.
    pub success_threshold: u32,
    /// Failures in a row that make it fail.
    pub failure_threshold: u32,
}

impl Timing {
    /// The timing of `p`.
    pub fn of(p: &Probe) -> Timing {
        let secs = |v: Option<i64>, d: i64| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        Timing {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: p.success_threshold.unwrap_or(1).clamp(1, 1000) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).clamp(1, 1000) as u32,
        }
    }
}

/// Where a container is, for its probes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The VM's vsock socket.
    pub uds: PathBuf,
    /// The container's id in the guest.
    pub container_id: String,
    /// The process its exec probes are made like.
    pub process: oci_spec::runtime::Process,
    /// The pod's address.
    pub pod_ip: Option<Ipv4Addr>,
    /// The network namespace network probes connect from.
    pub net_ns: Option<PathBuf>,
}

/// Runs `probe` once: `Ok` when it passes, else why not.
pub fn run(probe: &Probe, c: &Container, t: &Target) -> Result<(), String> {
    let timeout = Timing::of(probe).timeout;
    if let Some(e) = &probe.exec {
        let r =
            ironpod_pods::health::probe(&t.uds, &t.container_id, &t.process, &e.command, timeout);
        return match r.exit_code {
            0 => Ok(()),
            -1 => Err(r.output),
            code => {
                Err(format!("command {:?} exited with {code}: {}", e.command, r.output.trim_end()))
            }
        };
    }
    let (port, host) = match (&probe.http_get, &probe.tcp_socket) {
        (Some(h), _) => (&h.port, h.host.as_deref()),
        (_, Some(s)) => (&s.port, s.host.as_deref()),
        _ => return Err("the probe has no handler".into()),
    };
    let port = port_number(port, c)?;
    let ip = match host {
        Some(h) => {
            h.parse::<Ipv4Addr>().map_err(|_| format!("probe host {h:?} is not an IPv4 address"))?
        }
        None => t.pod_ip.ok_or("the pod has no address")?,
    };
    let addr = SocketAddr::from((ip, port));
    let http = probe.http_get.clone();
    let attempt = move || -> Result<(), String> {
        match &http {
            Some(h) => http_get(addr, h, timeout),
            None => TcpStream::connect_timeout(&addr, timeout)
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}")),
        }
    };
    match &t.net_ns {
        Some(ns) => ironpod_net::netns::run_in(ns, attempt),
        None => attempt(),
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn port_number(p: &IntOrString, c: &Container) -> Result<u16, String> {
    let n = match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("no port named {name:?}"))?,
    };
    u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| format!("bad port {n}"))
}

/// An HTTP GET as the kubelet sends it; passes on a status from 200 to 399.
fn http_get(addr: SocketAddr, h: &HttpGetAction, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("Get \"http://{addr}\": {e}"))?;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let _ = s.set_write_timeout(Some(left()));
    let path = h.path.as_deref().unwrap_or("/");
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |n: &str| h.http_headers.iter().any(|x| x.name.eq_ignore_ascii_case(n));
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/1.31\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for x in &h.http_headers {
        if x.name.contains(['\r', '\n', ':']) || x.value.contains(['\r', '\n']) {
            return Err(format!("bad probe header {:?}", x.name));
        }
        req.push_str(&format!("{}: {}\r\n", x.name, x.value));
    }
    req.push_str("Connection: close\r\n\r\n");
    let url = format!("http://{addr}{path}");
    s.write_all(req.as_bytes()).map_err(|e| format!("Get \"{url}\": {e}"))?;
    // The status line is all a probe reads.
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let _ = s.set_read_timeout(Some(left()));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"));
            }
            Err(e) => return Err(format!("Get \"{url}\": {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let code: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response {line:?}"))?;
    match code {
        200..=399 => Ok(()),
        c => Err(format!("HTTP probe failed with statuscode: {c}")),
    }
}

/// A probe's target with no VM (network probes only): for tests.
pub fn network_target(pod_ip: Ipv4Addr) -> Target {
    Target {
        uds: Path::new("/nonexistent").to_path_buf(),
        container_id: String::new(),
        process: oci_spec::runtime::Process::default(),
        pod_ip: Some(pod_ip),
        net_ns: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironpod_kube::pod::{ContainerPort, TcpSocketAction};
    use std::net::TcpListener;

    fn serve(status: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
                assert!(req.contains("X-Check: yes\r\n"), "{req}");
                let _ = s.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        port
    }

    /// A GET of the container's port named `web`.
    fn http() -> Probe {
        Probe {
            http_get: Some(HttpGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::String("web".into()),
                host: None,
                scheme: None,
                http_headers: vec![ironpod_kube::pod::HttpHeader {
                    name: "X-Check".into(),
                    value: "yes".into(),
                }],
            }),
            ..Probe::default()
        }
    }

    fn container(port: u16) -> Container {
        Container {
            ports: vec![ContainerPort {
                container_port: port as i64,
                name: Some("web".into()),
                protocol: None,
                host_port: None,
                host_ip: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn http_probes_pass_on_2xx_3xx_only() {
        let t = network_target(Ipv4Addr::LOCALHOST);
        let ok = serve("302 Found");
        assert_eq!(run(&http(), &container(ok), &t), Ok(()));
        let bad = serve("500 Internal Server Error");
        let e = run(&http(), &container(bad), &t).unwrap_err();
        assert_eq!(e, "HTTP probe failed with statuscode: 500");
    }

    #[test]
    fn tcp_probes_and_ports() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = network_target(Ipv4Addr::LOCALHOST);
        let p = Probe {
            tcp_socket: Some(TcpSocketAction { port: IntOrString::Int(port as i64), host: None }),
            ..Default::default()
        };
        assert_eq!(run(&p, &Container::default(), &t), Ok(()));
        drop(l);
        assert!(run(&p, &Container::default(), &t).unwrap_err().starts_with("dial tcp"));
        assert!(port_number(&IntOrString::String("x".into()), &Container::default()).is_err());
        assert!(port_number(&IntOrString::Int(0), &Container::default()).is_err());
        let timing = Timing::of(&Probe::default());
        assert_eq!((timing.period.as_secs(), timing.failure_threshold), (10, 3));
    }
}
