//! What a VM's snapshot holds, and whether a configuration can take it.

use serde::{Deserialize, Serialize};

use super::kvm_state::{VcpuState, VmState};
use super::memory_file::MemoryFileInfo;
use crate::config::VmConfig;
use crate::devices::serial::SerialSnapshot;
use crate::virtio::mmio::TransportState;

/// A paused VM: the configuration it ran with, its KVM state, its devices in the order they
/// were made, and which memory file holds its RAM.
#[derive(Serialize, Deserialize)]
pub struct VmSnapshot {
    /// The configuration the VM ran with (after any late configuration).
    pub config: VmConfig,
    /// The memory file.
    pub memory: MemoryFileInfo,
    /// Interrupt controllers, PIT, kvmclock.
    pub vm: VmState,
    /// Each vCPU, by index.
    pub vcpus: Vec<VcpuState>,
    /// The console UART.
    pub serial: Option<SerialSnapshot>,
    /// The virtio devices, in the order of their MMIO windows.
    pub devices: Vec<TransportState>,
}

/// Whether `now` describes the machine `saved` was: the same vCPUs, RAM and devices in the
/// same order (what the guest sees); the host side (paths, sockets, taps, CIDs, MACs, the
/// console, whether memory is private or a shared memory file) may differ.
pub fn check_compatible(saved: &VmConfig, now: &VmConfig) -> Result<(), String> {
    let same = |what: &str, a: String, b: String| {
        if a == b {
            Ok(())
        } else {
            Err(format!("the snapshot's VM has {what} {a}, this configuration {b}"))
        }
    };
    same("vcpus", saved.vcpus.to_string(), now.vcpus.to_string())?;
    same("memory_mib", saved.memory_mib.to_string(), now.memory_mib.to_string())?;
    let disks =
        |c: &VmConfig| format!("{:?}", c.disks.iter().map(|d| d.read_only).collect::<Vec<_>>());
    same("disks (read-only flags)", disks(saved), disks(now))?;
    same("spare_disks", saved.spare_disks.to_string(), now.spare_disks.to_string())?;
    same(
        "spare_writable_disks",
        saved.spare_writable_disks.to_string(),
        now.spare_writable_disks.to_string(),
    )?;
    same("network cards", saved.net.len().to_string(), now.net.len().to_string())?;
    let mtus =
        |c: &VmConfig| format!("{:?}", c.spare_nets.iter().map(|n| n.mtu).collect::<Vec<_>>());
    same("spare_nets (MTUs)", mtus(saved), mtus(now))?;
    same("vsock", saved.vsock.is_some().to_string(), now.vsock.is_some().to_string())?;
    same(
        "free_page_reporting",
        saved.free_page_reporting.to_string(),
        now.free_page_reporting.to_string(),
    )?;
    let spare_fs = |c: &VmConfig| {
        format!("{:?}", c.spare_fs.iter().map(|f| (&f.tag, f.queue_size)).collect::<Vec<_>>())
    };
    same("spare_fs (tags, queue sizes)", spare_fs(saved), spare_fs(now))?;
    if !now.fs.is_empty() {
        return Err("a restored VM's shared directories (virtio-fs) are plugged into its spare \
                    devices by its late configuration: its own configuration has none"
            .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_machine_other_host_side() {
        let a = VmConfig::from_json(
            r#"{"kernel":"/k","memory_mib":128,"spare_disks":2,
                "vsock":{"cid":3,"uds_path":"/a.sock"},"serial":"/a.log"}"#,
        )
        .unwrap();
        let mut b = VmConfig::from_json(
            r#"{"kernel":"","memory_mib":128,"spare_disks":2,
                "vsock":{"cid":9,"uds_path":"/b.sock"},"serial":"off",
                "restore":{"state":"/s","memory":"/m"}}"#,
        )
        .unwrap();
        check_compatible(&a, &b).unwrap();
        b.memory_mib = 256;
        let e = check_compatible(&a, &b).unwrap_err();
        assert!(e.contains("memory_mib 128, this configuration 256"), "{e}");
        b.memory_mib = 128;
        b.spare_disks = 1;
        assert!(check_compatible(&a, &b).is_err());
        b.spare_disks = 2;
        b.vsock = None;
        assert!(check_compatible(&a, &b).is_err());
        b.vsock = a.vsock.clone();
        // Private or shared, the memory is the guest's either way (the host's choice).
        b.shared_memory = true;
        check_compatible(&a, &b).unwrap();
        b.spare_fs = vec![crate::config::SpareFsConfig { tag: "t".into(), queue_size: 1024 }];
        assert!(check_compatible(&a, &b).is_err(), "a spare virtio-fs device more");
    }
}
