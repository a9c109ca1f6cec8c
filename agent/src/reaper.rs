//! Reaps every child that exits, as PID 1 must: orphans are re-parented to init, and a
//! zombie nobody collects holds its PID forever.

/// Starts the reaper thread.
pub fn start() {
    let spawned = std::thread::Builder::new().name("reaper".into()).spawn(|| loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid <= 0 {
            // No children right now (ECHILD): don't spin.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    if let Err(e) = spawned {
        crate::log::line(&format!("cannot start the reaper: {e}"));
    }
}
