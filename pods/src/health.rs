//! Healthchecks (Docker's `HEALTHCHECK`, `--health-*`, `Config.Healthcheck`): the pod
//! monitor runs the probe in the container every interval through the agent, as an exec'd
//! process, and keeps the outcome in the container's record (`starting`, `healthy`,
//! `unhealthy`, the failing streak and the last five results), logging a `health_status`
//! event when the status changes.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironpod_protocol::{ExecProcess, ProcessRef, RequestBody, StdioStream};
use serde::{Deserialize, Serialize};

use crate::agent_client::{AgentClient, ClientError};

/// How a container is probed (Docker's `HealthConfig`; durations in nanoseconds, 0 for
/// Docker's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["CMD", prog, args…]`, `["CMD-SHELL", command]`, or `["NONE"]` (no probe).
    pub test: Vec<String>,
    /// Between probes (default 30 s).
    #[serde(default)]
    pub interval_ns: u64,
    /// How long a probe may run (default 30 s).
    #[serde(default)]
    pub timeout_ns: u64,
    /// Failures in a row that make it unhealthy (default 3).
    #[serde(default)]
    pub retries: u32,
    /// Time after start when failures do not count (default 0).
    #[serde(default)]
    pub start_period_ns: u64,
}

/// Docker's shortest interval, timeout and start period.
const MIN_NS: u64 = 1_000_000;
/// How long a probe's output may stay open after the probe ended.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Output kept per result.
const MAX_OUTPUT: usize = 4096;
/// Results kept.
const MAX_LOG: usize = 5;

impl HealthConfig {
    /// An image's `config.Healthcheck` (Docker's JSON: `Test`, `Interval`, `Timeout`,
    /// `StartPeriod` in nanoseconds, `Retries`); `None` when it is malformed.
    pub fn from_image(v: &serde_json::Value) -> Option<HealthConfig> {
        let ns = |k: &str| v.get(k).map_or(Some(0), |x| x.as_u64());
        let cfg = HealthConfig {
            test: serde_json::from_value(v.get("Test")?.clone()).ok()?,
            interval_ns: ns("Interval")?,
            timeout_ns: ns("Timeout")?,
            retries: u32::try_from(v.get("Retries").map_or(Some(0), |x| x.as_u64())?).ok()?,
            start_period_ns: ns("StartPeriod")?,
        };
        cfg.validate().ok().map(|()| cfg)
    }

    /// The container's own settings over the image's, field by field as Docker merges
    /// them: an empty test, or a zero duration or count, is the image's.
    pub fn over(self, image: &HealthConfig) -> HealthConfig {
        let pick = |mine: u64, theirs: u64| if mine == 0 { theirs } else { mine };
        HealthConfig {
            test: if self.test.is_empty() { image.test.clone() } else { self.test },
            interval_ns: pick(self.interval_ns, image.interval_ns),
            timeout_ns: pick(self.timeout_ns, image.timeout_ns),
            retries: if self.retries == 0 { image.retries } else { self.retries },
            start_period_ns: pick(self.start_period_ns, image.start_period_ns),
        }
    }

    /// What runs: `None` when nothing does (`NONE`, or an empty test).
    pub fn argv(&self) -> Option<Vec<String>> {
        match self.test.first().map(String::as_str) {
            Some("CMD") if self.test.len() > 1 => Some(self.test[1..].to_vec()),
            Some("CMD-SHELL") if self.test.len() == 2 => {
                Some(vec!["/bin/sh".into(), "-c".into(), self.test[1].clone()])
            }
            _ => None,
        }
    }

    /// Checks it as Docker does: a known test form, durations of 1 ms or more (or 0).
    pub fn validate(&self) -> Result<(), String> {
        match self.test.first().map(String::as_str) {
            None | Some("NONE") => {}
            Some("CMD") if self.test.len() > 1 => {}
            Some("CMD-SHELL") if self.test.len() == 2 => {}
            Some(t) => {
                return Err(format!(
                    "healthcheck test {t:?}: [\"CMD\", …], [\"CMD-SHELL\", command] or [\"NONE\"]"
                ))
            }
        }
        for (name, v) in [
            ("Interval", self.interval_ns),
            ("Timeout", self.timeout_ns),
            ("StartPeriod", self.start_period_ns),
        ] {
            if v != 0 && v < MIN_NS {
                return Err(format!("{name} in Healthcheck cannot be less than 1ms"));
            }
        }
        Ok(())
    }

    /// The effective value (Docker's default when unset).
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(if self.interval_ns == 0 { 30_000_000_000 } else { self.interval_ns })
    }

    /// The effective value (Docker's default when unset).
    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(if self.timeout_ns == 0 { 30_000_000_000 } else { self.timeout_ns })
    }

    /// The effective value (Docker's default when unset).
    pub fn retries(&self) -> u32 {
        if self.retries == 0 {
            3
        } else {
            self.retries
        }
    }
}

