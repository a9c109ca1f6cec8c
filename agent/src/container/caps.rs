//! Linux capabilities: OCI names to bit masks, and applying the five sets to the process
//! about to execute the container's program.

use std::io;

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use super::plan::CapPlan;

/// Capability names in kernel number order (`include/uapi/linux/capability.h`).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The kernel number of a capability name (`CAP_CHOWN` → 0).
pub fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

fn mask(set: &Option<Capabilities>) -> u64 {
    let mut m = 0u64;
    for c in set.iter().flatten() {
        // The spec type serializes to the kernel name (CAP_…); names the table does not
        // know are left out, as runc does with names the kernel lacks.
        let name = serde_json::to_value(c).ok().and_then(|v| v.as_str().map(String::from));
        if let Some(n) = name.as_deref().and_then(number) {
            m |= 1 << n;
        }
    }
    m
}

/// Converts the spec's capability sets (absent = empty).
pub fn plan(c: Option<&LinuxCapabilities>) -> CapPlan {
    match c {
        None => CapPlan::default(),
        Some(c) => CapPlan {
            bounding: mask(c.bounding()),
            effective: mask(c.effective()),
            permitted: mask(c.permitted()),
            inheritable: mask(c.inheritable()),
            ambient: mask(c.ambient()),
        },
    }
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability outside `bounding` from the bounding set. Needs CAP_SETPCAP, so it
/// runs before the user changes.
pub fn drop_bounding(bounding: u64) -> io::Result<()> {
    for cap in 0..=last_cap().min(63) {
        if bounding & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective, permitted and inheritable sets, then raises the ambient set.
pub fn apply(p: &CapPlan) -> io::Result<()> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData {
            effective: p.effective as u32,
            permitted: p.permitted as u32,
            inheritable: p.inheritable as u32,
        },
        CapData {
            effective: (p.effective >> 32) as u32,
            permitted: (p.permitted >> 32) as u32,
            inheritable: (p.inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and data have the layout capset(2) expects for version 3 (two data
    // structs); both outlive the call.
    let rc =
        unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0)
    };
    for cap in 0..=last_cap().min(63) {
        if p.ambient & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    #[test]
    fn names_map_to_kernel_numbers() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
        // Every name the spec crate knows is one the table knows.
        let name = |c: Capability| serde_json::to_value(c).unwrap().as_str().unwrap().to_string();
        assert_eq!(number(&name(Capability::NetBindService)), Some(10));
        assert_eq!(number(&name(Capability::AuditRead)), Some(37));
    }

    #[test]
    fn masks() {
        let mut c = LinuxCapabilities::default();
        c.set_bounding(Some([Capability::Kill, Capability::Chown].into_iter().collect()));
        c.set_ambient(None);
        let p = plan(Some(&c));
        assert_eq!(p.bounding, 1 | (1 << 5));
        assert_eq!(p.ambient, 0);
    }
}
