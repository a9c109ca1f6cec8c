//! Starting a created container, and signalling, stopping and waiting for running ones: what
//! every front end (the CLI, the Docker API service) does to a container after it exists.

use std::path::Path;
use std::time::Duration;

use ironpod_images::ImageStore;
use ironpod_protocol::ProcessRef;
use ironpod_state::{status, Record, State};

use crate::agent_client::AgentClient;
use crate::error::PodError;
use crate::launch::{pod_shape, Launch, Prepared};
use crate::monitor_handle::MonitorHandle;
use crate::paths::writable_disk;
use crate::pod;
use crate::spec::RunOptions;

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

/// Checks run options before anything starts (the network exists and its name is made
/// canonical; ports only with a network; `--dns`, `--add-host`, `--tmpfs`, `--log-opt` and
/// `--storage-opt` values parse), as every front end must.
pub fn check_options(root: &Path, mut o: RunOptions) -> Result<RunOptions, String> {
    crate::logs::LogLimits::parse(&o.log_opt)?;
    o.writable_disk_bytes().map_err(|e| e.to_string())?;
    for t in &o.tmpfs {
        crate::spec::tmpfs_mount(t).map_err(|e| e.to_string())?;
    }
    match o.network.as_deref() {
        Some("host") => {
            return Err("--network host is not supported: a pod runs in its own VM and cannot \
                        share the host's network stack (publish ports with -p instead)"
                .into())
        }
        Some(n) if n.starts_with("container:") => {
            return Err("--network container:… is not supported: run the containers in one pod \
                        (the containerd shim does)"
                .into())
        }
        _ => {}
    }
    match o.network_name() {
        Some(name) => {
            let store = ironpod_net::NetworkStore::open(root).map_err(|e| e.to_string())?;
            let net = store.find(name).map_err(|e| e.to_string())?;
            o.network = Some(net.name);
        }
        None if !o.publish.is_empty() => {
            return Err("a pod without a network (--network none) cannot publish ports".into())
        }
        None => {}
    }
    if !o.network_aliases.is_empty() && o.network_name() == Some(ironpod_net::DEFAULT_NETWORK) {
        return Err("network-scoped aliases are supported only on user-defined networks \
                    (--network NAME)"
            .into());
    }
    for a in &o.network_aliases {
        if !ironpod_ids::valid_name(a) {
            return Err(format!("invalid network alias {a:?}"));
        }
    }
    if o.network_name().is_none() && !o.network_aliases.is_empty() {
        return Err("a pod without a network (--network none) cannot have network aliases".into());
    }
    for d in &o.dns {
        d.parse::<std::net::IpAddr>()
            .map_err(|_| format!("invalid --dns {d:?}: not an IP address"))?;
    }
    for h in &o.add_host {
        ironpod_net::files::parse_add_host(h)?;
    }
    Ok(o)
}

/// Returns once the end of container `id`, seen in its record, is in the event log too:
/// its monitor records the end and logs `die` under [`crate::paths::exit_lock`], so a
/// client's `wait` never returns before `events` can show the `die` (as with Docker).
pub fn exit_logged(id: &str) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(crate::paths::exit_lock(id)) {
        // SAFETY: f is an open descriptor; flock takes no pointers. Released on close.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) };
    }
}

/// Whether the container's pod runs (or is starting: created with a monitor).
pub fn is_live(r: &Record) -> bool {
    r.status == status::RUNNING || (r.status == status::CREATED && r.monitor_pid.is_some())
}

/// A session with a running container's agent.
pub fn agent(r: &Record) -> Result<AgentClient, PodError> {
    let uds = r
        .vsock
        .as_deref()
        .filter(|_| r.status == status::RUNNING)
        .ok_or_else(|| PodError::NotRunning(r.id.chars().take(12).collect()))?;
    AgentClient::open(Path::new(uds), Duration::from_secs(30))
        .map_err(|e| PodError::Agent(e.to_string()))
}

