//! `commit`: a container's changes become a new image. The agent writes the container's
//! upper layer as a tar in the guest; the host reads it over vsock, checks it and stores it
//! on top of the base image. A stopped container's pod is booted again (without starting the
//! container) to read its writable disk: the host never mounts a guest filesystem.

use std::path::Path;
use std::time::Duration;

use ironpod_images::{CommitInfo, ImageStore, ImageSummary};
use ironpod_protocol::{CreateContainer, RequestBody, RootfsDisks};
use ironpod_state::{status, Record};
use ironpod_vmm::config::DiskConfig;

use crate::agent_client::AgentClient;
use crate::error::PodError;
use crate::spec::RunOptions;
use crate::vm::{RunningVm, VmSpec};
use crate::{paths, pod};

fn monitor_err(e: impl std::fmt::Display) -> PodError {
    PodError::Monitor(e.to_string())
}

/// The container's configuration that the new image keeps (Docker's commit does the same).
pub fn config_of(rec: &Record) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    let opts: RunOptions = serde_json::from_str(&rec.options).unwrap_or_default();
    let spec: serde_json::Value = serde_json::from_str(&rec.spec).unwrap_or_default();
    if let Some(env) = spec["process"]["env"].as_array() {
        m.insert("Env".into(), env.clone().into());
    }
    if !opts.command.is_empty() {
        m.insert("Cmd".into(), opts.command.clone().into());
    }
    if let Some(e) = &opts.entrypoint {
        let v: Vec<String> = if e.is_empty() { vec![] } else { vec![e.clone()] };
        m.insert("Entrypoint".into(), v.into());
    }
    if let Some(w) = &opts.workdir {
        m.insert("WorkingDir".into(), w.clone().into());
    }
    if let Some(u) = &opts.user {
        m.insert("User".into(), u.clone().into());
    }
    m
}

fn read_layer(
    uds: &Path,
    id: &str,
    store: &ImageStore,
    rec: &Record,
    new_ref: &str,
    info: &CommitInfo,
) -> Result<ImageSummary, PodError> {
    let mut ctl = AgentClient::open(uds, Duration::from_secs(600)).map_err(monitor_err)?;
    let layer = ctl.commit(id).map_err(monitor_err)?;
    let stream = AgentClient::open(uds, Duration::from_secs(30))
        .and_then(|c| c.into_stream(RequestBody::OpenFile { path: layer.path.clone() }))
        .map_err(monitor_err)?;
    // A layer holds the container's writable disk's files, plus tar's headers and padding.
    let opts: crate::spec::RunOptions = serde_json::from_str(&rec.options).unwrap_or_default();
    let max = opts.writable_disk_bytes().unwrap_or(crate::disks::WRITABLE_DISK_BYTES) * 2;
    let base = pod::image_digest(rec)?;
    let result = store.commit(&base, stream, layer.size, &layer.sha256, max, new_ref, info);
    let _ = ctl.remove_file(&layer.path);
    Ok(result?)
}

/// Commits a container (running or stopped) as `new_ref`.
pub fn commit(
    root: &Path,
    store: &ImageStore,
    rec: &Record,
    new_ref: &str,
    info: &CommitInfo,
) -> Result<ImageSummary, PodError> {
    if rec.status == status::RUNNING {
        let uds = rec.vsock.clone().ok_or_else(|| monitor_err("the running pod has no vsock"))?;
        return read_layer(Path::new(&uds), &rec.id, store, rec, new_ref, info);
    }
    // Stopped: boot the pod's disks in a VM of its own and read the upper layer there.
    let layers = store.layer_disks_of(&pod::image_digest(rec)?)?;
    let rw = paths::writable_disk(root, &rec.id);
    if !rw.is_file() {
        return Err(PodError::State2(format!("container {} has no writable disk", rec.id)));
    }
    let mut spec = VmSpec::with_defaults().map_err(monitor_err)?;
    spec.disks = layers
        .iter()
        .map(|p| DiskConfig { path: p.clone(), read_only: true })
        .chain(std::iter::once(DiskConfig { path: rw.clone(), read_only: false }))
        .collect();
    let mut vm = RunningVm::start(&spec).map_err(monitor_err)?;
    let mut ctl = vm.wait_agent(Duration::from_secs(120)).map_err(monitor_err)?;
    let oci: oci_spec::runtime::Spec = serde_json::from_str(&rec.spec).map_err(monitor_err)?;
    ctl.create_container(CreateContainer {
        id: rec.id.clone(),
        spec: Box::new(oci),
        rootfs: RootfsDisks {
            layers: layers.iter().map(|p| paths::disk_serial(p)).collect(),
            writable: paths::disk_serial(&rw),
        },
        stdin: false,
    })
    .map_err(monitor_err)?;
    let uds = vm.vsock_path().to_path_buf();
    let result = read_layer(&uds, &rec.id, store, rec, new_ref, info);
    let _ = ctl.delete_container(&rec.id, false);
    let _ = vm.shutdown(&mut ctl, Duration::from_secs(10));
    result
}
