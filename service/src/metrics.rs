//! Prometheus metrics of the service and its pods, served at `GET /metrics` on a listener
//! of its own (off unless asked for; see [`crate::Options::metrics`]):
//!
//! - Docker API requests handled, by route, method and status code;
//! - pod starts and failed starts, and a histogram of how long a pod took to start (from
//!   its monitor's spawn to its container running), learned from the pod monitors' `pod`
//!   events, so pods started by the ironpod CLI or a restart policy count too;
//! - sampled at each scrape, for every running pod: CPU time and memory inside the guest
//!   (the container's cgroup there) and on the host (the pod's host cgroup: its VMM and
//!   file server), bytes through its network card, and bytes its container read from and
//!   wrote to its disks.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use ironpod_events::{Event, Follower, POD_KIND};
use ironpod_state::{status, Record, State as Records};

/// Upper bounds of the start-latency buckets, in seconds.
const START_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The OpenMetrics text format's content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    id: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodSideLabels {
    id: String,
    name: String,
    side: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodDirectionLabels {
    id: String,
    name: String,
    direction: String,
}

/// What the service counts while it runs (the pods' figures are sampled when scraped).
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    pod_starts: Family<ResultLabels, Counter>,
    start_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            pod_starts: Family::default(),
            start_seconds: Histogram::new(START_BUCKETS),
        }
    }
}

/// One running pod's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSample {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// CPU seconds used inside the guest by the container.
    pub guest_cpu_seconds: Option<f64>,
    /// Memory the container uses inside the guest, bytes.
    pub guest_memory_bytes: Option<u64>,
    /// CPU seconds used by the pod on the host (its VMM and file server).
    pub host_cpu_seconds: Option<f64>,
    /// Memory the pod uses on the host, bytes.
    pub host_memory_bytes: Option<u64>,
    /// Bytes the pod received and sent through its network card.
    pub network: Option<(u64, u64)>,
    /// Bytes its container read from and wrote to its disks.
    pub block: Option<(u64, u64)>,
}

