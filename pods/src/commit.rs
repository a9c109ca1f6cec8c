//! `commit`: a container's changes become a new image. The agent writes the container's
//! upper layer as a tar in the guest; the host reads it over vsock, checks it and stores it
//! on top of the base image. A stopped container's disks are read in a VM of their own
//! ([`Files`]): the host never mounts a guest filesystem.

use std::path::Path;
use std::time::Duration;

use ironpod_images::{CommitInfo, ImageStore, ImageSummary};
use ironpod_protocol::RequestBody;
use ironpod_state::Record;

use crate::error::PodError;
use crate::files::Files;
use crate::pod;
use crate::spec::RunOptions;

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
    files: &Files,
    store: &ImageStore,
    rec: &Record,
    new_ref: &str,
    info: &CommitInfo,
) -> Result<ImageSummary, PodError> {
    let mut ctl = files.agent(Duration::from_secs(600))?;
    let layer = ctl.commit(&rec.id).map_err(monitor_err)?;
    let stream = files
        .agent(Duration::from_secs(30))?
        .into_stream(RequestBody::OpenFile { path: layer.path.clone() })
        .map_err(monitor_err)?;
    // A layer holds the container's writable disk's files, plus tar's headers and padding.
    let opts: crate::spec::RunOptions = serde_json::from_str(&rec.options).unwrap_or_default();
    let max = opts.writable_disk_bytes().unwrap_or(crate::disks::WRITABLE_DISK_BYTES) * 2;
    let base = pod::image_digest(rec)?;
    let result = store.commit(&base, stream, layer.size, &layer.sha256, max, new_ref, info);
    let _ = ctl.remove_file(&layer.path);
    Ok(result?)
}

/// Commits a container (running or stopped: then its disks are read in a VM of their own)
/// as `new_ref`.
pub fn commit(
    root: &Path,
    store: &ImageStore,
    rec: &Record,
    new_ref: &str,
    info: &CommitInfo,
) -> Result<ImageSummary, PodError> {
    let files = Files::open(root, store, rec)?;
    read_layer(&files, store, rec, new_ref, info)
}
