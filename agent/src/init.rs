//! PID 1 duties: the guest's pseudo filesystems, and ending the VM when the agent cannot go on.

use std::ffi::CString;
use std::io;

use crate::log;

/// A filesystem mounted at boot.
struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
    data: &'static str,
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

const MOUNTS: &[Mount] = &[
    Mount { source: "proc", target: "/proc", fstype: "proc", flags: NOSUID_NODEV_NOEXEC, data: "" },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "newinstance,ptmxmode=0666,mode=0620",
    },
    Mount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
    },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
];

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

/// Calls mount(2).
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let data_ptr =
        if data.is_empty() { std::ptr::null() } else { d.as_ptr() as *const libc::c_void };
    // SAFETY: all pointers are valid NUL-terminated strings (or NULL for data) that outlive the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, data_ptr) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the root from the initramfs (rootfs, which pivot_root cannot leave) to a fresh
/// tmpfs mounted over it, as switch_root does. Containers' pivot_root then works, and the
/// agent keeps running from its binary in the initramfs (children re-execute it through
/// /proc/self/exe).
fn leave_rootfs() -> io::Result<()> {
    let new = "/.ironpod-root";
    std::fs::create_dir_all(new)?;
    mount("tmpfs", new, "tmpfs", libc::MS_NOSUID, "mode=0755")?;
    std::env::set_current_dir(new)?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    let dot = cstr(".")?;
    // SAFETY: dot is a valid string.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")?;
    Ok(())
}

/// Raises this process's descriptor limit to the most the kernel allows (`fs.nr_open`).
pub fn raise_nofile() -> io::Result<()> {
    let max: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")?
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("fs.nr_open: {e}")))?;
    let lim = libc::rlimit { rlim_cur: max, rlim_max: max };
    // SAFETY: lim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts the pseudo filesystems, enables cgroup controllers, sets the hostname.
pub fn setup() -> io::Result<()> {
    leave_rootfs()
        .map_err(|e| io::Error::new(e.kind(), format!("leave the initramfs root: {e}")))?;
    for m in MOUNTS {
        std::fs::create_dir_all(m.target)?;
        match mount(m.source, m.target, m.fstype, m.flags, m.data) {
            Ok(()) => {}
            // devtmpfs may already be mounted by the kernel.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("mount {}: {e}", m.target))),
        }
    }
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    // Hand every available controller to child cgroups (containers, later).
    if let Ok(ctrls) = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        let enable: Vec<String> = ctrls.split_whitespace().map(|c| format!("+{c}")).collect();
        if !enable.is_empty() {
            if let Err(e) =
                std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", enable.join(" "))
            {
                log::line(&format!("cannot enable cgroup controllers: {e}"));
            }
        }
    }
    let name = b"ironpod";
    // SAFETY: the buffer is valid for its length.
    unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) };
    Ok(())
}

/// Syncs and resets the VM. There is no ACPI in our guests, so a reset (which the VMM turns
/// into a clean exit) is how the VM ends.
pub fn end_vm() -> ! {
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_RESTART);
    }
    // reboot only returns on failure; PID 1 must not exit (the kernel would panic, which with
    // panic=-1 also resets, but say why first).
    log::line(&format!("reboot failed: {}", io::Error::last_os_error()));
    loop {
        std::thread::park();
    }
}

/// A panic anywhere in the agent ends the VM instead of leaving a guest without an agent.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        log::line(&format!("panic: {info}; ending the VM"));
        end_vm();
    }));
}