/// Sends `signal` to the container's init process. A signal that ends it (KILL, TERM, INT,
/// QUIT or its stop signal) counts as a user's stop: its restart policy leaves it stopped.
pub fn kill(root: &Path, r: &Record, signal: i32) -> Result<(), PodError> {
    if r.status != status::RUNNING && is_restarting(root, &r.id) {
        // Waiting to be restarted by its policy: a kill cancels that (as Docker's does).
        State::open(root)?.set_manually_stopped(&r.id, true)?;
        return Ok(());
    }
    let mut a = agent(r)?;
    let ending = [libc::SIGKILL, libc::SIGTERM, libc::SIGINT, libc::SIGQUIT];
    if ending.contains(&signal) || signal == stop_signal(root, r) {
        State::open(root)?.set_manually_stopped(&r.id, true)?;
    }
    a.signal(&ProcessRef::init(&r.id), signal, false)
        .map_err(|e| PodError::Agent(e.to_string()))?;
    let e = crate::events::container_event(r, "kill").with("signal", signal.to_string());
    crate::events::emit(root, &e);
    Ok(())
}

/// Whether container `id` waits to be restarted by its policy.
pub fn is_restarting(root: &Path, id: &str) -> bool {
    State::open(root).and_then(|s| s.restart_state(id)).is_ok_and(|rs| rs.restarting)
}

fn paused_marker(id: &str) -> std::path::PathBuf {
    crate::paths::run_dir(id).join("paused")
}

/// Whether the container's processes are frozen (`pause`).
pub fn is_paused(id: &str) -> bool {
    paused_marker(id).exists()
}

/// Freezes (`on`) or thaws the container's processes (the guest's cgroup freezer).
pub fn pause(root: &Path, r: &Record, on: bool) -> Result<(), PodError> {
    agent(r)?.freeze(&r.id, on).map_err(|e| PodError::Agent(e.to_string()))?;
    let marker = paused_marker(&r.id);
    if on {
        std::fs::write(&marker, b"").map_err(crate::error::io(format!("{}", marker.display())))?;
    } else {
        let _ = std::fs::remove_file(&marker);
    }
    crate::events::container(root, r, if on { "pause" } else { "unpause" });
    Ok(())
}

