//! Container commands: ps, logs, stop, kill, rm, wait, inspect, top, stats.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironpod_images::ImageStore;
use ironpod_net::NetworkSettings;
use ironpod_pods::agent_client::AgentClient;
use ironpod_pods::logs;
use ironpod_pods::{paths, pod};
use ironpod_protocol::ProcessRef;
use ironpod_state::{status, Record, State};

use crate::Failure;

fn rt(e: impl std::fmt::Display) -> Failure {
    Failure::Runtime(e.to_string())
}

/// Finds a container and brings its state up to date.
pub fn find(root: &Path, key: &str) -> Result<Record, Failure> {
    let state = State::open(root).map_err(rt)?;
    let rec = state.find(key).map_err(rt)?;
    pod::reconcile(&state, rec).map_err(rt)
}

fn is_running(r: &Record) -> bool {
    r.status == status::RUNNING
}

/// A session with a running container's agent.
pub fn agent(r: &Record) -> Result<AgentClient, Failure> {
    let uds =
        r.vsock.as_deref().filter(|_| is_running(r)).ok_or_else(|| {
            Failure::Runtime(format!("container {} is not running", short(&r.id)))
        })?;
    AgentClient::open(Path::new(uds), Duration::from_secs(30)).map_err(rt)
}

/// The first 12 characters of an id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]Z` to seconds since the epoch.
pub fn parse_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil (inverse of the formatter in ironpod_images::time).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok()
}

/// Docker's human durations: "Less than a second", "5 seconds", "About a minute", …
pub fn human(d: u64) -> String {
    match d {
        0 => "Less than a second".into(),
        1..=59 => format!("{d} second{}", if d == 1 { "" } else { "s" }),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", d / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", d / 3600),
        _ => format!("{} days", d / 86_400),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn ago(t: Option<&str>) -> String {
    t.and_then(parse_time).map(|t| human(now().saturating_sub(t))).unwrap_or_else(|| "?".into())
}

/// Docker's STATUS column.
pub fn status_text(r: &Record) -> String {
    match r.status.as_str() {
        status::RUNNING => format!("Up {}", ago(r.started_at.as_deref())),
        status::EXITED => {
            format!("Exited ({}) {} ago", r.exit_code.unwrap_or(-1), ago(r.finished_at.as_deref()))
        }
        _ => "Created".into(),
    }
}

fn command_of(r: &Record) -> String {
    let spec: serde_json::Value = serde_json::from_str(&r.spec).unwrap_or_default();
    let args: Vec<String> = spec["process"]["args"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    args.join(" ")
}

/// Arguments of `ironpod ps`.
#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// JSON lines.
    #[arg(long)]
    json: bool,
}

/// `ironpod ps`.
pub fn ps(root: &Path, a: PsArgs) -> Result<i32, Failure> {
    let state = State::open(root).map_err(rt)?;
    let mut rows = Vec::new();
    for r in state.list().map_err(rt)? {
        let r = pod::reconcile(&state, r).map_err(rt)?;
        if a.all || is_running(&r) {
            rows.push(r);
        }
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in rows {
            let _ = writeln!(out, "{}", short(&r.id));
        }
        return Ok(0);
    }
    if a.json {
        for r in rows {
            let v = serde_json::json!({
                "Id": r.id, "Names": r.name, "Image": r.image, "Command": command_of(&r),
                "Created": r.created, "State": r.status, "Status": status_text(&r),
                "ExitCode": r.exit_code, "Error": r.error,
            });
            let _ = writeln!(out, "{v}");
        }
        return Ok(0);
    }
    let _ = writeln!(
        out,
        "{:<14}{:<20}{:<24}{:<20}{:<28}NAMES",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
    );
    for r in rows {
        let mut cmd = format!("\"{}\"", command_of(&r));
        if cmd.chars().count() > 22 {
            cmd = format!("{}…\"", cmd.chars().take(20).collect::<String>());
        }
        let _ = writeln!(
            out,
            "{:<14}{:<20}{:<24}{:<20}{:<28}{}",
            short(&r.id),
            r.image,
            cmd,
            format!("{} ago", ago(Some(&r.created))),
            status_text(&r),
            r.name
        );
    }
    Ok(0)
}

/// Arguments of `ironpod logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Keep following the output.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Container.
    container: String,
}

