//! The controllers that make the object store's desired state true on this host, run by
//! `ironpod system service` (one loop on a thread of its own, woken by every change of
//! the store and once a second):
//!
//! - [`pods`]: every pod has a running `ironpod-kubelet` until it has ended; a deleted
//!   pod whose kubelet is gone is cleaned up here;
//! - [`replicas`]: ReplicationControllers and ReplicaSets keep `replicas` pods;
//! - [`deployments`]: Deployments own ReplicaSets per template, roll them (RollingUpdate
//!   with maxSurge/maxUnavailable, or Recreate) and keep their revision history;
//! - [`namespaces`]: a deleted namespace takes everything in it along;
//! - [`services`]: Endpoints of Services, the cluster IP rules in each namespace's network,
//!   node ports on the host;
//! - garbage collection: what an owner that is gone owned is deleted.
//!
//! Only one controller runs per state root: it holds `<root>/kube/controller.lock`
//! ([`running`] tells whether one does). The controller keeps no state of its own, so a
//! controller killed and started again adopts everything as it finds it: running pods keep
//! their kubelets and VMs.

pub mod deployments;
pub mod namespaces;
pub mod pods;
pub mod replicas;
pub mod services;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironpod_kube::{KubeStore, StoreError};

/// How often the controllers look even when nothing changed (probes change pod status,
/// which does change the store; VMs and kubelets that end do not).
pub const RESYNC: Duration = Duration::from_secs(1);

/// Runs `f` for one object: an error is logged and the pass goes on with the next object
/// (one bad object must not stop the others' controllers).
pub(crate) fn each<T>(what: &str, name: &str, f: impl FnOnce() -> Result<T, ControllerError>) {
    match f() {
        Ok(_) | Err(ControllerError::Store(StoreError::Conflict(_))) => {}
        Err(e) => tracing::warn!("{what} {name}: {e}"),
    }
}

/// Errors of a controller pass.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else.
    #[error("{0}")]
    Other(String),
}

fn lock_path(root: &Path) -> PathBuf {
    root.join("kube").join("controller.lock")
}

/// The controller's lock, held while it runs.
pub struct ControllerLock {
    _file: fs::File,
}

fn open_lock(root: &Path) -> std::io::Result<fs::File> {
    fs::create_dir_all(root.join("kube"))?;
    fs::OpenOptions::new().create(true).truncate(false).write(true).open(lock_path(root))
}

impl ControllerLock {
    /// Takes the lock; `None` when another controller holds it.
    pub fn take(root: &Path) -> std::io::Result<Option<ControllerLock>> {
        let f = open_lock(root)?;
        // SAFETY: flock on a descriptor we own; released when it closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(ControllerLock { _file: f }))
    }
}

/// Whether a controller runs for the state root.
pub fn running(root: &Path) -> bool {
    if !lock_path(root).exists() {
        return false;
    }
    let Ok(f) = open_lock(root) else { return false };
    // SAFETY: flock on a descriptor we own; a shared lock we get is released at once.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// The controllers' loop: passes over the store until `stop` says so.
pub struct Controller {
    root: PathBuf,
    store: KubeStore,
    kubelets: pods::Kubelets,
    services: services::Services,
}

/// How the controllers are set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host address Services' node ports listen on (default 127.0.0.1).
    pub node_address: std::net::Ipv4Addr,
}

impl Default for Options {
    fn default() -> Self {
        Options { node_address: std::net::Ipv4Addr::LOCALHOST }
    }
}

impl Controller {
    /// Opens the store.
    pub fn new(root: &Path, opts: &Options) -> Result<Controller, ControllerError> {
        Ok(Controller {
            root: root.to_path_buf(),
            store: KubeStore::open(root)?,
            kubelets: pods::Kubelets::default(),
            services: services::Services::new(opts.node_address),
        })
    }

    /// One pass of every controller.
    /// One pass of every controller (one that fails does not hold back the others; its
    /// error is returned once they have all run).
    pub fn pass(&mut self) -> Result<(), ControllerError> {
        let results = [
            namespaces::sync(&mut self.store, &self.root),
            deployments::sync(&mut self.store),
            replicas::sync(&mut self.store),
            replicas::collect_garbage(&mut self.store),
            pods::sync(&mut self.store, &self.root, &mut self.kubelets),
            services::sync(&mut self.store, &self.root, &mut self.services),
        ];
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }

    /// Runs passes until `stop` returns true: after every change of the store, and every
    /// [`RESYNC`].
    pub fn run(&mut self, stop: impl Fn() -> bool) {
        let mut seen = -1;
        let mut last = Instant::now() - RESYNC;
        while !stop() {
            let v = self.store.version().unwrap_or(-1);
            if v != seen || last.elapsed() >= RESYNC {
                seen = v;
                last = Instant::now();
                if let Err(e) = self.pass() {
                    tracing::warn!("controller pass: {e}");
                }
            }
            self.kubelets.reap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Starts the controllers on a thread of their own if none runs for `root` yet (another
/// service on the same root keeps its own). Returns whether they started.
pub fn spawn(root: &Path, opts: Options) -> bool {
    let lock = match ControllerLock::take(root) {
        Ok(Some(l)) => l,
        Ok(None) => {
            tracing::warn!(
                "another controller runs for {}: this service serves the API only",
                root.display()
            );
            return false;
        }
        Err(e) => {
            tracing::warn!("controller lock: {e}");
            return false;
        }
    };
    let root = root.to_path_buf();
    std::thread::Builder::new()
        .name("ironpod-controllers".into())
        .spawn(move || {
            let _lock = lock;
            match Controller::new(&root, &opts) {
                Ok(mut c) => c.run(|| false),
                Err(e) => tracing::error!("controllers: {e}"),
            }
        })
        .is_ok()
}
