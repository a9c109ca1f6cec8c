//! The state KVM holds for a VM and its vCPUs, saved and restored in the order KVM needs
//! (Firecracker's, which Linux's own ordering constraints dictate): CPUID before anything
//! that depends on it, MSRs after the LAPIC, TSC before the TSC deadline, events last.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

/// Saving or restoring KVM state failed.
#[derive(Debug, thiserror::Error)]
pub enum KvmStateError {
    /// A KVM ioctl failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// KVM took only part of the MSRs.
    #[error("KVM {what}: {done} of {total} MSRs (the first refused: {first:#x})")]
    Msrs {
        /// get or set.
        what: &'static str,
        /// How many went through.
        done: usize,
        /// How many were asked for.
        total: usize,
        /// The MSR KVM stopped at.
        first: u32,
    },
    /// A list too long for KVM's structures.
    #[error("{0}: too many entries")]
    TooMany(&'static str),
    /// The host's XSAVE area is larger than the legacy 4 KiB one this format keeps (AMX).
    #[error("this host's XSAVE area is {0} bytes; snapshots keep the 4096-byte area only")]
    XsaveTooLarge(usize),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmStateError {
    move |source| KvmStateError::Kvm { what, source }
}

/// MSRs read or written per KVM_GET_MSRS / KVM_SET_MSRS call.
const MSR_BATCH: usize = 64;
/// IA32_TSC_DEADLINE: restored after IA32_TSC, or the deadline is relative to a wrong TSC.
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

/// KVM's list of the MSRs worth saving on this host.
pub fn msr_index_list(hv: &Kvm) -> Result<Vec<u32>, KvmStateError> {
    Ok(hv.get_msr_index_list().map_err(kvm("get MSR index list"))?.as_slice().to_vec())
}

/// Of `list`, the MSRs this vCPU can read, in restore order (the TSC deadline last).
fn readable_msrs(list: &[u32], vcpu: &VcpuFd) -> Result<Vec<u32>, KvmStateError> {
    let mut readable = Vec::new();
    // KVM stops at the first MSR it cannot read: probe one by one where a batch fails.
    for chunk in list.chunks(MSR_BATCH) {
        let entries: Vec<kvm_msr_entry> =
            chunk.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| KvmStateError::TooMany("MSRs"))?;
        let n = vcpu.get_msrs(&mut msrs).map_err(kvm("get MSRs"))?;
        if n == chunk.len() {
            readable.extend_from_slice(chunk);
            continue;
        }
        for &index in chunk {
            let mut one = Msrs::from_entries(&[kvm_msr_entry { index, ..Default::default() }])
                .map_err(|_| KvmStateError::TooMany("MSRs"))?;
            if vcpu.get_msrs(&mut one).map_err(kvm("get MSRs"))? == 1 {
                readable.push(index);
            }
        }
    }
    // The deadline after the TSC.
    readable.sort_by_key(|&i| i == MSR_IA32_TSC_DEADLINE);
    Ok(readable)
}

/// Everything KVM holds for one vCPU.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID the vCPU was given.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Running, halted, waiting for INIT/SIPI.
    pub mp_state: kvm_mp_state,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// FPU, SSE, AVX state (the 4 KiB XSAVE area).
    pub xsave: kvm_xsave,
    /// Extended control registers.
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debug_regs: kvm_debugregs,
    /// The local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// MSRs, in restore order.
    pub msrs: Vec<kvm_msr_entry>,
    /// Pending exceptions, interrupts, NMIs, SMIs.
    pub events: kvm_vcpu_events,
    /// The guest TSC frequency, kHz (None where KVM cannot tell).
    pub tsc_khz: Option<u32>,
}

