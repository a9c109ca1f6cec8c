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
