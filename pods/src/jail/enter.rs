//! The steps a VMM's process takes into its jail: run in the forked child, after the
//! launcher made the jail and before `exec`, so only system calls (no allocation, no locks).

use std::ffi::CString;
use std::io;

/// Everything the child needs, prepared before the fork.
#[derive(Debug)]
pub struct Entry {
    pub(super) root: CString,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// A new, empty network namespace (the caller gave none).
    pub(super) new_netns: bool,
    pub(super) limits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub(super) die_with_parent: bool,
}

/// Writes `ironpod jail: <step> failed` to the child's stderr (the VMM's log) and returns
/// the error, which `spawn` hands to the launcher.
fn failed(step: &'static str) -> io::Error {
    let e = io::Error::last_os_error();
    let parts: [&[u8]; 3] = [b"ironpod jail: ", step.as_bytes(), b" failed\n"];
    for p in parts {
        // SAFETY: write(2) of a valid buffer to stderr; async-signal-safe.
        unsafe { libc::write(2, p.as_ptr().cast(), p.len()) };
    }
    e
}

fn check(r: libc::c_long, step: &'static str) -> io::Result<()> {
    if r < 0 {
        Err(failed(step))
    } else {
        Ok(())
    }
}

const DOT: &[u8] = b".\0";
const SLASH: &[u8] = b"/\0";

/// Linux capability header and data (`capset(2)`, version 3: two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const CAP_V3: u32 = 0x2008_0522;

impl Entry {
    /// Enters the jail: new mount, IPC and UTS namespaces (and a new network namespace when
    /// the VM has none of its own; the pid namespace was made by the launcher), the jail
    /// directory as `/` with the host's tree gone, the resource limits, then the VMM's own
    /// user and group with every capability set empty and `no_new_privs`.
    ///
    /// Runs between fork and exec: system calls only.
    pub fn enter(&self) -> io::Result<()> {
        let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        if self.new_netns {
            flags |= libc::CLONE_NEWNET;
        }
        // SAFETY: each call below is a plain system call on values prepared before the fork
        // (C strings, integers, stack structs); none allocates or takes a lock.
        unsafe {
            check(libc::unshare(flags).into(), "unshare")?;
            // The host's mounts stay out of reach; those the launcher adds under the jail
            // later (disks) still arrive: the jail is a shared mount on the host.
            check(
                libc::mount(
                    std::ptr::null(),
                    SLASH.as_ptr().cast(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                )
                .into(),
                "mount --make-rslave /",
            )?;
            check(libc::chdir(self.root.as_ptr()).into(), "chdir to the jail")?;
            check(
                libc::syscall(libc::SYS_pivot_root, DOT.as_ptr(), DOT.as_ptr()),
                "pivot_root into the jail",
            )?;
            // The old root is stacked on the new one: detach it, with all the host's mounts.
            check(libc::umount2(DOT.as_ptr().cast(), libc::MNT_DETACH).into(), "detach the host")?;
            check(libc::chdir(SLASH.as_ptr().cast()).into(), "chdir /")?;
            for &(resource, value) in &self.limits {
                let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
                check(libc::setrlimit(resource, &lim).into(), "setrlimit")?;
            }
            // Every capability out of the bounding set (needs CAP_SETPCAP, so before the
            // user changes); the loop ends at the first number the kernel does not know.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                        break;
                    }
                    return Err(failed("drop the capability bounding set"));
                }
            }
            check(
                libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0).into(),
                "clear ambient capabilities",
            )?;
            check(libc::setgroups(0, std::ptr::null()).into(), "setgroups")?;
            check(libc::setresgid(self.gid, self.gid, self.gid).into(), "setresgid")?;
            check(libc::setresuid(self.uid, self.uid, self.uid).into(), "setresuid")?;
            // The user change emptied the permitted and effective sets; the inheritable one
            // stays unless cleared.
            let header = CapHeader { version: CAP_V3, pid: 0 };
            let data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
            check(libc::syscall(libc::SYS_capset, &header, data.as_ptr()), "capset")?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into(), "no_new_privs")?;
            if self.die_with_parent {
                // After the user change, which clears it.
                check(
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0)
                        .into(),
                    "PR_SET_PDEATHSIG",
                )?;
            }
        }
        Ok(())
    }
}
