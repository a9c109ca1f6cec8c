//! The CPUID a vCPU reports: what KVM supports, with the topology and APIC id filled in per
//! vCPU and the hypervisor bit set.

use kvm_bindings::CpuId;

/// What the host KVM offers beyond its supported-CPUID list.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCaps {
    /// KVM emulates the TSC-deadline mode of the local APIC timer (KVM_CAP_TSC_DEADLINE_TIMER);
    /// KVM does not list it in the supported CPUID, the VMM must set it.
    pub tsc_deadline: bool,
}

/// Adjusts KVM's supported CPUID for vCPU `index` of `count`.
pub fn filter(cpuid: &mut CpuId, index: u8, count: u8, caps: HostCaps) {
    let apic_id = index as u32;
    // Bits needed to number `count` logical CPUs inside one package.
    let shift = 32 - (count as u32).saturating_sub(1).leading_zeros();
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((count as u32) << 16);
                e.ecx |= 1 << 31; // running under a hypervisor
                if caps.tsc_deadline {
                    e.ecx |= 1 << 24;
                }
                if count > 1 {
                    e.edx |= 1 << 28; // HTT: more than one logical CPU per package
                }
            }
            0xb | 0x1f => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8; // SMT level
                    }
                    1 => {
                        e.eax = shift;
                        e.ebx = count as u32;
                        e.ecx = (2 << 8) | 1; // core level
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x4 => {
                // Cores per package - 1 in bits 31..26, keep the cache description.
                e.eax = (e.eax & 0x03ff_ffff) | (((count as u32).saturating_sub(1) & 0x3f) << 26);
            }
            0x8000_0008 => {
                // AMD: number of cores - 1 and APIC id size.
                e.ecx =
                    (e.ecx & !0xf0ff) | ((count as u32).saturating_sub(1) & 0xff) | (shift << 12);
            }
            0xa => {
                // No virtual PMU.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn sets_apic_id_and_topology() {
        let mut c = CpuId::from_entries(&[
            kvm_cpuid_entry2 { function: 1, ebx: 0x0800, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 0, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 1, ..Default::default() },
        ])
        .unwrap();
        filter(&mut c, 3, 4, HostCaps { tsc_deadline: true });
        assert_ne!(c.as_slice()[0].ecx & (1 << 24), 0);
        let s = c.as_slice();
        assert_eq!(s[0].ebx >> 24, 3);
        assert_eq!((s[0].ebx >> 16) & 0xff, 4);
        assert_ne!(s[0].ecx & (1 << 31), 0);
        assert_eq!(s[1].edx, 3);
        assert_eq!((s[2].eax, s[2].ebx), (2, 4));
    }
}