impl Metrics {
    /// Counts a request answered with `code` on `route` (the route's pattern, so that ids
    /// do not make a series each).
    pub fn count_request(&self, method: &str, route: &str, code: u16) {
        let labels = RequestLabels {
            method: method.to_string(),
            route: route.to_string(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Takes in a pod monitor's event; other events are not looked at.
    pub fn observe(&self, e: &Event) {
        if e.kind != POD_KIND {
            return;
        }
        let result = match e.action.as_str() {
            "start" => "ok",
            "start-failed" => "failed",
            _ => return,
        };
        self.pod_starts.get_or_create(&ResultLabels { result: result.into() }).inc();
        if let Some(secs) = e.attributes.get("seconds").and_then(|s| s.parse::<f64>().ok()) {
            if result == "ok" && secs.is_finite() && secs >= 0.0 {
                self.start_seconds.observe(secs);
            }
        }
    }

    /// The exposition: the service's counters and the pods' `samples`.
    pub fn render(&self, samples: &[PodSample]) -> String {
        let mut reg = Registry::with_prefix("ironpod");
        reg.register(
            "api_requests",
            "Docker API requests handled, by route, method and status code",
            self.requests.clone(),
        );
        reg.register(
            "pod_starts",
            "Pods started (result=ok) or that failed to start (result=failed)",
            self.pod_starts.clone(),
        );
        reg.register(
            "pod_start_duration_seconds",
            "Time from a pod monitor's start to its container running",
            self.start_seconds.clone(),
        );
        let cpu = Family::<PodSideLabels, Counter<f64, AtomicU64>>::default();
        let memory = Family::<PodSideLabels, Gauge<i64>>::default();
        let network = Family::<PodDirectionLabels, Counter>::default();
        let block = Family::<PodDirectionLabels, Counter>::default();
        let running = Family::<PodLabels, Gauge<i64>>::default();
        for s in samples {
            let side = |side: &str| PodSideLabels {
                id: s.id.clone(),
                name: s.name.clone(),
                side: side.into(),
            };
            let dir = |direction: &str| PodDirectionLabels {
                id: s.id.clone(),
                name: s.name.clone(),
                direction: direction.into(),
            };
            running.get_or_create(&PodLabels { id: s.id.clone(), name: s.name.clone() }).set(1);
            if let Some(v) = s.guest_cpu_seconds {
                cpu.get_or_create(&side("guest")).inc_by(v);
            }
            if let Some(v) = s.host_cpu_seconds {
                cpu.get_or_create(&side("host")).inc_by(v);
            }
            if let Some(v) = s.guest_memory_bytes {
                memory.get_or_create(&side("guest")).set(clamp(v));
            }
            if let Some(v) = s.host_memory_bytes {
                memory.get_or_create(&side("host")).set(clamp(v));
            }
            if let Some((rx, tx)) = s.network {
                network.get_or_create(&dir("receive")).inc_by(rx);
                network.get_or_create(&dir("transmit")).inc_by(tx);
            }
            if let Some((read, write)) = s.block {
                block.get_or_create(&dir("read")).inc_by(read);
                block.get_or_create(&dir("write")).inc_by(write);
            }
        }
        reg.register("pod_running", "Running pods (1 each)", running);
        reg.register(
            "pod_cpu_seconds",
            "CPU time of a pod: its container inside the guest (side=guest), its VMM and \
             file server on the host (side=host)",
            cpu,
        );
        reg.register(
            "pod_memory_bytes",
            "Memory of a pod: its container inside the guest (side=guest), the pod on the \
             host (side=host)",
            memory,
        );
        reg.register("pod_network_bytes", "Bytes through a pod's network card", network);
        reg.register(
            "pod_block_bytes",
            "Bytes a pod's container read from and wrote to disk",
            block,
        );
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }

    /// Follows the event log for pod starts while the service runs.
    pub fn follow(self: Arc<Self>, root: Arc<PathBuf>) {
        tokio::spawn(async move {
            let Ok(follower) = tokio::task::spawn_blocking(move || Follower::new(&root)).await
            else {
                return;
            };
            crate::events::follow_log(follower, |e| self.observe(&e)).await;
        });
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The bytes card `card` received and sent, from a `/proc/PID/net/dev` text.
pub fn net_dev_bytes(text: &str, card: &str) -> Option<(u64, u64)> {
    text.lines().skip(2).find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != card {
            return None;
        }
        let cols: Vec<u64> = rest.split_whitespace().filter_map(|c| c.parse().ok()).collect();
        (cols.len() >= 9).then(|| (cols[0], cols[8]))
    })
}

/// How long a scrape waits for a pod's agent (to connect, then to answer).
const AGENT_WAIT: Duration = Duration::from_secs(2);

/// Samples running pod `r` (blocking; what cannot be read in time is left out).
fn sample(r: &Record) -> PodSample {
    let guest = r.vsock.as_deref().and_then(|uds| {
        let mut a =
            ironpod_pods::agent_client::AgentClient::open(Path::new(uds), AGENT_WAIT).ok()?;
        a.set_timeout(AGENT_WAIT).ok()?;
        a.stats(&r.id).ok()
    });
    let host = ironpod_pods::cgroup::PodCgroup::usage_of(&r.id);
    // The VMM lives in the pod's network namespace; the VM's card is its tap there (the
    // veth beside it carries the same frames). What the tap sends, the pod receives.
    let network = r
        .vmm_pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok())
        .and_then(|t| net_dev_bytes(&t, ironpod_net::plumb::POD_TAP))
        .map(|(tap_rx, tap_tx)| (tap_tx, tap_rx));
    PodSample {
        id: r.id.clone(),
        name: r.name.clone(),
        guest_cpu_seconds: guest.as_ref().map(|s| s.cpu_usage_usec as f64 / 1e6),
        guest_memory_bytes: guest.as_ref().map(|s| s.memory_bytes),
        host_cpu_seconds: host.as_ref().map(|u| u.cpu_usec as f64 / 1e6),
        host_memory_bytes: host.as_ref().map(|u| u.memory),
        network,
        block: guest.as_ref().map(|s| (s.io_read_bytes, s.io_write_bytes)),
    }
}

/// Samples every running pod (blocking), all at once: a scrape takes about as long as the
/// slowest pod, at most a few seconds however many pods hang.
fn sample_all(root: &Path) -> Vec<PodSample> {
    let running: Vec<Record> = Records::open(root)
        .and_then(|s| s.list())
        .map(|l| {
            l.into_iter().filter(|r| r.status == status::RUNNING && r.vsock.is_some()).collect()
        })
        .unwrap_or_default();
    std::thread::scope(|s| {
        let all: Vec<_> = running.iter().map(|r| s.spawn(|| sample(r))).collect();
        all.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// What the metrics listener needs.
#[derive(Clone)]
struct MetricsCtx {
    root: Arc<PathBuf>,
    metrics: Arc<Metrics>,
    /// One scrape at a time: scrapers that come faster than pods answer wait their turn
    /// instead of piling up blocking threads the API needs.
    one: Arc<tokio::sync::Mutex<()>>,
}

async fn scrape(State(ctx): State<MetricsCtx>) -> Response {
    let _turn = ctx.one.lock().await;
    let root = ctx.root.clone();
    let samples = tokio::task::spawn_blocking(move || sample_all(&root)).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], ctx.metrics.render(&samples)).into_response()
}

/// The metrics listener's routes: `GET /metrics`, else 404.
pub fn router(root: Arc<PathBuf>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics is here\n") })
        .with_state(MetricsCtx { root, metrics, one: Arc::default() })
}

/// Middleware of the Docker API's routes: counts each request by its route's pattern.
pub async fn count(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    metrics.count_request(&method, &route, resp.status().as_u16());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_gives_one_cards_bytes() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  tap0:    2000      10    0    0    0     0          0         0     3000      12    0    0    0     0       0          0
  tap1:       5       1    0    0    0     0          0         0        7       1    0    0    0     0       0          0
";
        assert_eq!(net_dev_bytes(text, "tap0"), Some((2000, 3000)));
        assert_eq!(net_dev_bytes(text, "tap1"), Some((5, 7)));
        assert_eq!(net_dev_bytes(text, "eth0"), None);
        assert_eq!(net_dev_bytes("garbage", "tap0"), None);
    }

    #[test]
    fn the_exposition_has_requests_starts_and_pods() {
        let m = Metrics::default();
        m.count_request("GET", "/containers/json", 200);
        m.count_request("GET", "/containers/json", 200);
        let start = |action: &str, secs: &str| {
            Event::now(POD_KIND, action, "abc").with("seconds", secs.to_string())
        };
        m.observe(&start("start", "0.7"));
        m.observe(&start("start-failed", "3"));
        m.observe(&Event::now("container", "start", "abc")); // not a pod event
        let pod = PodSample {
            id: "abc".into(),
            name: "web".into(),
            guest_cpu_seconds: Some(1.5),
            guest_memory_bytes: Some(4096),
            host_cpu_seconds: Some(2.0),
            host_memory_bytes: Some(8192),
            network: Some((10, 20)),
            block: Some((30, 40)),
        };
        let text = m.render(&[pod]);
        for want in [
            r#"ironpod_api_requests_total{method="GET",route="/containers/json",code="200"} 2"#,
            r#"ironpod_pod_starts_total{result="ok"} 1"#,
            r#"ironpod_pod_starts_total{result="failed"} 1"#,
            r#"ironpod_pod_start_duration_seconds_bucket{le="1.0"} 1"#,
            r#"ironpod_pod_start_duration_seconds_bucket{le="0.5"} 0"#,
            r#"ironpod_pod_start_duration_seconds_count 1"#,
            r#"ironpod_pod_running{id="abc",name="web"} 1"#,
            r#"ironpod_pod_cpu_seconds_total{id="abc",name="web",side="guest"} 1.5"#,
            r#"ironpod_pod_memory_bytes{id="abc",name="web",side="host"} 8192"#,
            r#"ironpod_pod_network_bytes_total{id="abc",name="web",direction="transmit"} 20"#,
            r#"ironpod_pod_block_bytes_total{id="abc",name="web",direction="write"} 40"#,
        ] {
            assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