impl VcpuState {
    /// Reads the state of a vCPU that is not running (outside KVM_RUN): its registers, and
    /// of the MSRs in `msr_list` ([`msr_index_list`]) those it can read.
    pub fn save(vcpu: &VcpuFd, msr_list: &[u32]) -> Result<Self, KvmStateError> {
        let msr_list = readable_msrs(msr_list, vcpu)?;
        let cpuid = vcpu
            .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("get CPUID"))?
            .as_slice()
            .to_vec();
        let mp_state = vcpu.get_mp_state().map_err(kvm("get MP state"))?;
        let regs = vcpu.get_regs().map_err(kvm("get regs"))?;
        let sregs = vcpu.get_sregs().map_err(kvm("get sregs"))?;
        let xsave = vcpu.get_xsave().map_err(kvm("get XSAVE"))?;
        let xcrs = vcpu.get_xcrs().map_err(kvm("get XCRs"))?;
        let debug_regs = vcpu.get_debug_regs().map_err(kvm("get debug regs"))?;
        let lapic = vcpu.get_lapic().map_err(kvm("get LAPIC"))?;
        let mut msrs = Vec::with_capacity(msr_list.len());
        for chunk in msr_list.chunks(MSR_BATCH) {
            let entries: Vec<kvm_msr_entry> =
                chunk.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
            let mut batch =
                Msrs::from_entries(&entries).map_err(|_| KvmStateError::TooMany("MSRs"))?;
            let n = vcpu.get_msrs(&mut batch).map_err(kvm("get MSRs"))?;
            if n != chunk.len() {
                return Err(KvmStateError::Msrs {
                    what: "get",
                    done: n,
                    total: chunk.len(),
                    first: chunk[n],
                });
            }
            msrs.extend_from_slice(batch.as_slice());
        }
        let events = vcpu.get_vcpu_events().map_err(kvm("get vCPU events"))?;
        let tsc_khz = vcpu.get_tsc_khz().ok();
        Ok(VcpuState {
            cpuid,
            mp_state,
            regs,
            sregs,
            xsave,
            xcrs,
            debug_regs,
            lapic,
            msrs,
            events,
            tsc_khz,
        })
    }

    /// Loads this state into a new vCPU (created, not yet run).
    pub fn restore(&self, vcpu: &VcpuFd) -> Result<(), KvmStateError> {
        if let Some(khz) = self.tsc_khz {
            // A host whose TSC runs at another rate scales the guest's (where it can; where
            // it cannot, the guest's clock is corrected by kvmclock).
            if vcpu.get_tsc_khz().ok() != Some(khz) {
                let _ = vcpu.set_tsc_khz(khz);
            }
        }
        let cpuid =
            CpuId::from_entries(&self.cpuid).map_err(|_| KvmStateError::TooMany("CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm("set CPUID"))?;
        vcpu.set_mp_state(self.mp_state).map_err(kvm("set MP state"))?;
        vcpu.set_regs(&self.regs).map_err(kvm("set regs"))?;
        vcpu.set_sregs(&self.sregs).map_err(kvm("set sregs"))?;
        // SAFETY: `xsave` is a whole kvm_xsave (4096 bytes); KVM reads no more than that
        // from it, as the vCPU's XSAVE size was checked to fit when the state was saved.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(kvm("set XSAVE"))?;
        vcpu.set_xcrs(&self.xcrs).map_err(kvm("set XCRs"))?;
        vcpu.set_debug_regs(&self.debug_regs).map_err(kvm("set debug regs"))?;
        vcpu.set_lapic(&self.lapic).map_err(kvm("set LAPIC"))?;
        for chunk in self.msrs.chunks(MSR_BATCH) {
            let batch = Msrs::from_entries(chunk).map_err(|_| KvmStateError::TooMany("MSRs"))?;
            let n = vcpu.set_msrs(&batch).map_err(kvm("set MSRs"))?;
            if n != chunk.len() {
                return Err(KvmStateError::Msrs {
                    what: "set",
                    done: n,
                    total: chunk.len(),
                    first: chunk[n].index,
                });
            }
        }
        vcpu.set_vcpu_events(&self.events).map_err(kvm("set vCPU events"))?;
        Ok(())
    }
}

/// Fails where the host's XSAVE area is larger than `kvm_xsave` holds (AMX hosts).
pub fn check_xsave_size(vm: &VmFd) -> Result<(), KvmStateError> {
    let size = vm.check_extension_raw(kvm_bindings::KVM_CAP_XSAVE2.into());
    let size = usize::try_from(size).unwrap_or(0);
    if size > std::mem::size_of::<kvm_xsave>() {
        return Err(KvmStateError::XsaveTooLarge(size));
    }
    Ok(())
}

/// What KVM holds for the VM: the in-kernel PIC and IOAPIC, the PIT and kvmclock.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    /// PIT channels.
    pub pit: kvm_pit_state2,
    /// kvmclock.
    pub clock: kvm_clock_data,
    /// The master 8259.
    pub pic_master: kvm_irqchip,
    /// The slave 8259.
    pub pic_slave: kvm_irqchip,
    /// The IOAPIC.
    pub ioapic: kvm_irqchip,
}

impl VmState {
    /// Reads the VM's state (its vCPUs stopped).
    pub fn save(vm: &VmFd) -> Result<Self, KvmStateError> {
        let pit = vm.get_pit2().map_err(kvm("get PIT"))?;
        let mut clock = vm.get_clock().map_err(kvm("get clock"))?;
        // With KVM_CLOCK_REALTIME (the host's time of day read with the clock) a restore
        // moves the guest's clock on by the time spent since; the other flags only describe
        // how the clock was read and KVM_SET_CLOCK refuses them.
        clock.flags &= kvm_bindings::KVM_CLOCK_REALTIME;
        let chip = |id| -> Result<kvm_irqchip, KvmStateError> {
            let mut c = kvm_irqchip { chip_id: id, ..Default::default() };
            vm.get_irqchip(&mut c).map_err(kvm("get irqchip"))?;
            Ok(c)
        };
        Ok(VmState {
            pit,
            clock,
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
        })
    }

    /// Loads this state into a new VM (irqchip and PIT created, no vCPU run yet).
    pub fn restore(&self, vm: &VmFd) -> Result<(), KvmStateError> {
        vm.set_pit2(&self.pit).map_err(kvm("set PIT"))?;
        vm.set_clock(&self.clock).map_err(kvm("set clock"))?;
        vm.set_irqchip(&self.pic_master).map_err(kvm("set PIC master"))?;
        vm.set_irqchip(&self.pic_slave).map_err(kvm("set PIC slave"))?;
        vm.set_irqchip(&self.ioapic).map_err(kvm("set IOAPIC"))?;
        Ok(())
    }
}
