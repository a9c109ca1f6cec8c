//! One-line log messages: to /dev/console when running as PID 1, stderr otherwise.

use std::io::Write;

/// Writes `msg` prefixed with `ironpod-agent:`.
pub fn line(msg: &str) {
    let text = format!("ironpod-agent: {msg}\n");
    if std::process::id() == 1 {
        if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
            let _ = c.write_all(text.as_bytes());
            return;
        }
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Whether step tracing is on (`ironpod.trace` on the kernel command line).
pub fn tracing_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::fs::read_to_string("/proc/cmdline")
            .map(|c| c.split_whitespace().any(|w| w == "ironpod.trace"))
            .unwrap_or(false)
    })
}

/// With tracing on, writes `step` to the console with the time since boot (for finding
/// where start-up time goes; off by default since every console byte costs a VM exit).
pub fn trace(step: &str) {
    if !tracing_on() {
        return;
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let text = format!(
        "ironpod-agent: [{}.{:06}] pid {} {step}\n",
        ts.tv_sec,
        ts.tv_nsec / 1000,
        std::process::id()
    );
    if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = c.write_all(text.as_bytes());
    }
}
