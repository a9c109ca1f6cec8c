//! Initial vCPU state: segments, control registers, boot page tables, FPU, MSRs, LAPIC.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::boot::{BootEntry, EntryMode};
use super::layout::*;
use crate::virtio::GuestMemoryMmap;

/// Errors while setting up vCPU registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A KVM ioctl failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// KVM refused one of the boot MSRs (it sets them in order and stops at the first).
    #[error("KVM set msrs: only {set} of {total} boot MSRs were accepted")]
    Msrs {
        /// How many were set.
        set: usize,
        /// How many were asked for.
        total: usize,
    },
    /// Writing the GDT or page tables failed.
    #[error("cannot write boot tables: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A GDT entry from flags (access byte + granularity nibble), base and limit.
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// Decodes a GDT entry into the segment KVM wants.
fn segment(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let limit = if g == 1 { (raw_limit << 12) | 0xfff } else { raw_limit };
    kvm_segment {
        base,
        limit,
        selector: (index as u16) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// The GDT for a boot mode: null, code, data, TSS.
fn gdt(mode: EntryMode) -> [u64; 4] {
    match mode {
        EntryMode::Linux64 => [
            0,
            gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code
            gdt_entry(0xc093, 0, 0xfffff), // data
            gdt_entry(0x808b, 0, 0xfffff), // TSS
        ],
        EntryMode::Pvh => [
            0,
            gdt_entry(0xc09b, 0, 0xfffff), // 32-bit code
            gdt_entry(0xc093, 0, 0xfffff), // data
            gdt_entry(0x008b, 0, 0x67),    // TSS
        ],
    }
}

fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))?;
    mem.write_obj(PDE_START | 0x03, GuestAddress(PDPTE_START))?;
    for i in 0..512u64 {
        // 2 MiB pages, present + writable + page size.
        mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_START + i * 8))?;
    }
    Ok(())
}

/// Sets segments, control registers and (for 64-bit boot) page tables on the boot vCPU.
pub fn setup_sregs(mem: &GuestMemoryMmap, vcpu: &VcpuFd, mode: EntryMode) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("get sregs"))?;
    let table = gdt(mode);
    for (i, e) in table.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_START + i as u64 * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))?;
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = 7;
    let code = segment(table[1], 1);
    let data = segment(table[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(table[3], 3);
    match mode {
        EntryMode::Pvh => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryMode::Linux64 => {
            write_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_PG | CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm("set sregs"))
}

/// Sets general-purpose registers for the boot vCPU.
pub fn setup_regs(vcpu: &VcpuFd, entry: BootEntry) -> Result<(), RegsError> {
    let mut regs = kvm_regs { rflags: 0x2, rip: entry.entry.0, ..Default::default() };
    match entry.mode {
        EntryMode::Pvh => regs.rbx = PVH_INFO_START,
        EntryMode::Linux64 => {
            regs.rsp = HIMEM_START - 0x1000; // below the kernel, above boot tables
            regs.rbp = regs.rsp;
            regs.rsi = ZERO_PAGE_START;
        }
    }
    vcpu.set_regs(&regs).map_err(kvm("set regs"))
}

/// Default x87/SSE state.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(kvm("set fpu"))
}

/// Boot MSRs, as firmware would leave them: the system-call MSRs cleared, the TSC at 0 on
/// every vCPU (so they start in step), fast string operations enabled, and the MTRRs enabled
/// with write-back as the default memory type (MTRRs left disabled mean "all memory
/// uncached" to a guest that honours them).
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let msrs = Msrs::from_entries(&boot_msrs()).expect("the boot MSRs fit");
    let set = vcpu.set_msrs(&msrs).map_err(kvm("set msrs"))?;
    if set != msrs.as_slice().len() {
        return Err(RegsError::Msrs { set, total: msrs.as_slice().len() });
    }
    Ok(())
}

/// The MSRs [`setup_msrs`] writes.
fn boot_msrs() -> Vec<kvm_msr_entry> {
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    const MSR_STAR: u32 = 0xc000_0081;
    const MSR_LSTAR: u32 = 0xc000_0082;
    const MSR_CSTAR: u32 = 0xc000_0083;
    const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    const MSR_IA32_TSC: u32 = 0x10;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    const FAST_STRING: u64 = 1;
    const MTRR_ENABLE: u64 = 1 << 11;
    const MTRR_TYPE_WB: u64 = 6;
    let entry = |index, data| kvm_msr_entry { index, data, ..Default::default() };
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WB),
    ]
}

/// LINT0 = ExtINT, LINT1 = NMI, as a BIOS would leave the local APIC.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    const DM_EXTINT: u32 = 7;
    const DM_NMI: u32 = 4;
    let mut lapic = vcpu.get_lapic().map_err(kvm("get lapic"))?;
    let regs: &mut [i8] = &mut lapic.regs[..];
    let mut set = |off: usize, mode: u32| {
        let cur = u32::from_le_bytes([
            regs[off] as u8,
            regs[off + 1] as u8,
            regs[off + 2] as u8,
            regs[off + 3] as u8,
        ]);
        let new = (cur & !0x700) | (mode << 8);
        for (i, b) in new.to_le_bytes().iter().enumerate() {
            regs[off + i] = *b as i8;
        }
    };
    set(LVT_LINT0, DM_EXTINT);
    set(LVT_LINT1, DM_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm("set lapic"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_round_trip() {
        let e = gdt_entry(0xa09b, 0, 0xfffff);
        let s = segment(e, 1);
        assert_eq!((s.l, s.db, s.g, s.present, s.s, s.type_), (1, 0, 1, 1, 1, 0xb));
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.selector, 8);
        let d = segment(gdt_entry(0xc093, 0, 0xfffff), 2);
        assert_eq!((d.db, d.type_, d.l), (1, 3, 0));
        let t = segment(gdt_entry(0x008b, 0, 0x67), 3);
        assert_eq!((t.limit, t.g, t.type_), (0x67, 0, 0xb));
    }

    #[test]
    fn page_tables_identity_map() {
        let mem = GuestMemoryMmap::from_ranges(&ram_ranges(16 << 20)).unwrap();
        write_page_tables(&mem).unwrap();
        let pde: u64 = mem.read_obj(GuestAddress(PDE_START + 8)).unwrap();
        assert_eq!(pde, (1 << 21) | 0x83);
    }
}