fn emit(entries: &[logs::Entry], timestamps: bool) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = match e.stream {
            logs::Stream::Stdout => &mut out,
            logs::Stream::Stderr => &mut err,
        };
        if timestamps {
            let _ = write!(w, "{} ", e.time);
        }
        let _ = w.write_all(&e.output());
    }
    let _ = out.flush();
}

/// `ironpod logs`.
pub fn logs_cmd(root: &Path, a: LogsArgs) -> Result<i32, Failure> {
    let rec = find(root, &a.container)?;
    let path = paths::log_path(root, &rec.id);
    let tail = if a.tail == "all" {
        None
    } else {
        Some(
            a.tail
                .parse::<usize>()
                .map_err(|_| Failure::Usage(format!("invalid --tail value {:?}", a.tail)))?,
        )
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(rt(format!("{}: {e}", path.display()))),
    };
    let mut pos = 0u64;
    if let Some(f) = file.as_mut() {
        let data = read_from(f, &mut pos)?;
        let entries = logs::read_entries(&data[..]).map_err(rt)?;
        let shown = match tail {
            Some(n) => logs::tail(&entries, n),
            None => &entries[..],
        };
        emit(shown, a.timestamps);
    }
    if !a.follow {
        return Ok(0);
    }
    loop {
        let running = {
            let r = find(root, &rec.id)?;
            is_running(&r) || (r.status == status::CREATED && r.monitor_pid.is_some())
        };
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
        }
        if let Some(f) = file.as_mut() {
            let data = read_from(f, &mut pos)?;
            // Only whole lines: keep a partial last line for the next round.
            let cut = data.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
            pos -= (data.len() - cut) as u64;
            emit(&logs::read_entries(&data[..cut]).map_err(rt)?, a.timestamps);
        }
        if !running {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_from(f: &mut std::fs::File, pos: &mut u64) -> Result<Vec<u8>, Failure> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(*pos)).map_err(rt)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(rt)?;
    *pos += data.len() as u64;
    Ok(data)
}

/// Parses a signal name or number (`TERM`, `SIGTERM`, `15`).
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(format!("invalid signal {s:?}")) };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(format!("invalid signal {s:?}")),
    };
    Ok(n)
}

