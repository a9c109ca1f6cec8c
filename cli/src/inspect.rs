//! Container commands that look inside: inspect, port, top, stats; and commit.

use std::path::Path;
use std::time::Duration;

use ironpod_images::ImageStore;
use ironpod_net::NetworkSettings;
use ironpod_pods::paths;
use ironpod_state::{Record, State};

use crate::containers::{agent, find, is_running, rt, short};
use crate::Failure;

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
                    "RestartCount": r.restart.count,
                    "State": {
                        "Status": if r.restart.restarting && r.status == "exited" { "restarting" } else { r.status.as_str() },
                        "Running": is_running(&r),
                        "Restarting": r.restart.restarting && r.status == "exited",
                        "Health": r.health.as_deref().and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok()),
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
                        "Labels": opts["labels"],
                    },
                    "HostConfig": {
                        "AutoRemove": r.auto_remove,
                        "RestartPolicy": restart_policy(&opts),
                        "Memory": opts["memory"],
                        "NanoCpus": opts["cpus"].as_f64().map(|c| (c * 1e9) as u64),
                        "PidsLimit": opts["pids_limit"],
                        "ReadonlyRootfs": opts["read_only"],
                        "Privileged": opts["privileged"],
                        "NetworkMode": opts["network"].as_str().unwrap_or("bridge"),
                        "LogConfig": log_config(&opts),
                        "StorageOpt": key_values(&opts["storage_opt"]),
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
/// Docker's `HostConfig.LogConfig`: the rotating driver its `local` one is, and the options
/// the user gave (the defaults, 20m × 5, are the `local` driver's too).
fn log_config(opts: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "Type": "local", "Config": key_values(&opts["log_opt"]) })
}

/// Docker's `HostConfig.RestartPolicy` from the run options' `restart`.
fn restart_policy(opts: &serde_json::Value) -> serde_json::Value {
    let p: ironpod_pods::restart::RestartPolicy =
        serde_json::from_value(opts["restart"].clone()).unwrap_or_default();
    serde_json::json!({ "Name": p.name(), "MaximumRetryCount": p.max_retries() })
}

/// `["k=v", …]` as `{"k": "v", …}`.
fn key_values(list: &serde_json::Value) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    map.into()
}

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
            crate::terminal::printable(&p.cmd)
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
        "{:<14}{:<22}{:<9}{:<24}{:<9}{:<22}{:<6}HOST MEM / LIMIT",
        "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "BLOCK I/O", "PIDS"
    );
    for (r, s0) in recs.iter().zip(first) {
        let s = agent(r)?.stats(&r.id).map_err(rt)?;
        let dt = s.sampled_usec.saturating_sub(s0.sampled_usec).max(1) as f64;
        let cpu = s.cpu_usage_usec.saturating_sub(s0.cpu_usage_usec) as f64 / dt * 100.0;
        let limit = s.memory_limit.unwrap_or(0);
        let mem_pct = if limit > 0 { s.memory_bytes as f64 / limit as f64 * 100.0 } else { 0.0 };
        // The pod's VMM and virtiofsd, in the host cgroup named after the container.
        let host = match ironpod_pods::cgroup::PodCgroup::usage_of(&r.id) {
            Some(u) => format!("{} / {}", bytes_human(u.memory), bytes_human(u.memory_limit)),
            None => "-".into(),
        };
        println!(
            "{:<14}{:<22}{:<9}{:<24}{:<9}{:<22}{:<6}{}",
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
            s.pids,
            host
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

/// `ironpod diff CONTAINER`: how its files differ from its image, a line each (`A`
/// added, `C` changed, `D` deleted), as `docker diff` prints them. A stopped container's
/// disks are read in a VM of their own.
pub fn diff(root: &Path, container: &str) -> Result<i32, Failure> {
    let r = find(root, container)?;
    let store = ImageStore::open(root).map_err(rt)?;
    let files = ironpod_pods::files::Files::open(root, &store, &r).map_err(rt)?;
    for c in files.changes().map_err(rt)? {
        let k = match c.kind {
            ironpod_protocol::ChangeKind::Modified => 'C',
            ironpod_protocol::ChangeKind::Added => 'A',
            ironpod_protocol::ChangeKind::Deleted => 'D',
        };
        println!("{k} {}", c.path);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes_human(1536), "1.50KiB");
    }
}
