//! A RUN step: the command runs in a pod VM of its own whose root is the step's parent
//! image (its layers as read-only disks) plus a fresh writable layer; its output streams
//! back as it comes; when it succeeds, its changes (that writable layer) come back as the
//! step's layer, read through the agent of the same VM, which its monitor keeps up for it
//! (`Frame::Hold`). The container goes in every case.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ironpod_images::{Digest, ImageStore, ReceivedLayer};
use ironpod_pods::attach::{self, Frame};
use ironpod_pods::error::PodError;
use ironpod_pods::launch::pod_shape;
use ironpod_pods::monitor_handle::MonitorHandle;
use ironpod_pods::spec::RunOptions;
use ironpod_pods::{commit, lifecycle, paths, pod};

use crate::error::BuildError;
use crate::output::BuildOutput;

/// What a RUN step runs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The image it runs on (the step's parent).
    pub image: Digest,
    /// The program and its arguments (the shell form already wrapped in the shell).
    pub argv: Vec<String>,
    /// Variables over the image's (the build arguments in scope).
    pub env: Vec<String>,
    /// The image's USER, if any.
    pub user: Option<String>,
    /// The image's WORKDIR, if any.
    pub workdir: Option<String>,
    /// The network (`none`: loopback only; `None`: the default network).
    pub network: Option<String>,
}

/// How a RUN step ended.
pub struct Ran {
    /// Its exit code.
    pub code: i32,
    /// Its changes, when it succeeded.
    pub layer: Option<ReceivedLayer>,
}

/// Removes the step's container when dropped.
struct Container<'a> {
    root: &'a Path,
    id: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        // A step cut short (its output's reader gone, an error) may still run: stopped
        // first, so no VM outlives its record.
        if let Ok(rec) = lifecycle::find(self.root, &self.id) {
            if lifecycle::is_live(&rec) {
                let _ = lifecycle::stop(self.root, &rec, Duration::ZERO);
            }
        }
        if let Ok(store) = ImageStore::open(self.root) {
            let _ = pod::remove(self.root, &store, &self.id);
        }
    }
}

/// Runs `spec`; its output goes to `out`, `started` learns the container's id (and may
/// write to `out`) first; the changes are received into `scratch`.
pub fn run(
    root: &Path,
    spec: &RunSpec,
    out: &mut dyn BuildOutput,
    started: &mut dyn FnMut(&str, &mut dyn BuildOutput),
    scratch: &Path,
) -> Result<Ran, BuildError> {
    let opts = RunOptions {
        command: spec.argv.clone(),
        // The image's entrypoint is not the step's.
        entrypoint: Some(String::new()),
        env: spec.env.clone(),
        workdir: spec.workdir.clone(),
        user: spec.user.clone(),
        network: spec.network.clone(),
        labels: [("io.ironpod.build".to_string(), "step".to_string())].into(),
        ..RunOptions::default()
    };
    let opts = lifecycle::check_options(root, opts)
        .map_err(|e| BuildError::Io { what: "RUN".into(), source: std::io::Error::other(e) })?;
    let store = ImageStore::open(root)?;
    let layers = store.layers_of(&spec.image)?.len();
    let id = ironpod_ids::new_id().map_err(BuildError::io("a container id"))?;
    let mut shape = pod_shape(&opts, Vec::new());
    shape.template = shape.template && shape.template_fits(layers);
    let mut monitor = MonitorHandle::spawn(root, &id, &shape, true)?;
    let container = Container { root, id: id.clone() };
    let image = spec.image.to_string();
    let created =
        pod::create(root, &store, &id, &image, None, &opts, false, |launch| monitor.boot(launch))?;
    started(&id, out);
    let launched = monitor.launch(&created.prepared);
    drop(created.disk_lock);
    if let Err(e) = launched {
        if let PodError::Start { code, message } = &e {
            let _ = out.output(format!("{message}\n").as_bytes());
            return Ok(Ran { code: *code, layer: None });
        }
        return Err(e.into());
    }
    let (code, conn) = relay(&id, out)?;
    // The VM is held while the changes are read through its agent (no second VM boots).
    let layer = match conn {
        Some(conn) if code == 0 => {
            let rec = lifecycle::find(root, &id)?;
            let layer = commit::changes(root, &store, &rec, scratch);
            drop(conn);
            Some(layer?)
        }
        held => {
            // A failed step's VM goes at once.
            drop(held);
            None
        }
    };
    let rec = lifecycle::wait(root, &id, Some(Duration::from_secs(120)))?;
    let layer = match layer {
        // The step ended before its hold counted (an attach later than the monitor waits
        // for): its changes are read from its disks in a VM of their own.
        None if code == 0 => Some(commit::changes(root, &store, &rec, scratch)?),
        layer => layer,
    };
    drop(container);
    Ok(Ran { code, layer })
}

/// Copies the step's output to `out` until it ends; its exit code, and the connection that
/// holds its VM when the program ended normally (its changes are read while it is kept).
fn relay(id: &str, out: &mut dyn BuildOutput) -> Result<(i32, Option<UnixStream>), BuildError> {
    let sock = paths::attach_socket(id);
    let mut conn = UnixStream::connect(&sock)
        .map_err(BuildError::io(format!("attach to {}", sock.display())))?;
    attach::write(&mut conn, &Frame::Hold)
        .and_then(|()| attach::write(&mut conn, &Frame::Hello))
        .map_err(BuildError::io("attach"))?;
    loop {
        match attach::read(&mut conn) {
            Ok(Some(Frame::Stdout(d))) | Ok(Some(Frame::Stderr(d))) => {
                // Whoever reads the build went away: the step stops (its VM with it).
                out.output(&d).map_err(BuildError::io("the build's output"))?;
            }
            Ok(Some(Frame::Held(report))) => {
                if let Some(e) = &report.error {
                    let _ = out.output(format!("{e}\n").as_bytes());
                }
                return Ok((report.code, Some(conn)));
            }
            Ok(Some(Frame::Exit(report))) => {
                if let Some(e) = &report.error {
                    let _ = out.output(format!("{e}\n").as_bytes());
                }
                return Ok((report.code, None));
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(BuildError::io("attach")(std::io::Error::other(
                    "the step's monitor went away before the command ended",
                )))
            }
            Err(e) => return Err(BuildError::io("attach")(e)),
        }
    }
}
