//! What a restart policy needs kept per container: how often it was restarted, whether a
//! user stopped it (then no policy restarts it while the service runs), and whether a
//! restart is pending (Docker's `restarting` state); and its healthcheck's state.

use rusqlite::{params, Connection, OptionalExtension};

use crate::{State, StateError};

/// A container's restart bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestartState {
    /// Restarts by its policy since a user last started it.
    pub count: u32,
    /// A user stopped or killed it (cleared when a user starts it).
    pub manually_stopped: bool,
    /// Its policy will start it again after a back-off delay.
    pub restarting: bool,
}

pub(crate) fn add_columns(conn: &Connection) -> rusqlite::Result<()> {
    let int = "INTEGER NOT NULL DEFAULT 0";
    ironpod_images::add_column(conn, "containers", "restart_count", int)?;
    ironpod_images::add_column(conn, "containers", "manually_stopped", int)?;
    ironpod_images::add_column(conn, "containers", "restarting", int)?;
    ironpod_images::add_column(conn, "containers", "health", "TEXT")
}

impl State {
    /// Container `id`'s restart bookkeeping (the default for an unknown id).
    pub fn restart_state(&self, id: &str) -> Result<RestartState, StateError> {
        let r = self
            .conn
            .query_row(
                "SELECT restart_count, manually_stopped, restarting FROM containers WHERE id = ?1",
                [id],
                |r| {
                    Ok(RestartState {
                        count: r.get::<_, i64>(0)?.clamp(0, u32::MAX as i64) as u32,
                        manually_stopped: r.get::<_, i64>(1)? != 0,
                        restarting: r.get::<_, i64>(2)? != 0,
                    })
                },
            )
            .optional()?;
        Ok(r.unwrap_or_default())
    }

    /// Marks that a user stopped (`true`) or started (`false`) container `id`; a user's
    /// start also begins a new count of restarts.
    pub fn set_manually_stopped(&self, id: &str, stopped: bool) -> Result<(), StateError> {
        let sql = if stopped {
            "UPDATE containers SET manually_stopped = 1, restarting = 0 WHERE id = ?1"
        } else {
            "UPDATE containers SET manually_stopped = 0, restart_count = 0 WHERE id = ?1"
        };
        self.conn.execute(sql, [id])?;
        Ok(())
    }

    /// Marks a restart of container `id` pending, unless a user stopped it (a stop that
    /// came after the policy's decision wins) or `over_stop` (the service's own start,
    /// where `always` restarts what a user stopped). Returns whether it is pending.
    pub fn begin_restart(&self, id: &str, over_stop: bool) -> Result<bool, StateError> {
        let n = self.conn.execute(
            "UPDATE containers SET restarting = 1,
                 manually_stopped = CASE WHEN ?2 THEN 0 ELSE manually_stopped END
             WHERE id = ?1 AND (manually_stopped = 0 OR ?2)",
            params![id, over_stop],
        )?;
        Ok(n == 1)
    }

    /// Marks a restart of container `id` pending (or no longer).
    pub fn set_restarting(&self, id: &str, restarting: bool) -> Result<(), StateError> {
        self.conn.execute(
            "UPDATE containers SET restarting = ?2 WHERE id = ?1",
            params![id, restarting as i64],
        )?;
        Ok(())
    }

    /// Sets container `id`'s health (JSON), or clears it.
    pub fn set_health(&self, id: &str, health: Option<&str>) -> Result<(), StateError> {
        self.conn
            .execute("UPDATE containers SET health = ?2 WHERE id = ?1", params![id, health])?;
        Ok(())
    }

    /// Records that container `id`'s policy restarted it: its count becomes `count`.
    pub fn set_restart_count(&self, id: &str, count: u32) -> Result<(), StateError> {
        self.conn.execute(
            "UPDATE containers SET restart_count = ?2 WHERE id = ?1",
            params![id, count as i64],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_bookkeeping() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.insert(&crate::tests::rec("a", "one")).unwrap();
        assert_eq!(s.restart_state("a").unwrap(), RestartState::default());
        s.set_restart_count("a", 3).unwrap();
        s.set_restarting("a", true).unwrap();
        let r = s.restart_state("a").unwrap();
        assert_eq!((r.count, r.restarting, r.manually_stopped), (3, true, false));
        s.set_manually_stopped("a", true).unwrap();
        let r = s.restart_state("a").unwrap();
        assert_eq!((r.count, r.restarting, r.manually_stopped), (3, false, true));
        assert!(!s.begin_restart("a", false).unwrap(), "a user's stop wins");
        assert!(s.begin_restart("a", true).unwrap());
        let r = s.restart_state("a").unwrap();
        assert_eq!((r.count, r.restarting, r.manually_stopped), (3, true, false));
        s.set_manually_stopped("a", false).unwrap();
        assert_eq!(s.restart_state("a").unwrap().count, 0);
        // A restart rearms only an exited container still waiting for it, unstopped.
        let now = "2026-01-01T00:00:00Z";
        s.set_exited("a", 1, false, None, now).unwrap();
        s.set_restarting("a", false).unwrap();
        assert!(!s.rearm_restart("a").unwrap(), "not pending");
        assert!(s.begin_restart("a", false).unwrap());
        s.set_manually_stopped("a", true).unwrap();
        assert!(!s.rearm_restart("a").unwrap(), "a user's stop came after the decision");
        assert!(s.begin_restart("a", true).unwrap());
        assert!(s.rearm_restart("a").unwrap());
        assert_eq!(s.find("a").unwrap().status, crate::status::CREATED);
        assert!(!s.rearm_restart("a").unwrap() && !s.rearm("a").unwrap(), "not exited");
    }
}
