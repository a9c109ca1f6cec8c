//! `ironpod run`: create a container (pulling its image if needed), start its pod monitor,
//! and — unless detached — attach to it until it ends, exiting with its exit code.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use ironpod_images::{ImageError, ImageStore, RegistryOptions};
use ironpod_pods::attach::{self, ExitReport, Frame};
use ironpod_pods::launch::pod_shape;
use ironpod_pods::monitor_handle::MonitorHandle;
use ironpod_pods::spec::RunOptions;
use ironpod_pods::{paths, pod, PodError};

use crate::terminal;
use crate::Failure;

/// When to pull the image.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull if not present.
    Missing,
    /// Always pull.
    Always,
    /// Never pull.
    Never,
}

/// Arguments of `ironpod run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Restart policy: no, on-failure[:N], always, unless-stopped (kept by `ironpod system
    /// service`, which restarts the container when it ends).
    #[arg(long, default_value = "no")]
    restart: ironpod_pods::restart::RestartPolicy,
    /// Command that probes the container's health (run by `sh -c` in it).
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between health probes (like 30s, 1m30s).
    #[arg(long, value_parser = ironpod_pods::health::parse_duration)]
    health_interval: Option<u64>,
    /// Longest a health probe may run.
    #[arg(long, value_parser = ironpod_pods::health::parse_duration)]
    health_timeout: Option<u64>,
    /// Failed probes in a row that make it unhealthy.
    #[arg(long)]
    health_retries: Option<u32>,
    /// Time after start when failed probes do not count.
    #[arg(long, value_parser = ironpod_pods::health::parse_duration)]
    health_start_period: Option<u64>,
    /// No healthcheck.
    #[arg(long)]
    no_healthcheck: bool,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open and pass it to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// Environment variable (K=V, or K to pass the caller's value).
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// File of environment variables (K=V lines).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// User: UID[:GID] or NAME[:GROUP].
    #[arg(short, long)]
    user: Option<String>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// CPUs (fractions allowed).
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long, value_parser = ironpod_pods::spec::parse_size)]
    memory: Option<u64>,
    /// Largest number of processes (-1: unlimited).
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
    /// Host name (default: the short container id).
    #[arg(long)]
    hostname: Option<String>,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Every capability, nothing masked.
    #[arg(long)]
    privileged: bool,
    /// Add a capability.
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined, seccomp=PROFILE.json, no-new-privileges.
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Network to join: a network's name (`ironpod network ls`), `bridge` (the default) or
    /// `none` (loopback only).
    #[arg(long, visible_alias = "net")]
    network: Option<String>,
    /// Publish a pod port on the host: [IP:][HOSTPORT:]PODPORT[/tcp|udp] (IP defaults to
    /// 127.0.0.1; no HOSTPORT picks a free one).
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    publish: Vec<String>,
    /// DNS server for the container's /etc/resolv.conf (replaces the host's).
    #[arg(long)]
    dns: Vec<String>,
    /// Extra /etc/hosts entry NAME:IP.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS] (size=, mode=, uid=, gid=, [no]exec, …).
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// Mount a volume: HOSTDIR:PATH[:ro|rw] (a host directory, made if missing) or
    /// NAME:PATH[:ro|rw] (a named volume, made on first use; see `ironpod volume`).
    #[arg(short = 'v', long = "volume", value_name = "SOURCE:PATH[:ro]")]
    volume: Vec<String>,
    /// Storage options: size=SIZE of the container's writable disk (default 8g; sparse, so
    /// only what the container writes takes host disk, and never more than SIZE).
    #[arg(long = "storage-opt", value_name = "size=SIZE")]
    storage_opt: Vec<String>,
    /// Bound the container's log: max-size=SIZE (per file, default 20m; -1: unbounded),
    /// max-file=N (files kept, default 5).
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    log_opt: Vec<String>,
    /// Another name the container answers to on its network; repeatable.
    #[arg(long = "network-alias", value_name = "NAME")]
    network_alias: Vec<String>,
    /// Set a label on the container (KEY=VALUE, or KEY for an empty value); repeatable.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// When to pull the image.
    #[arg(long, value_enum, default_value = "missing")]
    pull: PullPolicy,
    /// Boot the pod's VM instead of restoring it from the pod template of its size (also:
    /// IRONPOD_NO_TEMPLATE=1). Pods with volumes always boot.
    #[arg(long = "no-template")]
    no_template: bool,
    /// Image.
    image: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn read_env_files(files: &[PathBuf]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("open {}: {e}", f.display()))?;
        for line in text.lines() {
            let l = line.trim_start();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.starts_with('=') {
                return Err(format!("{}: invalid line {line:?}", f.display()));
            }
            out.push(l.to_string());
        }
    }
    Ok(out)
}

