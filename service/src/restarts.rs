//! Restart policies, kept by the service for every container whichever front end made it:
//! a container's `die` event (the pod monitor logs it when the container or its VM ends)
//! starts it again after Docker's back-off when its policy says so, and when the service
//! starts, containers found exited are started per their policy (those left running keep
//! running). While it waits, a container shows as `restarting`; a user's stop or kill
//! meanwhile cancels the restart.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironpod_pods::lifecycle;
use ironpod_pods::restart::Backoff;
use ironpod_pods::spec::RunOptions;
use ironpod_state::{status, Record, State};

#[derive(Default)]
struct Book {
    backoff: HashMap<String, Backoff>,
    pending: HashSet<String>,
}

/// Whether container `id` is to be started again (and its restart count so far):
/// `at_start`, when the service found it exited as it started. A yes marks the restart
/// pending (unless a user's stop got there first).
fn due(root: &Path, id: &str, at_start: bool) -> Option<(Record, u32)> {
    let state = State::open(root).ok()?;
    let rec = state.find(id).ok()?;
    if rec.status != status::EXITED || rec.auto_remove {
        return None;
    }
    let policy = serde_json::from_str::<RunOptions>(&rec.options).ok()?.restart;
    let rs = state.restart_state(id).ok()?;
    let code = rec.exit_code.unwrap_or(-1);
    let yes = if at_start {
        policy.restarts_at_service_start(code, rs.count, rs.manually_stopped)
    } else {
        policy.restarts_after_exit(code, rs.count, rs.manually_stopped)
    };
    if !yes || !state.begin_restart(id, at_start).ok()? {
        return None;
    }
    Some((rec, rs.count))
}

/// How long its last run lasted.
fn ran(rec: &Record) -> Duration {
    let t = |s: &Option<String>| s.as_deref().and_then(ironpod_images::time::parse_rfc3339);
    match (t(&rec.started_at), t(&rec.finished_at)) {
        (Some(a), Some(b)) => Duration::from_secs(b.saturating_sub(a)),
        _ => Duration::ZERO,
    }
}

/// Restarts container `id` if its policy says so, after the back-off.
fn schedule(root: Arc<PathBuf>, book: Arc<Mutex<Book>>, id: String, at_start: bool) {
    tokio::spawn(async move {
        let r = root.clone();
        let key = id.clone();
        let Ok(Some((rec, count))) =
            tokio::task::spawn_blocking(move || due(&r, &key, at_start)).await
        else {
            return;
        };
        let delay = {
            let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
            if !b.pending.insert(id.clone()) {
                return; // already on its way
            }
            if count == 0 {
                // A new run of restarts (the first, or after a user's start): a new back-off.
                b.backoff.remove(&id);
            }
            b.backoff.entry(id.clone()).or_default().next(ran(&rec))
        };
        tokio::time::sleep(delay).await;
        let r = root.clone();
        let key = id.clone();
        let done = tokio::task::spawn_blocking(move || {
            let state = State::open(&r)?;
            // A user's stop or kill meanwhile turned the restart off; a user's start or
            // removal made it moot.
            let rs = state.restart_state(&key)?;
            let still = rs.restarting
                && !rs.manually_stopped
                && state.find(&key).is_ok_and(|c| c.status == status::EXITED);
            if !still {
                state.set_restarting(&key, false)?;
                return Ok(false);
            }
            let rec = state.find(&key)?;
            drop(state);
            lifecycle::start_by_policy(&r, &rec, count + 1)
        })
        .await;
        book.lock().unwrap_or_else(|e| e.into_inner()).pending.remove(&id);
        match done {
            Ok(Ok(true)) => {
                tracing::info!(container = %id, restarts = count + 1, "restarted by its policy")
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(container = %id, "restart by its policy failed: {e}"),
            Err(e) => tracing::warn!(container = %id, "restart worker: {e}"),
        }
    });
}

/// Starts the supervisor: containers found exited are restarted per their policy, then
/// every `die` from now on is looked at.
pub fn spawn(root: Arc<PathBuf>) {
    let book = Arc::new(Mutex::new(Book::default()));
    tokio::spawn(async move {
        let r = root.clone();
        let start = tokio::task::spawn_blocking(move || {
            let follower = ironpod_events::Follower::new(&r);
            let exited: Vec<String> = State::open(&r)
                .and_then(|s| s.list())
                .map(|l| {
                    l.into_iter().filter(|c| c.status == status::EXITED).map(|c| c.id).collect()
                })
                .unwrap_or_default();
            // Restarts that were pending when the last service ended are decided again.
            if let Ok(s) = State::open(&r) {
                for id in &exited {
                    let _ = s.set_restarting(id, false);
                }
            }
            (follower, exited)
        })
        .await;
        let Ok((follower, exited)) = start else { return };
        for id in exited {
            schedule(root.clone(), book.clone(), id, true);
        }
        crate::events::follow_log(follower, |e| match (e.kind.as_str(), e.action.as_str()) {
            ("container", "die") => schedule(root.clone(), book.clone(), e.id, false),
            ("container", "destroy") => {
                book.lock().unwrap_or_else(|e| e.into_inner()).backoff.remove(&e.id);
            }
            _ => {}
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_lasts_from_start_to_finish() {
        let mut rec = ironpod_state::Record {
            started_at: Some("2026-01-01T00:00:00Z".into()),
            finished_at: Some("2026-01-01T00:00:12Z".into()),
            ..Default::default()
        };
        assert_eq!(ran(&rec), Duration::from_secs(12));
        rec.finished_at = None;
        assert_eq!(ran(&rec), Duration::ZERO);
    }
}