/// Parses a duration as Docker's flags take it (Go's: `1m30s`, `500ms`, `1.5h`, `10us`);
/// returns nanoseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?} (like 30s, 1m30s, 500ms)");
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(total.round() as u64)
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    /// RFC 3339.
    pub start: String,
    /// RFC 3339.
    pub end: String,
    /// The probe's exit code (-1: it could not run or ran over its timeout).
    pub exit_code: i64,
    /// Its stdout and stderr, at most 4 KiB.
    pub output: String,
}

/// A container's health, as `docker inspect` shows it under `State.Health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Failed probes in a row.
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: Vec<HealthResult>,
}

impl Health {
    fn starting() -> Self {
        Health { status: "starting".into(), failing_streak: 0, log: Vec::new() }
    }

    /// Takes in a result; returns whether the status changed.
    fn record(&mut self, r: HealthResult, cfg: &HealthConfig, in_start_period: bool) -> bool {
        let before = self.status.clone();
        if r.exit_code == 0 {
            self.status = "healthy".into();
            self.failing_streak = 0;
        } else if !in_start_period || self.status != "starting" {
            self.failing_streak += 1;
            if self.failing_streak >= cfg.retries() {
                self.status = "unhealthy".into();
            }
        }
        self.log.push(r);
        if self.log.len() > MAX_LOG {
            self.log.remove(0);
        }
        self.status != before
    }
}

/// Runs a probe command once in container `id` through the agent at `uds`, as `process`
/// (its env, user, directory) with `argv`, for at most `timeout` (also the kubelet's exec
/// probes).
pub fn probe(
    uds: &Path,
    id: &str,
    process: &oci_spec::runtime::Process,
    argv: &[String],
    timeout: Duration,
) -> HealthResult {
    let start = ironpod_images::time::now_rfc3339();
    let (exit_code, output) = match run_probe(uds, id, process, argv, timeout) {
        Ok(r) => r,
        Err(e) => (-1, e),
    };
    HealthResult { start, end: ironpod_images::time::now_rfc3339(), exit_code, output }
}

fn run_probe(
    uds: &Path,
    id: &str,
    process: &oci_spec::runtime::Process,
    argv: &[String],
    timeout: Duration,
) -> Result<(i64, String), String> {
    let err = |e: ClientError| match e {
        ClientError::Agent(a) => a.message,
        e => e.to_string(),
    };
    let exec_id = format!("health-{}", ironpod_ids::random_hex(8).map_err(|e| e.to_string())?);
    let pref = ProcessRef::exec(id, &exec_id);
    let mut p = process.clone();
    p.set_args(Some(argv.to_vec()));
    p.set_terminal(Some(false));
    p.set_console_size(None);
    let mut ctl = AgentClient::open(uds, Duration::from_secs(30)).map_err(err)?;
    ctl.exec(ExecProcess {
        container: id.into(),
        exec_id,
        process: Box::new(p),
        stdin: false,
        user: None,
    })
    .map_err(err)?;
    let output = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for which in [StdioStream::Stdout, StdioStream::Stderr] {
        let stream = AgentClient::open(uds, Duration::from_secs(30))
            .and_then(|c| {
                c.into_stream(RequestBody::OpenStdio { process: pref.clone(), stream: which })
            })
            .map_err(err)?;
        let out = output.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let handle = stream.try_clone().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                let room = MAX_OUTPUT.saturating_sub(o.len());
                o.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = done_tx.send(());
        });
        readers.push((handle, done_rx));
    }
    let started = ctl.start(&pref);
    let status = started.and_then(|()| {
        ctl.set_timeout(timeout)?;
        ctl.wait(&pref)
    });
    // Whatever the probe started and left behind goes with it (a background child would
    // keep its output open, and the probe would never end); past its timeout, the probe too.
    if let Ok(mut c) = AgentClient::open(uds, Duration::from_secs(10)) {
        let _ = c.signal_group(&pref, libc::SIGKILL);
    }
    // Output still held open (by a process that left the group) is not waited for long.
    let deadline = Instant::now() + OUTPUT_GRACE;
    for (handle, done) in readers {
        if done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
            let _ = handle.shutdown(std::net::Shutdown::Both);
            let _ = done.recv();
        }
    }
    release(uds, &pref);
    let code = match status {
        Ok(s) => s.code as i64,
        Err(ClientError::Timeout(_)) => {
            return Ok((-1, format!("Health check exceeded timeout ({timeout:?})")));
        }
        Err(e) => return Err(err(e)),
    };
    let out = output.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((code, String::from_utf8_lossy(&out).into_owned()))
}

/// Forgets the probe's process in the agent (once it has exited).
fn release(uds: &Path, pref: &ProcessRef) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(mut c) = AgentClient::open(uds, Duration::from_secs(10)) {
        match c.release(pref) {
            Err(ClientError::Agent(a))
                if a.kind == ironpod_protocol::ErrorKind::InvalidState
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => return,
        }
    }
}

