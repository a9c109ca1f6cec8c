//! A tiny guest stopped between two port writes, its KVM state saved and loaded into a new
//! VM with a copy of its memory: the copy goes on from the instruction after the first write.
//! Runs on any KVM (tiny guests need no Linux).

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use linux_loader::loader::Cmdline;
use vm_memory::{Bytes, GuestAddress};

use super::kvm_state::{check_xsave_size, msr_index_list, VcpuState, VmState};
use crate::arch::{boot, cpuid, layout, regs};
use crate::tiny_guest;
use crate::virtio::GuestMemoryMmap;

const MEM: u64 = 16 << 20;

/// A VM with memory, irqchip and PIT, as the VMM makes them.
fn new_vm(kvm: &Kvm) -> (VmFd, GuestMemoryMmap) {
    let vm = kvm.create_vm().unwrap();
    let mem = crate::memory::guest_memory(MEM, false).unwrap();
    crate::memory::register(&vm, &mem).unwrap();
    vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS).unwrap();
    vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize).unwrap();
    vm.create_irq_chip().unwrap();
    vm.create_pit2(kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() }).unwrap();
    (vm, mem)
}

/// Runs until the next write to COM1; the byte written.
fn next_out(vcpu: &mut VcpuFd) -> u8 {
    loop {
        match vcpu.run().unwrap() {
            VcpuExit::IoOut(0x3f8, data) => return data[0],
            VcpuExit::IoOut(..) | VcpuExit::IoIn(..) => {}
            other => panic!("unexpected exit {other:?}"),
        }
    }
}

#[test]
fn vcpu_and_vm_state_round_trip() {
    let kvm = Kvm::new().expect("/dev/kvm");
    let (vm, mem) = new_vm(&kvm);
    check_xsave_size(&vm).unwrap();
    let code: Vec<u8> =
        [tiny_guest::out_char(b'A'), tiny_guest::out_char(b'B'), tiny_guest::halt()].concat();
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny");
    std::fs::write(&kernel, tiny_guest::pvh_elf(&code)).unwrap();
    let entry = boot::load(&mem, MEM, &kernel, None, &Cmdline::new(64).unwrap()).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut c = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap();
    cpuid::filter(&mut c, 0, 1, cpuid::HostCaps::default());
    vcpu.set_cpuid2(&c).unwrap();
    regs::setup_msrs(&vcpu).unwrap();
    regs::setup_fpu(&vcpu).unwrap();
    regs::setup_lapic(&vcpu).unwrap();
    regs::setup_sregs(&mem, &vcpu, entry.mode).unwrap();
    regs::setup_regs(&vcpu, entry).unwrap();

    assert_eq!(next_out(&mut vcpu), b'A');
    let list = msr_index_list(&kvm).unwrap();
    let saved = VcpuState::save(&vcpu, &list).unwrap();
    let saved_msrs: Vec<u32> = saved.msrs.iter().map(|m| m.index).collect();
    assert!(saved_msrs.contains(&0x10), "IA32_TSC is saved");
    let vm_saved = VmState::save(&vm).unwrap();
    // Through the serialised form, as a snapshot file carries it.
    let text = serde_json::to_vec(&(&saved, &vm_saved)).unwrap();
    let (saved, vm_saved): (VcpuState, VmState) = serde_json::from_slice(&text).unwrap();
    let rip = saved.regs.rip;

    // A second VM with a copy of the memory.
    let (vm2, mem2) = new_vm(&kvm);
    let mut page = vec![0u8; 1 << 20];
    for at in (0..MEM).step_by(page.len()) {
        mem.read_slice(&mut page, GuestAddress(at)).unwrap();
        mem2.write_slice(&page, GuestAddress(at)).unwrap();
    }
    vm_saved.restore(&vm2).unwrap();
    let mut vcpu2 = vm2.create_vcpu(0).unwrap();
    saved.restore(&vcpu2).unwrap();
    assert_eq!(vcpu2.get_regs().unwrap().rip, rip);
    // The copy goes on after the first write; the original too, independently.
    assert_eq!(next_out(&mut vcpu2), b'B');
    assert_eq!(next_out(&mut vcpu), b'B');
    let tsc = |s: &VcpuState| s.msrs.iter().find(|m| m.index == 0x10).map(|m| m.data);
    let again = VcpuState::save(&vcpu2, &list).unwrap();
    assert!(tsc(&again) >= tsc(&saved), "the restored TSC does not go back");
    assert_eq!(saved_msrs.last() == Some(&0x6e0), saved_msrs.contains(&0x6e0), "deadline last");
}
