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

/// A file whose presence turns step tracing on in every agent process started after it
/// was made (a restored VM's, whose command line is its template's).
const TRACE_MARK: &str = "/run/ironpod-trace";

static TRACE_NOW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether step tracing is on (`ironpod.trace` on the kernel command line, or turned on
/// by [`trace_from_now`]).
pub fn tracing_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    TRACE_NOW.load(std::sync::atomic::Ordering::Relaxed)
        || *ON.get_or_init(|| {
            std::path::Path::new(TRACE_MARK).exists()
                || std::fs::read_to_string("/proc/cmdline")
                    .map(|c| c.split_whitespace().any(|w| w == "ironpod.trace"))
                    .unwrap_or(false)
        })
}

/// Turns step tracing on in this process and in the agent processes it starts later.
pub fn trace_from_now() {
    TRACE_NOW.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::write(TRACE_MARK, b"");
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