/// Probes a running container until dropped (a probe under way is left to end on its
/// own: the container's end ends it).
pub struct Prober {
    stop: Arc<AtomicBool>,
}

impl Prober {
    /// Starts probing container `id` (its process template `process`) through `uds`,
    /// recording in `root`'s state.
    pub fn start(
        root: &Path,
        id: &str,
        uds: &Path,
        cfg: HealthConfig,
        process: oci_spec::runtime::Process,
    ) -> Option<Prober> {
        let argv = cfg.argv()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (root, id, uds, flag) =
            (root.to_path_buf(), id.to_string(), uds.to_path_buf(), stop.clone());
        std::thread::spawn(move || watch(&root, &id, &uds, &cfg, &process, &argv, &flag));
        Some(Prober { stop })
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn save(root: &Path, id: &str, h: &Health) {
    if let (Ok(s), Ok(json)) = (ironpod_state::State::open(root), serde_json::to_string(h)) {
        let _ = s.set_health(id, Some(&json));
    }
}

fn watch(
    root: &Path,
    id: &str,
    uds: &Path,
    cfg: &HealthConfig,
    process: &oci_spec::runtime::Process,
    argv: &[String],
    stop: &AtomicBool,
) {
    let began = Instant::now();
    let mut health = Health::starting();
    save(root, id, &health);
    loop {
        let next = Instant::now() + cfg.interval();
        while Instant::now() < next {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50).min(cfg.interval()));
        }
        let result = probe(uds, id, process, argv, cfg.timeout());
        if stop.load(Ordering::SeqCst) {
            return; // the container ended meanwhile: the probe's failure says nothing
        }
        let in_start = began.elapsed() < Duration::from_nanos(cfg.start_period_ns);
        let changed = health.record(result, cfg, in_start);
        save(root, id, &health);
        if changed {
            if let Ok(r) = ironpod_state::State::open(root).and_then(|s| s.find(id)) {
                let action = format!("health_status: {}", health.status);
                crate::events::container(root, &r, &action);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_settings_go_over_the_images_field_by_field() {
        let image = HealthConfig {
            test: vec!["CMD".into(), "check".into()],
            interval_ns: 5,
            timeout_ns: 6,
            retries: 7,
            start_period_ns: 8,
        };
        let mine = HealthConfig { interval_ns: 50, retries: 1, ..Default::default() };
        let got = mine.over(&image);
        assert_eq!(got.test, image.test);
        assert_eq!(
            (got.interval_ns, got.timeout_ns, got.retries, got.start_period_ns),
            (50, 6, 1, 8)
        );
        let none = HealthConfig { test: vec!["NONE".into()], ..Default::default() };
        assert_eq!(none.over(&image).argv(), None);
    }

    fn result(code: i64) -> HealthResult {
        HealthResult {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn an_images_healthcheck_is_read() {
        let v = serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000u64, "Retries": 4});
        let c = HealthConfig::from_image(&v).unwrap();
        assert_eq!((c.interval_ns, c.retries, c.timeout_ns), (5_000_000_000, 4, 0));
        assert!(HealthConfig::from_image(&serde_json::json!({"Test": "true"})).is_none());
        assert!(HealthConfig::from_image(&serde_json::json!({"Test": ["CMD"], "Interval": -1}))
            .is_none());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("30s").unwrap(), 30_000_000_000);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_duration("0").unwrap(), 0);
        for bad in ["", "5", "s", "3 s", "1d", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tests_and_durations_are_checked() {
        let c = |t: &[&str]| HealthConfig {
            test: t.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(c(&["CMD", "true"]).argv().unwrap(), ["true"]);
        assert_eq!(c(&["CMD-SHELL", "exit 1"]).argv().unwrap(), ["/bin/sh", "-c", "exit 1"]);
        assert!(c(&["NONE"]).argv().is_none() && c(&["NONE"]).validate().is_ok());
        assert!(c(&["SHELL", "x"]).validate().is_err());
        assert!(c(&["CMD"]).validate().is_err());
        let fast = HealthConfig { interval_ns: 10, ..c(&["CMD", "true"]) };
        assert!(fast.validate().unwrap_err().contains("1ms"));
    }

    #[test]
    fn status_follows_results_retries_and_the_start_period() {
        let cfg =
            HealthConfig { test: vec!["CMD".into(), "x".into()], retries: 2, ..Default::default() };
        let mut h = Health::starting();
        // In the start period a failure does not count while starting.
        assert!(!h.record(result(1), &cfg, true));
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        assert!(h.record(result(0), &cfg, true));
        assert_eq!(h.status, "healthy");
        assert!(!h.record(result(1), &cfg, false));
        assert!(h.record(result(1), &cfg, false));
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        for _ in 0..10 {
            h.record(result(0), &cfg, false);
        }
        assert_eq!(h.log.len(), 5);
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
    }
}
