//! ironpod's default seccomp profile: Docker's protections as a deny list. The VM is the
//! security boundary between tenants; inside it, this keeps containers of one pod from the
//! kernel interfaces Docker also keeps them from (module loading, kexec, keyrings, bpf,
//! namespaces, mounts, tracing other processes, clock changes, …). A capability that Docker's
//! profile ties a syscall to (CAP_SYS_ADMIN for mount, CAP_SYS_PTRACE for ptrace, …) lifts
//! the ban, as in Docker.

use oci_spec::runtime::{Capability, LinuxSeccomp};

/// Syscalls denied unless the container holds the capability (None: always denied).
const DENIED: &[(&[&str], Option<Capability>)] = &[
    (&["acct"], Some(Capability::SysPacct)),
    (&["add_key", "keyctl", "request_key"], None),
    (&["bpf"], Some(Capability::SysAdmin)),
    (
        &[
            "create_module",
            "delete_module",
            "init_module",
            "finit_module",
            "get_kernel_syms",
            "query_module",
        ],
        Some(Capability::SysModule),
    ),
    (&["kexec_load", "kexec_file_load", "reboot"], Some(Capability::SysBoot)),
    (
        &[
            "lookup_dcookie",
            "quotactl",
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "setns",
            "unshare",
            "name_to_handle_at",
            "fanotify_init",
            "fsopen",
            "fsmount",
            "fsconfig",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
        ],
        Some(Capability::SysAdmin),
    ),
    (
        &["nfsservctl", "sysfs", "_sysctl", "uselib", "ustat", "vm86", "vm86old", "userfaultfd"],
        None,
    ),
    (&["open_by_handle_at"], Some(Capability::DacReadSearch)),
    (&["perf_event_open"], Some(Capability::Perfmon)),
    (&["swapon", "swapoff"], Some(Capability::SysAdmin)),
    (&["iopl", "ioperm"], Some(Capability::SysRawio)),
    (&["clock_adjtime", "clock_settime", "settimeofday", "stime"], Some(Capability::SysTime)),
    (&["kcmp", "process_vm_readv", "process_vm_writev", "ptrace"], Some(Capability::SysPtrace)),
    (&["get_mempolicy", "set_mempolicy", "mbind", "move_pages"], Some(Capability::SysNice)),
];

/// clone(2) flags that create namespaces (denied without CAP_SYS_ADMIN).
const CLONE_NS_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// The default profile for a container holding `caps`.
pub fn default_profile(caps: &[Capability]) -> LinuxSeccomp {
    let mut rules = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (calls, cap) in DENIED {
        if cap.is_none_or(|c| !caps.contains(&c)) {
            names.extend_from_slice(calls);
        }
    }
    rules.push(
        serde_json::json!({ "names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM }),
    );
    // No vsock sockets: the VM's vsock leads to the host side and its agent, which is not a
    // container's to talk to (Docker denies AF_VSOCK too). Compared on the low 32 bits, what
    // the kernel reads of the int argument.
    rules.push(serde_json::json!({
        "names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EAFNOSUPPORT,
        "args": [{ "index": 0, "value": 0xffff_ffffu64, "valueTwo": libc::AF_VSOCK, "op": "SCMP_CMP_MASKED_EQ" }]
    }));
    if !caps.contains(&Capability::SysAdmin) {
        for flag in CLONE_NS_FLAGS {
            rules.push(serde_json::json!({
                "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM,
                "args": [{ "index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ" }]
            }));
        }
        // clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes libc fall
        // back to clone, which the rules above check (Docker does the same).
        rules.push(serde_json::json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS }));
    }
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    });
    serde_json::from_value(profile).expect("the default profile is a valid LinuxSeccomp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_lift_bans() {
        let p = default_profile(&[]);
        let s = serde_json::to_string(&p).unwrap();
        assert!(s.contains("\"mount\"") && s.contains("\"ptrace\"") && s.contains("clone3"));
        let p = default_profile(&[Capability::SysAdmin, Capability::SysPtrace]);
        let s = serde_json::to_string(&p).unwrap();
        assert!(!s.contains("\"mount\"") && !s.contains("\"ptrace\"") && !s.contains("clone3"));
        assert!(s.contains("\"kexec_load\"") && s.contains("\"keyctl\""));
        // AF_VSOCK whatever the capabilities.
        let rules = p.syscalls().as_ref().unwrap();
        let vsock = rules.iter().find(|r| r.names().iter().any(|n| n == "socket"));
        let arg = &vsock.expect("a socket rule").args().as_ref().unwrap()[0];
        assert_eq!((arg.value(), arg.value_two()), (0xffff_ffff, Some(libc::AF_VSOCK as u64)));
    }
}