/// Makes sure the image is present according to the pull policy.
pub fn ensure_image(store: &ImageStore, image: &str, policy: PullPolicy) -> Result<(), String> {
    let present = match store.resolve(image) {
        Ok(_) => true,
        Err(ImageError::NotFound(_)) => false,
        Err(e) => return Err(e.to_string()),
    };
    match (policy, present) {
        (PullPolicy::Never, false) => Err(format!("No such image: {image}")),
        (PullPolicy::Missing, true) | (PullPolicy::Never, true) => Ok(()),
        _ => {
            if !present {
                eprintln!("Unable to find image '{image}' locally");
            }
            let opts =
                RegistryOptions { platform: Some("linux/amd64".into()), ..Default::default() };
            store.pull(image, &opts).map(|_| ()).map_err(|e| e.to_string())
        }
    }
}

/// Parses `-p` values into the options, then checks them all before anything starts.
fn check_network(root: &Path, mut o: RunOptions, publish: &[String]) -> Result<RunOptions, String> {
    for p in publish {
        o.publish.extend(ironpod_net::parse_publish(p).map_err(|e| e.to_string())?);
    }
    ironpod_pods::lifecycle::check_options(root, o)
}

/// `--health-*` and `--no-healthcheck` as a healthcheck (`None`: none asked for).
fn healthcheck(a: &RunArgs) -> Result<Option<ironpod_pods::health::HealthConfig>, String> {
    let tuned = a.health_interval.is_some()
        || a.health_timeout.is_some()
        || a.health_retries.is_some()
        || a.health_start_period.is_some();
    if a.no_healthcheck {
        if a.health_cmd.is_some() || tuned {
            return Err("--no-healthcheck conflicts with --health-* options".into());
        }
        return Ok(Some(ironpod_pods::health::HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    if a.health_cmd.is_none() && !tuned {
        return Ok(None);
    }
    // Without --health-cmd the tuning applies to the image's HEALTHCHECK (as Docker's).
    let cfg = ironpod_pods::health::HealthConfig {
        test: a.health_cmd.iter().flat_map(|c| ["CMD-SHELL".to_string(), c.clone()]).collect(),
        interval_ns: a.health_interval.unwrap_or(0),
        timeout_ns: a.health_timeout.unwrap_or(0),
        retries: a.health_retries.unwrap_or(0),
        start_period_ns: a.health_start_period.unwrap_or(0),
    };
    cfg.validate()?;
    Ok(Some(cfg))
}

/// `ironpod run`.
pub fn run(root: &Path, a: RunArgs) -> Result<i32, Failure> {
    let rt = |e: String| Failure::Runtime(e);
    let mut env = read_env_files(&a.env_file).map_err(rt)?;
    env.extend(a.env.iter().cloned());
    let opts = RunOptions {
        command: a.command.clone(),
        entrypoint: a.entrypoint.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        tty: a.tty,
        interactive: a.interactive,
        cpus: a.cpus,
        memory: a.memory,
        pids_limit: a.pids_limit,
        hostname: a.hostname.clone(),
        read_only: a.read_only,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        security_opt: a.security_opt.clone(),
        network: a.network.clone(),
        publish: Vec::new(),
        dns: a.dns.clone(),
        add_host: a.add_host.clone(),
        tmpfs: a.tmpfs.clone(),
        volumes: ironpod_volumes::parse_all(&a.volume).map_err(|e| rt(e.to_string()))?,
        storage_opt: a.storage_opt.clone(),
        log_opt: a.log_opt.clone(),
        labels: parse_labels(&a.label),
        network_aliases: a.network_alias.clone(),
        restart: a.restart,
        healthcheck: healthcheck(&a).map_err(rt)?,
    };
    if a.rm && opts.restart != ironpod_pods::restart::RestartPolicy::No {
        return Err(rt("conflicting options: --restart and --rm".into()));
    }
    let opts = check_network(root, opts, &a.publish).map_err(rt)?;
    // The monitor process starts while the image is looked up and the disks are prepared;
    // it boots the VM as soon as they are, while the spec and the record are made.
    let id = ironpod_ids::new_id().map_err(|e| rt(e.to_string()))?;
    // Host directories are made (and named volumes created) now: the monitor starts their
    // server with the VMM.
    let volumes = ironpod_volumes::resolve(root, &opts.volumes).map_err(|e| rt(e.to_string()))?;
    let mut shape = pod_shape(&opts, volumes);
    shape.template &= !a.no_template;
    if shape.template && !shape.volumes.is_empty() {
        // A template with a share has a layer slot fewer: only an image that is here and
        // fits its slots starts from one (the others boot).
        let layers = ImageStore::open(root)
            .and_then(|s| s.inspect(&a.image))
            .map(|d| d.manifest_json.layers().len());
        shape.template = layers.is_ok_and(|n| shape.template_fits(n));
    }
    let mut monitor =
        MonitorHandle::spawn(root, &id, &shape, !a.detach).map_err(|e| rt(e.to_string()))?;
    tracing::debug!("monitor spawned");
    let store = ImageStore::open(root).map_err(|e| rt(e.to_string()))?;
    tracing::debug!("image store open");
    ensure_image(&store, &a.image, a.pull).map_err(rt)?;
    tracing::debug!("image present");
    let created =
        pod::create(root, &store, &id, &a.image, a.name.as_deref(), &opts, a.rm, |launch| {
            monitor.boot(launch)
        })
        .map_err(|e| rt(e.to_string()))?;
    let rec = &created.record;
    drop(store);
    // Block the relayed signals before any thread starts, so none of them kills us.
    let signals = (!a.detach).then(terminal::SignalRelay::start);
    let launched = monitor.launch(&created.prepared);
    // Running (or not started): its files are reached through its agent (or a VM of
    // their own) from here on.
    drop(created.disk_lock);
    if let Err(e) = launched {
        if a.rm {
            if let Ok(store) = ImageStore::open(root) {
                let _ = pod::remove(root, &store, &rec.id);
            }
        }
        if let PodError::Start { code, message } = &e {
            eprintln!("ironpod: {message}");
            return Ok(*code);
        }
        return Err(rt(e.to_string()));
    }
    if a.detach {
        println!("{}", rec.id);
        return Ok(0);
    }
    let signals = signals.unwrap_or_else(terminal::SignalRelay::start);
    let report = attach_to(&rec.id, a.interactive, a.tty, signals).map_err(rt)?;
    if let Some(e) = &report.error {
        eprintln!("ironpod: {e}");
    }
    Ok(report.code)
}

/// `ironpod attach CONTAINER`: relays a running container's stdio (stdin too when it was
/// started with `-i`) until it ends; exits with its exit code.
pub fn attach(root: &Path, container: &str) -> Result<i32, Failure> {
    let state = ironpod_state::State::open(root).map_err(|e| Failure::Runtime(e.to_string()))?;
    let rec = state.find(container).map_err(|e| Failure::Runtime(e.to_string()))?;
    let rec = pod::reconcile(&state, rec).map_err(|e| Failure::Runtime(e.to_string()))?;
    if rec.status != ironpod_state::status::RUNNING {
        return Err(Failure::Runtime(format!("container {container} is not running")));
    }
    let opts: RunOptions = serde_json::from_str(&rec.options).unwrap_or_default();
    let signals = terminal::SignalRelay::start();
    let report =
        attach_to(&rec.id, opts.interactive, opts.tty, signals).map_err(Failure::Runtime)?;
    if let Some(e) = &report.error {
        eprintln!("ironpod: {e}");
    }
    Ok(report.code)
}

/// Attaches to a container's monitor and relays stdio until the container ends.
pub fn attach_to(
    id: &str,
    interactive: bool,
    tty: bool,
    signals: terminal::SignalRelay,
) -> Result<ExitReport, String> {
    let sock = paths::attach_socket(id);
    let mut conn =
        UnixStream::connect(&sock).map_err(|e| format!("attach to {}: {e}", sock.display()))?;
    attach::write(&mut conn, &Frame::Hello).map_err(|e| format!("attach: {e}"))?;
    let local_tty = tty && terminal::is_tty(0);
    let _raw = if local_tty { terminal::RawMode::enter(0).ok() } else { None };
    // Signals go to the container (Docker's sig-proxy); a window change is a resize.
    if let Ok(mut w) = conn.try_clone() {
        if tty {
            if let Some((rows, cols)) = terminal::size(0).or_else(|| terminal::size(1)) {
                let _ = attach::write(&mut w, &Frame::Resize { rows, cols });
            }
        }
        std::thread::spawn(move || {
            for sig in signals {
                let f = if sig == libc::SIGWINCH {
                    match terminal::size(0).or_else(|| terminal::size(1)) {
                        Some((rows, cols)) => Frame::Resize { rows, cols },
                        None => continue,
                    }
                } else {
                    Frame::Signal(sig)
                };
                if attach::write(&mut w, &f).is_err() {
                    return;
                }
            }
        });
    }
    // Input flows once the program runs (nothing is lost: the stream is open by then).
    let mut stdin_writer = if interactive { conn.try_clone().ok() } else { None };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    loop {
        match attach::read(&mut conn) {
            Ok(Some(Frame::Stdout(d))) => {
                let _ = out.write_all(&d);
                let _ = out.flush();
            }
            Ok(Some(Frame::Stderr(d))) => {
                let _ = err.write_all(&d);
            }
            Ok(Some(Frame::Exit(r))) => return Ok(r),
            Ok(Some(Frame::Started)) => {
                if let Some(mut w) = stdin_writer.take() {
                    std::thread::spawn(move || {
                        let mut stdin = std::io::stdin().lock();
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match stdin.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if attach::write(&mut w, &Frame::Stdin(buf[..n].to_vec()))
                                        .is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                        }
                        let _ = attach::write(&mut w, &Frame::StdinClose);
                    });
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                return Err("the pod monitor went away before the container ended".into());
            }
        }
    }
}

/// `--label KEY=VALUE` (or `KEY` for an empty value) arguments as a map.
pub fn parse_labels(labels: &[String]) -> std::collections::BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}
