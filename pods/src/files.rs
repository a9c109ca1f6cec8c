//! A container's files from the host (`docker cp`, `docker diff`, `commit`): through its
//! running pod's agent, or, for a container that is not running, through a VM booted on its
//! disks for the time of the work (the host never mounts a guest filesystem). Such a VM
//! holds the container's disk lock, which `start` takes too: the writable disk is never in
//! two VMs at once.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironpod_images::ImageStore;
use ironpod_protocol::{Change, CreateContainer, PathStat, RootfsDisks};
use ironpod_state::{status, Record, State};
use ironpod_vmm::config::{DiskConfig, FsConfig};
use ironpod_volumes::share::PodShare;

use crate::agent_client::{AgentClient, ArchiveReader, ClientError};
use crate::error::PodError;
use crate::spec::RunOptions;
use crate::vm::{RunningVm, VmSpec};
use crate::{paths, pod};

fn agent_err(e: impl std::fmt::Display) -> PodError {
    PodError::Monitor(e.to_string())
}

/// An agent's refusal keeps its kind; anything else is a failure to reach it.
fn files_err(e: ClientError) -> PodError {
    match e {
        ClientError::Agent(e) => PodError::Guest(e),
        e => PodError::Agent(e.to_string()),
    }
}

/// The lock a container's writable disk is used under: by a VM booted to reach its files,
/// and by `start` until its pod's VM has the disk. Released on drop.
pub struct DiskLock {
    _file: File,
}

impl DiskLock {
    /// Waits for and takes container `id`'s disk lock.
    pub fn take(root: &Path, id: &str) -> Result<DiskLock, PodError> {
        let path = paths::container_dir(root, id).join("disk.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PodError::State2(format!("{}: {e}", path.display())))?;
        // SAFETY: file is an open descriptor; flock takes no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(PodError::State2(format!("{}: {e}", path.display())));
        }
        Ok(DiskLock { _file: file })
    }
}

/// A VM booted on a stopped container's disks, its container created (not started).
struct Offline {
    vm: RunningVm,
    ctl: AgentClient,
    id: String,
    /// The volumes' share: taken down after the VM (fields drop in order, after `drop`).
    _share: Option<PodShare>,
    _lock: DiskLock,
}

impl Drop for Offline {
    fn drop(&mut self) {
        let _ = self.ctl.delete_container(&self.id, false);
        let _ = self.vm.shutdown(&mut self.ctl, Duration::from_secs(10));
    }
}

/// Where a container's files are reached for a while.
pub struct Files {
    id: String,
    uds: PathBuf,
    _offline: Option<Offline>,
}

