//! `commit`: a container's changes become a new image. The agent writes the container's
//! upper layer as a tar in the guest; the host reads it over vsock, checks it and stores it
//! on top of the base image. A stopped container's disks are read in a VM of their own
//! ([`Files`]): the host never mounts a guest filesystem.

use std::path::Path;
use std::time::Duration;

use ironpod_images::{CommitInfo, ImageStore, ImageSummary, ReceivedLayer};
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

/// Has the agent write the container's changes as a layer tar, and hands `take` the stream
/// of it with its announced size and digest and the most it may be; the guest's file goes
/// afterwards, whatever `take` did.
fn with_layer<T>(
    files: &Files,
    rec: &Record,
    take: impl FnOnce(
        Box<dyn std::io::Read + '_>,
        u64,
        &str,
        u64,
    ) -> Result<T, ironpod_images::ImageError>,
) -> Result<T, PodError> {
    let mut ctl = files.agent(Duration::from_secs(600))?;
    let layer = ctl.commit(&rec.id).map_err(monitor_err)?;
    let stream = files
        .agent(Duration::from_secs(30))?
        .into_stream(RequestBody::OpenFile { path: layer.path.clone() })
        .map_err(monitor_err)?;
    // A layer holds the container's writable disk's files, plus tar's headers and padding.
    let opts: crate::spec::RunOptions = serde_json::from_str(&rec.options).unwrap_or_default();
    let max = opts.writable_disk_bytes().unwrap_or(crate::disks::WRITABLE_DISK_BYTES) * 2;
    let result = take(Box::new(stream), layer.size, &layer.sha256, max);
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
    let base = pod::image_digest(rec)?;
    with_layer(&files, rec, |stream, size, sha, max| {
        store.commit(&base, stream, size, sha, max, new_ref, info)
    })
}

/// A container's changes (running or stopped) as a checked layer tar in a file under
/// `dir`, deleted when the result is dropped (what a build's RUN step adds).
pub fn changes(
    root: &Path,
    store: &ImageStore,
    rec: &Record,
    dir: &Path,
) -> Result<ReceivedLayer, PodError> {
    let files = Files::open(root, store, rec)?;
    with_layer(&files, rec, |stream, size, sha, max| {
        store.receive_layer(stream, size, sha, max, dir)
    })
}