/// Arguments of `ironpod kill`.
#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// Signal (name or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `ironpod kill`.
pub fn kill(root: &Path, a: KillArgs) -> Result<i32, Failure> {
    let sig = parse_signal(&a.signal).map_err(Failure::Usage)?;
    let mut code = 0;
    for c in &a.containers {
        match find(root, c)
            .and_then(|r| agent(&r)?.signal(&ProcessRef::init(&r.id), sig, false).map_err(rt))
        {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn stop_signal(root: &Path, r: &Record) -> i32 {
    let Ok(store) = ImageStore::open(root) else { return libc::SIGTERM };
    let Ok(d) = pod::image_digest(r) else { return libc::SIGTERM };
    store
        .config_of(&d)
        .ok()
        .and_then(|c| c.config().clone())
        .and_then(|c| c.stop_signal().clone())
        .and_then(|s| parse_signal(&s).ok())
        .unwrap_or(libc::SIGTERM)
}

/// Stops a running container: its stop signal, then SIGKILL after `timeout`.
pub fn stop_one(root: &Path, r: &Record, timeout: Duration) -> Result<(), Failure> {
    if !is_running(r) {
        return Ok(());
    }
    let mut a = agent(r)?;
    let init = ProcessRef::init(&r.id);
    let _ = a.signal(&init, stop_signal(root, r), false);
    let after = pod::wait_exited(root, &r.id, Some(timeout)).map_err(rt)?;
    if is_running(&after) {
        let _ = a.signal(&init, libc::SIGKILL, true);
        let after = pod::wait_exited(root, &r.id, Some(Duration::from_secs(30))).map_err(rt)?;
        if is_running(&after) {
            return Err(rt(format!("container {} did not stop", short(&r.id))));
        }
    }
    Ok(())
}

/// Arguments of `ironpod stop`.
#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `ironpod stop`.
pub fn stop(root: &Path, a: StopArgs) -> Result<i32, Failure> {
    let mut code = 0;
    for c in &a.containers {
        match find(root, c).and_then(|r| stop_one(root, &r, Duration::from_secs(a.time))) {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Arguments of `ironpod rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    force: bool,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `ironpod rm`.
pub fn rm(root: &Path, a: RmArgs) -> Result<i32, Failure> {
    let mut code = 0;
    for c in &a.containers {
        let result = find(root, c).and_then(|r| {
            let live = is_running(&r) || (r.status == status::CREATED && r.monitor_pid.is_some());
            if live {
                if !a.force {
                    return Err(rt(format!(
                        "cannot remove container {c}: it is running; stop it first or use --force"
                    )));
                }
                stop_one(root, &r, Duration::ZERO)?;
            }
            let store = ImageStore::open(root).map_err(rt)?;
            pod::remove(root, &store, &r.id).map_err(rt)
        });
        match result {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `ironpod wait`.
pub fn wait(root: &Path, containers: &[String]) -> Result<i32, Failure> {
    let mut code = 0;
    for c in containers {
        match find(root, c).and_then(|r| pod::wait_exited(root, &r.id, None).map_err(rt)) {
            Ok(r) => println!("{}", r.exit_code.unwrap_or(-1)),
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `ironpod inspect`.
pub fn inspect(root: &Path, containers: &[String]) -> Result<i32, Failure> {
    let mut out = Vec::new();
    let mut code = 0;
    for c in containers {
        match find(root, c) {
            Ok(r) => {
                let spec: serde_json::Value = serde_json::from_str(&r.spec).unwrap_or_default();
                let opts: serde_json::Value = serde_json::from_str(&r.options).unwrap_or_default();
                let net = network_settings(root, &r);
                out.push(serde_json::json!({
                    "Id": r.id,
                    "Name": r.name,
                    "Created": r.created,
                    "Image": r.image_digest,
                    "Path": spec["process"]["args"][0],
                    "Args": spec["process"]["args"].as_array().map(|a| a[1..].to_vec()),
                    "State": {
                        "Status": r.status,
                        "Running": is_running(&r),
                        "OOMKilled": r.oom_killed,
                        "Pid": r.guest_pid.unwrap_or(0),
                        "ExitCode": r.exit_code.unwrap_or(0),
                        "Error": r.error.clone().unwrap_or_default(),
                        "StartedAt": r.started_at,
                        "FinishedAt": r.finished_at,
                    },
                    "Config": {
                        "Hostname": spec["hostname"],
                        "Image": r.image,
                        "Env": spec["process"]["env"],
                        "Cmd": opts["command"],
                        "Entrypoint": opts["entrypoint"],
                        "WorkingDir": spec["process"]["cwd"],
                        "User": opts["user"],
                        "Tty": opts["tty"],
                        "OpenStdin": opts["interactive"],
                    },
                    "HostConfig": {
                        "AutoRemove": r.auto_remove,
                        "Memory": opts["memory"],
                        "NanoCpus": opts["cpus"].as_f64().map(|c| (c * 1e9) as u64),
                        "PidsLimit": opts["pids_limit"],
                        "ReadonlyRootfs": opts["read_only"],
                        "Privileged": opts["privileged"],
                        "NetworkMode": opts["network"].as_str().unwrap_or("bridge"),
                    },
                    "NetworkSettings": net,
                    "Mounts": serde_json::from_str::<ironpod_pods::spec::RunOptions>(&r.options)
                        .map(|o| ironpod_volumes::inspect_mounts(root, &o.volumes))
                        .unwrap_or_default(),
                    "Pod": { "VmmPid": r.vmm_pid, "MonitorPid": r.monitor_pid, "Vsock": r.vsock },
                    "LogPath": paths::log_path(root, &r.id),
                    "Spec": spec,
                }));
            }
            Err(e) => {
                eprintln!("ironpod: {e}");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).map_err(rt)?);
    Ok(code)
}

/// A container's network as `docker inspect` shows it (empty once it stopped).
fn network_settings(root: &Path, r: &Record) -> serde_json::Value {
    let settings = if is_running(r) {
        State::open(root).ok().and_then(|s| s.network::<NetworkSettings>(&r.id).ok().flatten())
    } else {
        None
    };
    let Some(n) = settings else {
        return serde_json::json!({ "IPAddress": "", "Gateway": "", "MacAddress": "", "Ports": {}, "Networks": {} });
    };
    let mut ports = serde_json::Map::new();
    for p in &n.ports {
        let key = format!("{}/{}", p.pod_port, p.protocol);
        let entry = ports.entry(key).or_insert_with(|| serde_json::json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(serde_json::json!({ "HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string() }));
        }
    }
    let ip = n.address.map(|a| a.to_string()).unwrap_or_default();
    let gw = n.gateway.map(|a| a.to_string()).unwrap_or_default();
    let mac = n.mac.clone().unwrap_or_default();
    let mut networks = serde_json::Map::new();
    networks.insert(
        n.network.clone(),
        serde_json::json!({ "IPAddress": ip, "IPPrefixLen": n.prefix, "Gateway": gw, "MacAddress": mac }),
    );
    serde_json::json!({
        "IPAddress": ip,
        "IPPrefixLen": n.prefix,
        "Gateway": gw,
        "MacAddress": mac,
        "Ports": ports,
        "Networks": networks,
    })
}

/// `ironpod port CONTAINER [PODPORT[/PROTO]]`: the published ports.
pub fn port(root: &Path, container: &str, which: Option<&str>) -> Result<i32, Failure> {
    let r = find(root, container)?;
    if !is_running(&r) {
        return Err(Failure::Runtime(format!("container {container} is not running")));
    }
    let n = State::open(root)
        .map_err(rt)?
        .network::<NetworkSettings>(&r.id)
        .map_err(rt)?
        .unwrap_or_default();
    let want = match which {
        Some(w) => {
            let (p, proto) = w.split_once('/').unwrap_or((w, "tcp"));
            let p: u16 = p.parse().map_err(|_| Failure::Usage(format!("invalid port {w:?}")))?;
            Some((p, proto.to_string()))
        }
        None => None,
    };
    let mut found = false;
    for m in &n.ports {
        match &want {
            Some((p, proto)) if (m.pod_port, m.protocol.to_string()) == (*p, proto.clone()) => {
                println!("{}:{}", m.host_ip, m.host_port);
                found = true;
            }
            Some(_) => {}
            None => {
                println!("{}/{} -> {}:{}", m.pod_port, m.protocol, m.host_ip, m.host_port);
                found = true;
            }
        }
    }
    if let (Some(w), false) = (which, found) {
        return Err(Failure::Runtime(format!("no public port '{w}' published for {container}")));
    }
    Ok(0)
}

/// `ironpod top`.
pub fn top(root: &Path, container: &str) -> Result<i32, Failure> {
    let r = find(root, container)?;
    let procs = agent(&r)?.processes(&r.id).map_err(rt)?;
    println!("{:<8}{:<10}{:<10}{:<12}CMD", "UID", "PID", "PPID", "TIME");
    for p in procs {
        let s = p.cpu_ms / 1000;
        println!(
            "{:<8}{:<10}{:<10}{:<12}{}",
            p.uid,
            p.pid,
            p.ppid,
            format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
            p.cmd
        );
    }
    Ok(0)
}

fn bytes_human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.2}{}", U[i])
    }
}

/// Arguments of `ironpod stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// One sample, then exit (the only mode so far: required).
    #[arg(long = "no-stream", required = true)]
    no_stream: bool,
    /// Containers (default: every running one).
    containers: Vec<String>,
}

/// `ironpod stats --no-stream`.
pub fn stats(root: &Path, a: StatsArgs) -> Result<i32, Failure> {
    let _ = a.no_stream;
    let state = State::open(root).map_err(rt)?;
    let recs: Vec<Record> = if a.containers.is_empty() {
        state.list().map_err(rt)?.into_iter().filter(is_running).collect()
    } else {
        a.containers.iter().map(|c| find(root, c)).collect::<Result<_, _>>()?
    };
    let mut first = Vec::new();
    for r in &recs {
        let mut ag = agent(r)?;
        first.push(ag.stats(&r.id).map_err(rt)?);
    }
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "{:<14}{:<22}{:<9}{:<24}{:<9}{:<22}PIDS",
        "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "BLOCK I/O"
    );
    for (r, s0) in recs.iter().zip(first) {
        let s = agent(r)?.stats(&r.id).map_err(rt)?;
        let dt = s.sampled_usec.saturating_sub(s0.sampled_usec).max(1) as f64;
        let cpu = s.cpu_usage_usec.saturating_sub(s0.cpu_usage_usec) as f64 / dt * 100.0;
        let limit = s.memory_limit.unwrap_or(0);
        let mem_pct = if limit > 0 { s.memory_bytes as f64 / limit as f64 * 100.0 } else { 0.0 };
        println!(
            "{:<14}{:<22}{:<9}{:<24}{:<9}{:<22}{}",
            short(&r.id),
            r.name,
            format!("{cpu:.2}%"),
            format!(
                "{} / {}",
                bytes_human(s.memory_bytes),
                if limit > 0 { bytes_human(limit) } else { "unlimited".into() }
            ),
            format!("{mem_pct:.2}%"),
            format!("{} / {}", bytes_human(s.io_read_bytes), bytes_human(s.io_write_bytes)),
            s.pids
        );
    }
    Ok(0)
}

/// Arguments of `ironpod commit`.
#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Author.
    #[arg(short, long)]
    author: Option<String>,
    /// Container.
    container: String,
    /// New image name (REPOSITORY[:TAG]).
    image: String,
}

/// `ironpod commit`.
pub fn commit(root: &Path, a: CommitArgs) -> Result<i32, Failure> {
    let r = find(root, &a.container)?;
    let store = ImageStore::open(root).map_err(rt)?;
    let info = ironpod_images::CommitInfo {
        comment: a.message.clone(),
        author: a.author.clone(),
        created_by: format!("ironpod commit {}", short(&r.id)),
        config: ironpod_pods::commit::config_of(&r),
    };
    let s = ironpod_pods::commit::commit(root, &store, &r, &a.image, &info).map_err(rt)?;
    println!("{}", s.id);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        let t = ironpod_images::time::format_rfc3339(1_700_000_000);
        assert_eq!(parse_time(&t), Some(1_700_000_000));
        assert_eq!(parse_time("2026-11-25T02:03:04.123456789Z").map(|s| s % 60), Some(4));
        assert_eq!(parse_time("junk"), None);
        assert_eq!(human(0), "Less than a second");
        assert_eq!(human(5), "5 seconds");
        assert_eq!(human(90), "About a minute");
        assert_eq!(human(7200), "2 hours");
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert_eq!(parse_signal("10"), Ok(10));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("NOPE").is_err());
        assert_eq!(bytes_human(1536), "1.50KiB");
    }
}
