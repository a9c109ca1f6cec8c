//! The pod of a shim: one VM, its disks and the control session with its agent.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ironpod_protocol::RootfsDisks;
use ironpod_vmm::config::DiskConfig;

use crate::agent_client::AgentClient;
use crate::pod::{disk_serial, make_writable_disk_fast};
use crate::vm::{RunningVm, VmSpec};

/// A booted pod VM.
#[derive(Debug)]
pub struct PodVm {
    vm: Mutex<RunningVm>,
    ctl: Mutex<AgentClient>,
    uds: PathBuf,
    pid: u32,
    layers: Vec<PathBuf>,
    writable: PathBuf,
    shm: Mutex<bool>,
}

/// Where the pod's shared `/dev/shm` lives in the guest.
pub const POD_SHM: &str = "/run/ironpod/pod-shm";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodVm {
    /// Boots a VM with the image layer disks `layers` (bottom first) and a fresh writable
    /// disk in `dir`, and waits for its agent.
    pub fn boot(
        state_root: &Path,
        dir: &Path,
        layers: Vec<PathBuf>,
        vcpus: u8,
        memory_mib: u64,
    ) -> Result<PodVm, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let writable = dir.join("rw.ext4");
        make_writable_disk_fast(state_root, &writable).map_err(|e| e.to_string())?;
        let mut s = VmSpec::with_defaults().map_err(|e| e.to_string())?;
        s.vcpus = vcpus;
        s.memory_mib = memory_mib;
        s.free_page_reporting = true;
        // ttrpc's worker threads come and go; the VM lives until the pod is deleted (and a
        // restarted shim must not lose it).
        s.die_with_starter = false;
        s.disks = layers
            .iter()
            .map(|p| DiskConfig { path: p.clone(), read_only: true })
            .chain(std::iter::once(DiskConfig { path: writable.clone(), read_only: false }))
            .collect();
        let mut vm = RunningVm::start(&s).map_err(|e| format!("start the pod VM: {e}"))?;
        // For `delete` after this shim is gone: which VMM to end (pid + start time, so a
        // reused pid is never hit).
        let start = crate::pod::process_start(vm.pid() as i32).unwrap_or(0);
        let pidfile = dir.join("vmm.pid");
        std::fs::write(&pidfile, format!("{} {start}\n", vm.pid()))
            .map_err(|e| format!("write {}: {e}", pidfile.display()))?;
        let mut ctl = vm
            .wait_agent(Duration::from_secs(120))
            .map_err(|e| format!("the pod VM's agent did not come up: {e}"))?;
        ctl.set_timeout(Duration::from_secs(60)).map_err(|e| e.to_string())?;
        Ok(PodVm {
            uds: vm.vsock_path().to_path_buf(),
            pid: vm.pid(),
            vm: Mutex::new(vm),
            ctl: Mutex::new(ctl),
            layers,
            writable,
            shm: Mutex::new(false),
        })
    }

    /// The VMM's host pid (reported to containerd as the tasks' pid).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The agent's vsock socket (for more sessions).
    pub fn uds(&self) -> &Path {
        &self.uds
    }

    /// The control session.
    pub fn ctl(&self) -> MutexGuard<'_, AgentClient> {
        lock(&self.ctl)
    }

    /// The root disks of a container whose image layers are `layers`, if the VM has them.
    pub fn rootfs_for(&self, layers: &[PathBuf]) -> Option<RootfsDisks> {
        // The VM's layer disks must start with the container's layers in order (a pod
        // of one boots with exactly its container's layers).
        if layers.len() > self.layers.len() || self.layers[..layers.len()] != *layers {
            return None;
        }
        Some(RootfsDisks {
            layers: layers.iter().map(|p| disk_serial(p)).collect(),
            writable: disk_serial(&self.writable),
        })
    }

    /// The pod's shared `/dev/shm` in the guest (a 64 MiB tmpfs, as Docker and the CRI
    /// give), mounted the first time a container asks for it.
    pub fn shm(&self) -> Result<&'static str, crate::agent_client::ClientError> {
        let mut done = lock(&self.shm);
        if !*done {
            lock(&self.ctl).mount_with(
                "shm",
                POD_SHM,
                "tmpfs",
                false,
                Some("mode=1777,size=65536k"),
            )?;
            *done = true;
        }
        Ok(POD_SHM)
    }

    /// The VMM has exited.
    pub fn gone(&self) -> bool {
        lock(&self.vm).try_exit().is_some()
    }

    /// Why the VMM is gone (its exit status and the end of its log), if it is.
    pub fn exit_reason(&self) -> Option<String> {
        let mut vm = lock(&self.vm);
        let status = vm.try_exit()?;
        let log = vm.vmm_log();
        Some(if log.is_empty() { status.to_string() } else { format!("{status}: {log}") })
    }

    /// Stops the VM: asks the agent to power off, kills the VMM if it does not.
    pub fn stop(&self) {
        let mut vm = lock(&self.vm);
        if vm.try_exit().is_some() {
            return;
        }
        let mut ctl = lock(&self.ctl);
        let _ = ctl.set_timeout(Duration::from_secs(2));
        if vm.shutdown(&mut ctl, Duration::from_secs(5)).is_err() {
            vm.kill();
        }
    }
}

/// Ends the VMM recorded in a pod directory whose shim is gone, and removes the directory.
pub fn kill_orphan(dir: &Path) {
    if let Ok(s) = std::fs::read_to_string(dir.join("vmm.pid")) {
        let mut it = s.split_whitespace().map(|x| x.parse::<i64>().ok());
        if let (Some(Some(pid)), Some(Some(start))) = (it.next(), it.next()) {
            let pid = pid as i32;
            if pid > 1 && crate::pod::process_start(pid) == Some(start) {
                // SAFETY: kill(2) on a pid we checked is the VMM we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
