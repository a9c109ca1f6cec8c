//! What the control API does to the running VM as a whole: pause, resume, snapshot, and
//! plugging a file system server into a spare virtio-fs device (see [`crate::api`]).

use std::sync::{Arc, Mutex};

use kvm_ioctls::{Kvm, VmFd};

use crate::bus::lock;
use crate::config::VmConfig;
use crate::devices::serial;
use crate::snapshot::kvm_state;
use crate::snapshot::vm::VmSnapshot;
use crate::virtio::{mmio, GuestMemoryMmap};

/// Pauses, resumes and snapshots the VM and plugs file system servers in, for the control
/// API.
pub(crate) struct VmController {
    pub(crate) vcpus: Vec<crate::vcpu::VcpuHandle>,
    pub(crate) paused: bool,
    /// Asked for the MSRs worth saving, at snapshot time (not on every VM's start).
    pub(crate) kvm: Arc<Kvm>,
    pub(crate) vm: Arc<VmFd>,
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) transports: Vec<Arc<Mutex<mmio::MmioTransport>>>,
    pub(crate) serial: Option<Arc<Mutex<serial::Serial>>>,
    pub(crate) config: VmConfig,
    /// virtio-fs devices made without a backend.
    pub(crate) spare_fs: Vec<Arc<Mutex<crate::virtio::fs::Fs>>>,
}

impl VmController {
    /// The paused VM's state (everything but its memory).
    fn state(&self) -> Result<(VmSnapshotParts, kvm_state::VmState), String> {
        kvm_state::check_xsave_size(&self.vm).map_err(|e| e.to_string())?;
        let msrs = kvm_state::msr_index_list(&self.kvm).map_err(|e| e.to_string())?;
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for v in &self.vcpus {
            vcpus.push(v.save(&msrs).map_err(|e| e.to_string())?);
        }
        let mut devices = Vec::with_capacity(self.transports.len());
        for (i, t) in self.transports.iter().enumerate() {
            devices.push(lock(t).save_state().map_err(|e| format!("device {i}: {e}"))?);
        }
        let serial = self.serial.as_ref().map(|s| lock(s).save_state());
        let vm = kvm_state::VmState::save(&self.vm).map_err(|e| e.to_string())?;
        Ok(((vcpus, devices, serial), vm))
    }
}

/// vCPU states, device states, the UART.
type VmSnapshotParts =
    (Vec<kvm_state::VcpuState>, Vec<mmio::TransportState>, Option<serial::SerialSnapshot>);

impl crate::api::VmControl for VmController {
    fn snapshot(
        &mut self,
        state: &std::path::Path,
        memory: &std::path::Path,
    ) -> Result<(), String> {
        if !self.paused {
            return Err("the VM must be paused first".into());
        }
        let ((vcpus, devices, serial), vm) = self.state()?;
        let info =
            crate::snapshot::memory_file::save(&self.mem, memory).map_err(|e| e.to_string())?;
        let snap =
            VmSnapshot { config: self.config.clone(), memory: info, vm, vcpus, serial, devices };
        if let Err(e) = crate::snapshot::state_file::write(state, &snap) {
            let _ = std::fs::remove_file(memory);
            return Err(e.to_string());
        }
        Ok(())
    }

    fn attach_fs(&mut self, tag: &str, socket: &std::path::Path) -> Result<(), String> {
        let dev = self.spare_fs.iter().find(|d| lock(d).tag() == tag);
        let dev = dev.ok_or_else(|| format!("no spare virtio-fs device with tag {tag:?}"))?.clone();
        if lock(&dev).is_plugged() {
            return Err(format!("virtio-fs {tag:?} has a backend already"));
        }
        if !crate::memory::is_shared(&self.mem) {
            let was_paused = self.paused;
            if !was_paused {
                self.pause()?;
            }
            let shared = share_memory(&self.mem, &self.transports);
            if !was_paused {
                self.resume()?;
            }
            self.mem = shared?;
        }
        let plugged = lock(&dev).plug(socket).map_err(|e| e.to_string());
        plugged
    }

    fn pause(&mut self) -> Result<(), String> {
        if self.paused {
            return Err("the VM is paused already".into());
        }
        for (i, v) in self.vcpus.iter().enumerate() {
            if let Err(e) = v.pause() {
                // All or nothing: the ones already parked run again.
                for w in &self.vcpus[..i] {
                    w.resume();
                }
                return Err(e.to_string());
            }
        }
        self.paused = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), String> {
        if !self.paused {
            return Err("the VM is not paused".into());
        }
        for v in &self.vcpus {
            v.resume();
        }
        self.paused = false;
        Ok(())
    }
}

/// Moves guest memory `mem` into a shared memory file in place and tells every device
/// ([`crate::memory::share_in_place`]; the vCPUs must be paused, and the devices' event
/// loop is the caller's thread or not running yet).
pub(crate) fn share_memory(
    mem: &GuestMemoryMmap,
    transports: &[Arc<Mutex<mmio::MmioTransport>>],
) -> Result<GuestMemoryMmap, String> {
    let shared = crate::memory::share_in_place(mem)
        .map_err(|e| format!("move guest memory into a shared memory file: {e}"))?;
    for t in transports {
        lock(t).set_memory(&shared);
    }
    Ok(shared)
}