/// Gives the container another name (which must be free).
pub fn rename(root: &Path, r: &Record, name: &str) -> Result<(), PodError> {
    if !ironpod_ids::valid_name(name) {
        return Err(PodError::State2(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    State::open(root)?.rename(&r.id, name)?;
    let mut renamed = r.clone();
    renamed.name = name.to_string();
    let e =
        crate::events::container_event(&renamed, "rename").with("oldName", format!("/{}", r.name));
    crate::events::emit(root, &e);
    Ok(())
}

/// The image's stop signal (`STOPSIGNAL`), else SIGTERM.
pub fn stop_signal(root: &Path, r: &Record) -> i32 {
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

/// Stops a running container: its stop signal, then SIGKILL after `timeout`. A container
/// that does not run is left as it is.
pub fn stop(root: &Path, r: &Record, timeout: Duration) -> Result<(), PodError> {
    // Stopped by a user: its restart policy leaves it stopped (a pending restart is off).
    State::open(root)?.set_manually_stopped(&r.id, true)?;
    if r.status != status::RUNNING {
        return Ok(());
    }
    let mut a = agent(r)?;
    let init = ProcessRef::init(&r.id);
    if is_paused(&r.id) {
        // A frozen process cannot take its stop signal: thawed first (as Docker does).
        pause(root, r, false)?;
    }
    let signal = stop_signal(root, r);
    let _ = a.signal(&init, signal, false);
    let e = crate::events::container_event(r, "kill").with("signal", signal.to_string());
    crate::events::emit(root, &e);
    let after = pod::wait_exited(root, &r.id, Some(timeout))?;
    if after.status == status::RUNNING {
        let _ = a.signal(&init, libc::SIGKILL, true);
        let after = pod::wait_exited(root, &r.id, Some(Duration::from_secs(30)))?;
        if after.status == status::RUNNING {
            return Err(PodError::Monitor(format!(
                "container {} did not stop",
                r.id.chars().take(12).collect::<String>()
            )));
        }
    }
    crate::events::container(root, r, "stop");
    Ok(())
}

/// Starts a container that was created without a pod (Docker's create, then start), or
/// one that exited (its changes kept on its writable disk, its log appended to): its
/// monitor boots the VM from the container's disks and runs the recorded spec.
/// `wait_attach`: the program starts only once a client attached to the monitor. A user's
/// start: its restart policy applies again, with a new count.
pub fn start(root: &Path, r: &Record, wait_attach: bool) -> Result<(), PodError> {
    State::open(root)?.set_manually_stopped(&r.id, false)?;
    start_pod(root, r, wait_attach)
}

/// Starts an exited container again for its restart policy: its restart `count` so far.
/// Returns false when a user's stop, start or removal came first (nothing is left running).
pub fn start_by_policy(root: &Path, r: &Record, count: u32) -> Result<bool, PodError> {
    pod::wait_monitor_gone(r, Duration::from_secs(30));
    let state = State::open(root)?;
    // Atomically: only if the restart is still pending and no user stopped it meanwhile.
    if !state.rearm_restart(&r.id)? {
        state.set_restarting(&r.id, false)?;
        return Ok(false);
    }
    let started = state
        .set_restart_count(&r.id, count)
        .map_err(PodError::from)
        .and_then(|()| state.find(&r.id).map_err(PodError::from))
        .and_then(|rec| start_pod(root, &rec, false));
    state.set_restarting(&r.id, false)?;
    if let Err(e) = started {
        // Failed before a pod monitor took it (which would record its end itself): it is
        // exited again, and its `die` lets the policy try again after the back-off.
        let rec = state.find(&r.id)?;
        if rec.status == status::CREATED && rec.monitor_pid.is_none() {
            let now = ironpod_images::time::now_rfc3339();
            if state.set_exited(&r.id, 255, false, Some(&e.to_string()), &now)? {
                let die = crate::events::container_event(&rec, "die").with("exitCode", "255");
                crate::events::emit(root, &die);
            }
        }
        return Err(e);
    }
    // A user's stop during the boot found nothing running yet: it takes effect now.
    if state.restart_state(&r.id)?.manually_stopped {
        let rec = state.find(&r.id)?;
        stop(root, &rec, Duration::from_secs(10))?;
        return Ok(false);
    }
    Ok(true)
}

fn start_pod(root: &Path, r: &Record, wait_attach: bool) -> Result<(), PodError> {
    let rearmed;
    let r = if r.status == status::EXITED {
        // Started again: the same disks (its changes kept) in a new pod, once the last pod's
        // monitor has cleaned up after it.
        if r.auto_remove {
            return Err(PodError::State2(format!(
                "container {} is removed when it exits: it cannot start again",
                r.id.chars().take(12).collect::<String>()
            )));
        }
        pod::wait_monitor_gone(r, Duration::from_secs(30));
        let state = State::open(root)?;
        if !state.rearm(&r.id)? {
            return Err(PodError::State2(format!(
                "container {} changed while it was started",
                r.id.chars().take(12).collect::<String>()
            )));
        }
        rearmed = state.find(&r.id)?;
        &rearmed
    } else {
        r
    };
    if r.status != status::CREATED || r.monitor_pid.is_some() {
        return Err(PodError::State2(format!(
            "container {} was started already",
            r.id.chars().take(12).collect::<String>()
        )));
    }
    let options: RunOptions = serde_json::from_str(&r.options)
        .map_err(|e| PodError::State2(format!("container {}: run options: {e}", r.id)))?;
    let spec = serde_json::from_str(&r.spec)
        .map_err(|e| PodError::State2(format!("container {}: spec: {e}", r.id)))?;
    let store = ImageStore::open(root)?;
    let digest = pod::image_digest(r)?;
    let layers = store.layer_disks_of(&digest)?;
    let volumes = ironpod_volumes::resolve(root, &options.volumes)
        .map_err(|e| PodError::State2(e.to_string()))?;
    let mut shape = pod_shape(&options, volumes);
    if shape.template && !shape.volumes.is_empty() {
        // A template with a share has a layer slot fewer (as `run` decides).
        shape.template = shape.template_fits(layers.len());
    }
    drop(store);
    // Not while a VM reads its files (docker cp, commit of a stopped container), nor while
    // another start boots it: under the lock, it must still be waiting for a pod.
    let _disk = crate::files::DiskLock::take(root, &r.id)?;
    let now = State::open(root)?.find(&r.id)?;
    if now.status != status::CREATED || now.monitor_pid.is_some() {
        return Err(PodError::State2(format!(
            "container {} was started already",
            r.id.chars().take(12).collect::<String>()
        )));
    }
    let mut monitor = MonitorHandle::spawn(root, &r.id, &shape, wait_attach)?;
    monitor.boot(&Launch { layers, writable: writable_disk(root, &r.id) })?;
    monitor.launch(&Prepared { options, spec })
}

/// Puts a container that has not started yet on network `network` (`None`: no network)
/// with `aliases` there. A pod has one network card, fixed when its VM starts: a started
/// container cannot change networks, and one already on a network of the user's choosing
/// must leave it first; one on the default network moves.
pub fn set_network(
    root: &Path,
    r: &Record,
    network: Option<&str>,
    aliases: Vec<String>,
) -> Result<Record, PodError> {
    let short = r.id.chars().take(12).collect::<String>();
    let fixed = || {
        PodError::State2(format!(
            "container {short} has started: a pod's network card is fixed when its VM starts \
             (connect or disconnect networks between create and start)"
        ))
    };
    if r.status != status::CREATED || r.monitor_pid.is_some() {
        return Err(fixed());
    }
    let mut o: RunOptions = serde_json::from_str(&r.options)
        .map_err(|e| PodError::State2(format!("container {}: run options: {e}", r.id)))?;
    if let (Some(new), Some(old)) = (network, o.network_name()) {
        let store =
            ironpod_net::NetworkStore::open(root).map_err(|e| PodError::State2(e.to_string()))?;
        let new = store.find(new).map_err(|e| PodError::State2(e.to_string()))?.name;
        if old != new && old != ironpod_net::DEFAULT_NETWORK {
            return Err(PodError::State2(format!(
                "container {short} is on network {old}: a pod has one network card \
                 (disconnect it from {old} first)"
            )));
        }
    }
    o.network = Some(network.unwrap_or("none").to_string());
    o.network_aliases = aliases;
    if !o.publish.is_empty() && network.is_none() {
        return Err(PodError::State2(format!(
            "container {short} publishes ports: it cannot leave its network"
        )));
    }
    let o = check_options(root, o).map_err(PodError::State2)?;
    let text = serde_json::to_string(&o)
        .map_err(|e| PodError::State2(format!("container {}: run options: {e}", r.id)))?;
    let state = State::open(root)?;
    if !state.set_options_while_created(&r.id, &text)? {
        return Err(fixed());
    }
    Ok(state.find(&r.id)?)
}

/// Stops the container if it runs (as [`stop`]), then starts it again (as [`start`]).
pub fn restart(root: &Path, r: &Record, timeout: Duration) -> Result<(), PodError> {
    stop(root, r, timeout)?;
    let r = find(root, &r.id)?;
    if is_live(&r) {
        // A pod still starting (created, monitor up) is left to finish.
        return Ok(());
    }
    start(root, &r, false)?;
    crate::events::container(root, &r, "restart");
    Ok(())
}

/// Waits until the container no longer runs; returns its record then.
pub fn wait(root: &Path, id: &str, timeout: Option<Duration>) -> Result<Record, PodError> {
    pod::wait_exited(root, id, timeout)
}

/// The record of `key` (name, id or id prefix), brought up to date.
pub fn find(root: &Path, key: &str) -> Result<Record, PodError> {
    let state = State::open(root)?;
    let r = state.find(key)?;
    pod::reconcile(&state, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert_eq!(parse_signal("SIGUSR1"), Ok(10));
        assert_eq!(parse_signal("10"), Ok(10));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn starting_needs_a_created_container() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Record::new("a", "n", "demo", "sha256:00", "{}".into(), "{}".into());
        r.status = status::EXITED.into();
        assert!(matches!(start(d.path(), &r, false), Err(PodError::State2(_))));
        r.status = status::CREATED.into();
        r.monitor_pid = Some(1);
        assert!(matches!(start(d.path(), &r, false), Err(PodError::State2(_))));
        assert!(is_live(&r));
        assert!(matches!(kill(d.path(), &r, 9), Err(PodError::NotRunning(_))));
    }
}
