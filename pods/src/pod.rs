//! Containers on the host: preparing one (image lease, layer disks, writable disk, spec,
//! record), telling whether its pod still runs, and removing it with the files it owns. A
//! CLI container is a pod of one: its own VM, run by its own monitor process (started with
//! [`crate::monitor_handle::MonitorHandle`], running [`crate::monitor::run`]).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use ironpod_images::{Digest, ImageStore};
use ironpod_state::{status, Record, State, StateError};
use ironpod_volumes::Source;

use crate::disks::make_writable_disk_fast;
use crate::error::{io, PodError};
use crate::launch::{Launch, Prepared};
use crate::paths::{container_dir, lease_holder, run_dir, writable_disk};
use crate::spec::{self, RunOptions};

/// A created container and the disks its pod boots with.
pub struct Created {
    /// Its record.
    pub record: Record,
    /// What the monitor needs to start the VM.
    pub launch: Launch,
    /// What it needs to create the container in it.
    pub prepared: Prepared,
    /// The container's disk lock, taken before its disks were handed to `disks_ready`:
    /// hold it until the pod runs (no VM of `docker cp` boots on the disks meanwhile).
    pub disk_lock: crate::files::DiskLock,
}

/// Creates a container: leases the image, builds its layer disks (once per layer), makes the
/// writable disk, calls `disks_ready` (the pod's VM can boot from here on, while the rest is
/// prepared), then builds the spec and records the container as `created`.
#[allow(clippy::too_many_arguments)]
pub fn create(
    root: &Path,
    store: &ImageStore,
    id: &str,
    image: &str,
    name: Option<&str>,
    opts: &RunOptions,
    auto_remove: bool,
    disks_ready: impl FnOnce(&Launch) -> Result<(), PodError>,
) -> Result<Created, PodError> {
    let id = id.to_string();
    let name = match name {
        Some(n) if !ironpod_ids::valid_name(n) => {
            return Err(PodError::State2(format!(
                "invalid container name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )))
        }
        Some(n) => n.to_string(),
        None => ironpod_ids::generated_name(&id),
    };
    let state = State::open(root)?;
    tracing::debug!("records open");
    if state.find(&name).is_ok_and(|r| r.name == name) {
        return Err(StateError::NameInUse(name).into());
    }
    tracing::info!(%id, "creating container");
    let digest = store.lease(&lease_holder(&id), image)?;
    let result = (|| {
        let layers = store.layer_disks_of(&digest)?;
        tracing::debug!("layer disks ready");
        let dir = container_dir(root, &id);
        fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let disk_lock = crate::files::DiskLock::take(root, &id)?;
        make_writable_disk_fast(root, &writable_disk(root, &id), opts.writable_disk_bytes()?)?;
        tracing::debug!("writable disk ready");
        let writable = writable_disk(root, &id);
        let launch = Launch { layers, writable };
        disks_ready(&launch)?;
        let config = store.config_of(&digest)?;
        // The image's HEALTHCHECK under what the container sets itself (or NONE).
        let mut opts = opts.clone();
        let image_check = store
            .healthcheck_of(&digest)?
            .and_then(|h| crate::health::HealthConfig::from_image(&h));
        opts.healthcheck = match (opts.healthcheck.take(), image_check) {
            (Some(mine), Some(image)) => Some(mine.over(&image)),
            (mine, image) => mine.or(image),
        };
        let opts = &opts;
        let spec = spec::build(&id, &config, opts)?;
        tracing::debug!("spec built");
        let mut rec = Record::new(
            &id,
            &name,
            image,
            &digest.to_string(),
            serde_json::to_string(opts).map_err(|e| io("options")(e.into()))?,
            serde_json::to_string(&spec).map_err(|e| io("spec")(e.into()))?,
        );
        rec.auto_remove = auto_remove;
        state.insert(&rec)?;
        tracing::info!(%id, "container created");
        crate::events::container(root, &rec, "create");
        let prepared = Prepared { options: opts.clone(), spec };
        Ok(Created { record: rec, launch, prepared, disk_lock })
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(container_dir(root, &id));
        let _ = store.release(&lease_holder(&id));
    }
    result
}

/// The image digest of a record.
pub fn image_digest(rec: &Record) -> Result<Digest, PodError> {
    Ok(Digest::parse(&rec.image_digest)?)
}

/// Whether the recorded monitor of a container still runs.
pub fn monitor_alive(rec: &Record) -> bool {
    rec.monitor_pid.is_some_and(|pid| ironpod_ids::process_alive(pid, rec.monitor_start))
}

/// Marks containers whose monitor vanished (killed, host rebooted) as exited with an error.
pub fn reconcile(state: &State, rec: Record) -> Result<Record, PodError> {
    let live = rec.status == status::RUNNING
        || (rec.status == status::CREATED && rec.monitor_pid.is_some());
    if live && !monitor_alive(&rec) {
        let first = state.set_exited(
            &rec.id,
            255,
            false,
            Some("the pod monitor exited unexpectedly"),
            &ironpod_images::time::now_rfc3339(),
        )?;
        if let (true, Some(root)) = (first, state.root()) {
            crate::events::emit(
                &root,
                &crate::events::container_event(&rec, "die").with("exitCode", "255"),
            );
        }
        if let Some(pid) = rec.vmm_pid {
            // The VMM dies with its monitor (parent-death signal); make sure.
            if ironpod_ids::process_start(pid).is_some() {
                // SAFETY: kill with integer arguments.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Its VMM's user id and jail (a tmpfs mounted in the run directory) are free now.
        if let Err(e) = crate::jail::PodIds::sweep_stale() {
            tracing::warn!(id = %rec.id, "free the VMM user ids of dead launchers: {e}");
        }
        let _ = fs::remove_dir_all(run_dir(&rec.id));
        // Its virtiofsd ends with the VMM's connection; the share's mounts stay until now.
        ironpod_volumes::share::teardown(&rec.id);
        // Its address frees itself (the lease's holder is gone); its namespace does not.
        let _ = ironpod_net::netns::remove(&ironpod_net::pod_namespace(&rec.id));
        return Ok(state.find(&rec.id)?);
    }
    Ok(rec)
}

/// Waits until the container is no longer running (or `timeout` passes).
pub fn wait_exited(root: &Path, id: &str, timeout: Option<Duration>) -> Result<Record, PodError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let state = State::open(root)?;
    loop {
        let rec = reconcile(&state, state.find(id)?)?;
        let live = rec.status == status::RUNNING
            || (rec.status == status::CREATED && rec.monitor_pid.is_some());
        if !live {
            return Ok(rec);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(rec);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to `timeout`) for a container's monitor to finish taking its pod down, then
/// kills what is left of it.
pub fn wait_monitor_gone(rec: &Record, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while monitor_alive(rec) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if monitor_alive(rec) {
        if let Some(pid) = rec.monitor_pid {
            // SAFETY: kill with integer arguments; the pid is the recorded, still-live monitor.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Removes a stopped container: its files, record and image lease. A monitor still taking
/// the pod down is waited for first.
pub fn remove(root: &Path, store: &ImageStore, id: &str) -> Result<(), PodError> {
    let state = State::open(root)?;
    let found = state.find(id).ok();
    if let Some(rec) = &found {
        let me = Some(std::process::id() as i32);
        if rec.status == status::EXITED && rec.monitor_pid != me {
            wait_monitor_gone(rec, Duration::from_secs(30));
        }
    }
    let dir = container_dir(root, id);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))?;
    }
    let _ = fs::remove_dir_all(run_dir(id));
    ironpod_volumes::share::teardown(id);
    // Normally gone with the monitor already (and its address lease ended with it).
    let _ = ironpod_net::netns::remove(&ironpod_net::pod_namespace(id));
    state.delete(id)?;
    if let Some(rec) = &found {
        crate::events::container(root, rec, "destroy");
    }
    store.release(&lease_holder(id))?;
    Ok(())
}

/// Short ids of the containers in `records` (running or not) that mount volume `name`.
pub fn volume_users(name: &str, records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| {
            serde_json::from_str::<RunOptions>(&r.options).is_ok_and(|o| {
                o.volumes.iter().any(|m| m.source == Source::Named(name.to_string()))
            })
        })
        .map(|r| r.id.chars().take(12).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_users_are_the_containers_that_mount_it() {
        let with = |id: &str, vols: &[&str]| {
            let opts = RunOptions {
                volumes: ironpod_volumes::parse_all(
                    &vols.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                )
                .unwrap(),
                ..Default::default()
            };
            let options = serde_json::to_string(&opts).unwrap();
            Record::new(&id.repeat(64), "c", "img", "sha256:00", options, "{}".into())
        };
        let records = [
            with("a", &["db:/var/lib/db"]),
            with("b", &["/srv/db:/db", "other:/o"]),
            with("c", &["db:/x:ro"]),
        ];
        assert_eq!(volume_users("db", &records), ["aaaaaaaaaaaa", "cccccccccccc"]);
        assert!(volume_users("srv", &records).is_empty(), "a host path is no named volume");
        let mut broken = with("d", &[]);
        broken.options = "not json".into();
        assert!(volume_users("db", &[broken]).is_empty());
    }
}
