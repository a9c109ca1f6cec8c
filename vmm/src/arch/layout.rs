//! Guest physical memory layout (x86_64).
//!
//! ```text
//! 0x0000_0500  GDT            0x0000_0520  IDT (empty)
//! 0x0000_6000  PVH start_info + module list + memory map
//! 0x0000_7000  Linux boot_params (zero page)
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000 PD (identity map of the first GiB, 2 MiB pages)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  MP table (EBDA), reserved up to 1 MiB
//! 0x0010_0000  bzImage load address / 0x0100_0000 vmlinux (its own ELF addresses)
//!   ...        RAM; initrd at the top of low RAM
//! 0xc000_0000  MMIO gap: virtio-mmio devices from 0xd000_0000, IOAPIC, LAPIC
//! 0x1_0000_0000 RAM above 4 GiB when memory is larger than the low part
//! ```

use vm_memory::GuestAddress;

/// GDT location.
pub const GDT_START: u64 = 0x500;
/// IDT location.
pub const IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (right after start_info).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map (after the module list).
pub const PVH_MEMMAP_START: u64 = 0x6080;
/// Linux zero page.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Boot page tables.
pub const PML4_START: u64 = 0x9000;
/// Boot page tables, level 3.
pub const PDPTE_START: u64 = 0xa000;
/// Boot page tables, level 2.
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// MP floating pointer + configuration table (must fit in the last KiB of base memory).
pub const MPTABLE_START: u64 = 0x9fc00;
/// End of usable low memory (start of EBDA).
pub const EBDA_START: u64 = 0x9fc00;
/// Start of "high" memory, where kernels load.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO gap below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device window.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// IOAPIC base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC base.
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's TSS needs three pages inside the gap.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// KVM identity map page (one page below the TSS).
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// First IRQ line handed to virtio devices (4 = COM1, 1 = keyboard).
pub const IRQ_BASE: u32 = 5;
/// Last IRQ line (the IOAPIC has 24 pins).
pub const IRQ_MAX: u32 = 23;
/// COM1 interrupt line.
pub const SERIAL_IRQ: u32 = 4;

/// RAM ranges for a guest of `size` bytes: one range below the MMIO gap, and the rest above
/// 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// Top of the RAM range that starts at 0 (exclusive).
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_at_gap() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1 as u64 + r[1].1 as u64, 4 << 30);
        assert_eq!(r[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(low_ram_end(4 << 30), MMIO_GAP_START);
    }
}
