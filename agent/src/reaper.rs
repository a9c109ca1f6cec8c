//! Reaps every child that exits, as PID 1 must (orphans are re-parented to init, and a
//! zombie nobody collects holds its PID forever), and keeps the exit statuses of the
//! processes someone said they will wait for.
//!
//! Container processes are grandchildren of the agent (their helper exits after forking
//! them into the new PID namespace), so `waitpid(-1)` here is the only place their statuses
//! appear. A process that exits before anyone registers interest still has its status kept,
//! bounded, for a late [`watch`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// A raw wait status as `waitpid` returns it.
pub type WaitStatus = libc::c_int;

#[derive(Default)]
struct Table {
    /// Pids someone will ask about.
    watched: HashSet<i32>,
    /// Statuses of watched pids (kept until taken).
    exited: HashMap<i32, WaitStatus>,
    /// Statuses of unwatched pids, newest last (a process may exit before it is watched).
    recent: VecDeque<(i32, WaitStatus)>,
}

const RECENT_CAP: usize = 256;

struct Reaper {
    table: Mutex<Table>,
    changed: Condvar,
}

fn reaper() -> &'static Reaper {
    static R: OnceLock<Reaper> = OnceLock::new();
    R.get_or_init(|| Reaper { table: Mutex::new(Table::default()), changed: Condvar::new() })
}

fn record(pid: i32, status: WaitStatus) {
    let r = reaper();
    let mut t = r.table.lock().unwrap_or_else(|e| e.into_inner());
    if t.watched.contains(&pid) {
        t.exited.insert(pid, status);
    } else {
        if t.recent.len() >= RECENT_CAP {
            t.recent.pop_front();
        }
        t.recent.push_back((pid, status));
    }
    r.changed.notify_all();
}

/// Starts the reaper thread. Outside a VM (not PID 1) the agent becomes a child subreaper
/// so container processes are still re-parented to it.
pub fn start(pid1: bool) {
    if !pid1 {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let spawned = std::thread::Builder::new().name("reaper".into()).spawn(|| loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid > 0 {
            record(pid, status);
        } else {
            // No children right now (ECHILD): don't spin.
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    if let Err(e) = spawned {
        crate::log::line(&format!("cannot start the reaper: {e}"));
    }
}

/// Says that someone will [`wait`] for `pid`. Must be called as soon as the pid is known;
/// a status that arrived earlier is moved over.
pub fn watch(pid: i32) {
    let r = reaper();
    let mut t = r.table.lock().unwrap_or_else(|e| e.into_inner());
    t.watched.insert(pid);
    if let Some(i) = t.recent.iter().rposition(|(p, _)| *p == pid) {
        if let Some((_, s)) = t.recent.remove(i) {
            t.exited.insert(pid, s);
        }
    }
}

/// The status of a watched pid, if it has exited (it stays available).
pub fn peek(pid: i32) -> Option<WaitStatus> {
    let t = reaper().table.lock().unwrap_or_else(|e| e.into_inner());
    t.exited.get(&pid).copied()
}

/// Blocks until the watched `pid` exits (or `timeout` passes) and returns its status.
pub fn wait(pid: i32, timeout: Option<Duration>) -> Option<WaitStatus> {
    let r = reaper();
    let mut t = r.table.lock().unwrap_or_else(|e| e.into_inner());
    let deadline = timeout.map(|d| std::time::Instant::now() + d);
    loop {
        if let Some(s) = t.exited.get(&pid) {
            return Some(*s);
        }
        match deadline {
            None => t = r.changed.wait(t).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return None;
                }
                t = r.changed.wait_timeout(t, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }
}

/// Forgets a watched pid (its status is no longer needed).
pub fn forget(pid: i32) {
    let mut t = reaper().table.lock().unwrap_or_else(|e| e.into_inner());
    t.watched.remove(&pid);
    t.exited.remove(&pid);
}

/// Shell-style exit code and signal of a wait status.
pub fn decode(status: WaitStatus) -> (i32, Option<i32>) {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, Some(sig))
    } else {
        (libc::WEXITSTATUS(status), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_exit_is_kept_for_a_late_watcher() {
        record(999_001, 7 << 8);
        watch(999_001);
        assert_eq!(peek(999_001), Some(7 << 8));
        assert_eq!(decode(wait(999_001, None).unwrap()), (7, None));
        forget(999_001);
        assert_eq!(peek(999_001), None);
    }

    #[test]
    fn wait_times_out_and_wakes() {
        watch(999_002);
        assert_eq!(wait(999_002, Some(Duration::from_millis(10))), None);
        let t = std::thread::spawn(|| wait(999_002, Some(Duration::from_secs(5))));
        std::thread::sleep(Duration::from_millis(20));
        record(999_002, 9); // killed by SIGKILL
        assert_eq!(t.join().unwrap().map(decode), Some((137, Some(9))));
    }
}
