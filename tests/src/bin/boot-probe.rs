//! The `/init` of the boot benchmark's probe initramfs (`cargo xtask bench boot`): the same
//! program boots under every VMM compared, so their times differ only by the VMM. It mounts
//! /proc, prints the guest's uptime when it started as one console line,
//! `boot-probe: uptime SECONDS`, and resets the machine (with `reboot=k` on the command
//! line the kernel pulses the keyboard controller's reset line, which ends every VMM
//! compared).
//!
//! With `probe_kmsg=1` on the kernel command line (the kernel passes it to /init as an
//! environment variable) it then prints the kernel's log buffer and the CPU flags, to compare
//! where two boots spent their time.
//!
//! It must be linked statically: the initramfs holds nothing else.

use std::io::Write;

fn main() {
    let mut out = std::io::stdout();
    match uptime() {
        Ok(up) => {
            let _ = writeln!(out, "boot-probe: uptime {up}");
        }
        Err(e) => {
            let _ = writeln!(out, "boot-probe: error: {e}");
        }
    }
    if std::env::var_os("probe_kmsg").is_some() {
        let _ = out.write_all(&kernel_log());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        for line in cpuinfo.lines().filter(|l| l.starts_with("flags") || l.starts_with("bugs")) {
            let _ = writeln!(out, "boot-probe: {line}");
        }
    }
    let _ = out.flush();
    // SAFETY: reboot(2) takes no pointers; as PID 1 with CAP_SYS_BOOT it resets the
    // machine and does not return.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    // Not PID 1 (run by hand): nothing to reset.
    std::process::exit(1);
}

/// The first field of /proc/uptime (seconds since the kernel started, two decimals).
fn uptime() -> std::io::Result<String> {
    let proc_ = c"/proc";
    // SAFETY: every pointer is a NUL-terminated string that lives across the call; no data.
    let rc = unsafe {
        libc::mount(c"proc".as_ptr(), proc_.as_ptr(), c"proc".as_ptr(), 0, std::ptr::null())
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e);
        }
    }
    let text = std::fs::read_to_string("/proc/uptime")?;
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| std::io::Error::other("empty /proc/uptime"))
}

/// The kernel's log buffer (syslog(2) READ_ALL).
fn kernel_log() -> Vec<u8> {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which lives across the
    // call.
    let n = unsafe {
        libc::klogctl(SYSLOG_ACTION_READ_ALL, buf.as_mut_ptr().cast(), buf.len() as libc::c_int)
    };
    buf.truncate(n.max(0) as usize);
    buf
}
