//! One process of a shim's task (a container's init or an exec): its state, stdio and the
//! thread that waits for its exit.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ironpod_pods::agent_client::AgentClient;
use ironpod_protocol::{ExitStatus, ProcessRef};

use crate::stdio::{Pumps, StdioPaths};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited (shell-style code) at a time.
    Stopped {
        /// Exit status as containerd reports it.
        code: u32,
        /// When.
        at: SystemTime,
        /// Its cgroup had an OOM kill.
        oom: bool,
    },
}

/// A process of a task.
#[derive(Debug)]
pub struct Process {
    /// Which process in the guest.
    pub r#ref: ProcessRef,
    /// containerd's stdio for it.
    pub stdio: StdioPaths,
    /// The process reads stdin.
    pub with_stdin: bool,
    status: Mutex<Status>,
    changed: Condvar,
    pumps: Mutex<Pumps>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Process {
    /// A created process.
    pub fn new(r#ref: ProcessRef, stdio: StdioPaths, with_stdin: bool) -> Arc<Self> {
        Arc::new(Process {
            r#ref,
            stdio,
            with_stdin,
            status: Mutex::new(Status::Created),
            changed: Condvar::new(),
            pumps: Mutex::new(Pumps::default()),
        })
    }

    /// Its status now.
    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    /// Sets the stdio copiers (before the start).
    pub fn set_pumps(&self, p: Pumps) {
        *lock(&self.pumps) = p;
    }

    /// Closes its stdin.
    pub fn close_stdin(&self) {
        lock(&self.pumps).close_stdin();
    }

    /// Marks it running and starts the thread that waits for its exit on a session of its
    /// own; `before_stop` runs after the exit, once its output is delivered, and before the
    /// exit is recorded (waiters see what it did); `on_exit` runs once the exit is recorded.
    pub fn started(
        self: &Arc<Self>,
        uds: PathBuf,
        before_stop: impl FnOnce() + Send + 'static,
        on_exit: impl FnOnce(&Process, u32, SystemTime, bool) + Send + 'static,
    ) {
        *lock(&self.status) = Status::Running;
        let me = self.clone();
        std::thread::spawn(move || {
            let status = AgentClient::open(&uds, Duration::from_secs(30)).and_then(|mut c| {
                c.set_timeout(Duration::from_secs(100 * 365 * 24 * 3600))?;
                c.wait(&me.r#ref)
            });
            let (code, oom) = match status {
                Ok(ExitStatus { code, oom_killed, .. }) => (code as u32, oom_killed),
                Err(e) => {
                    // The VM or its agent is gone: the process is gone with it.
                    log::warn!("{:?}: lost while waiting for its exit: {e}", me.r#ref);
                    (255, false)
                }
            };
            lock(&me.pumps).finish(Duration::from_secs(5));
            let at = SystemTime::now();
            before_stop();
            me.set_stopped(code, at, oom);
            on_exit(&me, code, at, oom);
        });
    }

    /// Records an exit (also for a process that can no longer run).
    pub fn set_stopped(&self, code: u32, at: SystemTime, oom: bool) {
        let mut s = lock(&self.status);
        if !matches!(*s, Status::Stopped { .. }) {
            *s = Status::Stopped { code, at, oom };
        }
        self.changed.notify_all();
    }

    /// Waits until it has exited.
    pub fn wait(&self) -> (u32, SystemTime) {
        let mut s = lock(&self.status);
        loop {
            if let Status::Stopped { code, at, .. } = *s {
                return (code, at);
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_returns_the_first_exit() {
        let p = Process::new(ProcessRef::init("c"), StdioPaths::default(), false);
        assert_eq!(p.status(), Status::Created);
        let q = p.clone();
        let h = std::thread::spawn(move || q.wait().0);
        let t = SystemTime::now();
        p.set_stopped(3, t, false);
        p.set_stopped(9, t, false);
        assert_eq!(h.join().unwrap(), 3);
        assert_eq!(p.wait(), (3, t));
    }
}