impl Files {
    /// Reaches container `rec`'s files: its pod's agent when it runs, else a VM of its own
    /// (which takes seconds to boot).
    pub fn open(root: &Path, store: &ImageStore, rec: &Record) -> Result<Files, PodError> {
        if let Some(f) = Self::running(rec)? {
            return Ok(f);
        }
        let lock = DiskLock::take(root, &rec.id)?;
        // It may have started while the lock was awaited.
        let rec = State::open(root)?.find(&rec.id)?;
        if let Some(f) = Self::running(&rec)? {
            return Ok(f);
        }
        if rec.status == status::EXITED {
            // Its last pod's monitor may still be taking the pod down.
            pod::wait_monitor_gone(&rec, Duration::from_secs(30));
        } else if rec.monitor_pid.is_some() {
            return Err(PodError::State2(format!(
                "container {} is starting or stopping: try again",
                &rec.id[..12.min(rec.id.len())]
            )));
        }
        let layers = store.layer_disks_of(&pod::image_digest(&rec)?)?;
        let rw = paths::writable_disk(root, &rec.id);
        if !rw.is_file() {
            return Err(PodError::State2(format!("container {} has no writable disk", rec.id)));
        }
        // Its volumes too: its paths under them are its files as much as the rest.
        let options: RunOptions = serde_json::from_str(&rec.options)
            .map_err(|e| PodError::State2(format!("container {}: run options: {e}", rec.id)))?;
        let volumes = ironpod_volumes::resolve(root, &options.volumes)
            .map_err(|e| PodError::State2(e.to_string()))?;
        let mut spec = VmSpec::with_defaults().map_err(agent_err)?;
        spec.shared_memory = !volumes.is_empty();
        let disks = layers
            .iter()
            .map(|p| DiskConfig { path: p.clone(), read_only: true })
            .chain(std::iter::once(DiskConfig { path: rw.clone(), read_only: false }))
            .collect();
        let mut vm = RunningVm::start_deferred(&spec).map_err(agent_err)?;
        let share = if volumes.is_empty() {
            None
        } else {
            let socket = vm.dir().join("fs.sock");
            Some(PodShare::start(&rec.id, &volumes, &socket).map_err(agent_err)?)
        };
        let fs: Vec<FsConfig> = share
            .iter()
            .map(|s| FsConfig {
                socket: s.socket().to_path_buf(),
                tag: ironpod_protocol::SHARE_TAG.into(),
                queue_size: crate::template::SHARE_QUEUE_SIZE,
            })
            .collect();
        let cmdline = if share.is_some() { "ironpod.share" } else { "" };
        vm.boot(disks, Vec::new(), fs, cmdline).map_err(agent_err)?;
        let mut ctl = vm.wait_agent(Duration::from_secs(120)).map_err(agent_err)?;
        let oci: oci_spec::runtime::Spec = serde_json::from_str(&rec.spec).map_err(agent_err)?;
        let created = ctl.create_container(CreateContainer {
            id: rec.id.clone(),
            spec: Box::new(oci),
            rootfs: RootfsDisks {
                layers: layers.iter().map(|p| paths::disk_serial(p)).collect(),
                writable: paths::disk_serial(&rw),
            },
            stdin: false,
        });
        let uds = vm.vsock_path().to_path_buf();
        let offline = Offline { vm, ctl, id: rec.id.clone(), _share: share, _lock: lock };
        created.map_err(agent_err)?;
        Ok(Files { id: rec.id.clone(), uds, _offline: Some(offline) })
    }

    fn running(rec: &Record) -> Result<Option<Files>, PodError> {
        if rec.status != status::RUNNING {
            return Ok(None);
        }
        let uds = rec.vsock.clone().ok_or_else(|| agent_err("the running pod has no vsock"))?;
        Ok(Some(Files { id: rec.id.clone(), uds: PathBuf::from(uds), _offline: None }))
    }

    /// A new session with the agent that serves the files.
    pub fn agent(&self, timeout: Duration) -> Result<AgentClient, PodError> {
        AgentClient::open(&self.uds, timeout).map_err(agent_err)
    }

    /// Facts about `path` in the container.
    pub fn stat(&self, path: &str) -> Result<PathStat, PodError> {
        self.agent(Duration::from_secs(30))?.stat_path(&self.id, path).map_err(files_err)
    }

    /// A tar of `path` in the container (read it to its end: a tar the agent could not
    /// finish ends in a read error).
    pub fn read_archive(&self, path: &str) -> Result<ArchiveReader, PodError> {
        self.agent(Duration::from_secs(30))?.read_archive(&self.id, path).map_err(files_err)
    }

    /// Extracts the tar `tar` reads into directory `path` of the container.
    pub fn write_archive(
        &self,
        path: &str,
        tar: &mut impl Read,
        no_overwrite_dir_non_dir: bool,
        copy_uid_gid: bool,
    ) -> Result<(), PodError> {
        let req = ironpod_protocol::WriteArchive {
            container: self.id.clone(),
            path: path.into(),
            no_overwrite_dir_non_dir,
            copy_uid_gid,
        };
        self.agent(Duration::from_secs(300))?.write_archive(req, tar).map_err(files_err)
    }

    /// How the container's files differ from its image.
    pub fn changes(&self) -> Result<Vec<Change>, PodError> {
        self.agent(Duration::from_secs(120))?.changes(&self.id).map_err(files_err)
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}
