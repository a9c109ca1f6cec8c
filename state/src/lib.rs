//! Container records in SQLite under the state root (`<root>/containers.db`): safe for many
//! `ironpod` processes at once (WAL, busy timeout), durable (synchronous=FULL).
//!
//! Owns: the `containers` table, its schema and migrations, and the lifecycle states.
//! Knows nothing of how a pod runs: run options, specs and network settings are stored as
//! the JSON their owners (`ironpod-pods`, `ironpod-net`) hand over and read back.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use std::path::Path;

/// Errors of the container database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("container database: {0}")]
    Db(#[from] rusqlite::Error),
    /// No such container.
    #[error("No such container: {0}")]
    NotFound(String),
    /// A prefix matches several containers.
    #[error("multiple containers match {0:?}: use more of the id")]
    Ambiguous(String),
    /// The name is taken.
    #[error("the container name {0:?} is already in use")]
    NameInUse(String),
}

pub mod describe;
mod restart;
pub use restart::RestartState;

/// Lifecycle states (Docker's names).
pub mod status {
    /// Created, not started yet.
    pub const CREATED: &str = "created";
    /// Its init process runs.
    pub const RUNNING: &str = "running";
    /// Its init process ended (or the pod died).
    pub const EXITED: &str = "exited";
}

/// One container.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Record {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// Manifest digest of the image.
    pub image_digest: String,
    /// RFC 3339.
    pub created: String,
    /// Run options (JSON of `ironpod_pods::spec::RunOptions`).
    pub options: String,
    /// The OCI runtime spec (JSON).
    pub spec: String,
    /// See [`status`].
    pub status: String,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// The pod monitor process.
    pub monitor_pid: Option<i32>,
    /// Its start time (clock ticks after boot), to tell it from a reused pid.
    pub monitor_start: Option<i64>,
    /// The VMM process.
    pub vmm_pid: Option<i32>,
    /// The init process's pid in the guest.
    pub guest_pid: Option<i32>,
    /// The VM's hybrid vsock socket.
    pub vsock: Option<String>,
    /// `--rm`.
    pub auto_remove: bool,
    /// Its restart policy's bookkeeping.
    pub restart: RestartState,
    /// Its healthcheck's state (JSON of `ironpod_pods::health::Health`), if it has one.
    pub health: Option<String>,
}

/// The database.
pub struct State {
    conn: Connection,
}

const COLUMNS: &str = "id, name, image, image_digest, created, options, spec, status, exit_code, \
    oom_killed, error, started_at, finished_at, monitor_pid, monitor_start, vmm_pid, guest_pid, \
    vsock, auto_remove";

/// What reads take: [`COLUMNS`] and the restart bookkeeping.
const READ_COLUMNS: &str = "id, name, image, image_digest, created, options, spec, status, \
    exit_code, oom_killed, error, started_at, finished_at, monitor_pid, monitor_start, vmm_pid, \
    guest_pid, vsock, auto_remove, restart_count, manually_stopped, restarting, health";

fn record(r: &Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        id: r.get(0)?,
        name: r.get(1)?,
        image: r.get(2)?,
        image_digest: r.get(3)?,
        created: r.get(4)?,
        options: r.get(5)?,
        spec: r.get(6)?,
        status: r.get(7)?,
        exit_code: r.get(8)?,
        oom_killed: r.get(9)?,
        error: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
        monitor_pid: r.get(13)?,
        monitor_start: r.get(14)?,
        vmm_pid: r.get(15)?,
        guest_pid: r.get(16)?,
        vsock: r.get(17)?,
        auto_remove: r.get(18)?,
        restart: RestartState {
            count: r.get::<_, i64>(19)?.clamp(0, u32::MAX as i64) as u32,
            manually_stopped: r.get::<_, i64>(20)? != 0,
            restarting: r.get::<_, i64>(21)? != 0,
        },
        health: r.get(22)?,
    })
}

impl Record {
    /// A new record in state `created`.
    pub fn new(
        id: &str,
        name: &str,
        image: &str,
        image_digest: &str,
        options: String,
        spec: String,
    ) -> Self {
        Record {
            id: id.into(),
            name: name.into(),
            image: image.into(),
            image_digest: image_digest.into(),
            created: ironpod_images::time::now_rfc3339(),
            options,
            spec,
            status: status::CREATED.into(),
            exit_code: None,
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
            monitor_pid: None,
            monitor_start: None,
            vmm_pid: None,
            guest_pid: None,
            vsock: None,
            auto_remove: false,
            restart: RestartState::default(),
            health: None,
        }
    }
}

impl State {
    /// Opens (creating) `<root>/containers.db`.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        ironpod_images::private::private_dir(root).ok();
        let conn = ironpod_images::open_sqlite(&root.join("containers.db"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS containers (
                id TEXT PRIMARY KEY NOT NULL,
                name TEXT UNIQUE NOT NULL,
                image TEXT NOT NULL,
                image_digest TEXT NOT NULL,
                created TEXT NOT NULL,
                options TEXT NOT NULL,
                spec TEXT NOT NULL,
                status TEXT NOT NULL,
                exit_code INTEGER,
                oom_killed INTEGER NOT NULL DEFAULT 0,
                error TEXT,
                started_at TEXT,
                finished_at TEXT,
                monitor_pid INTEGER,
                monitor_start INTEGER,
                vmm_pid INTEGER,
                guest_pid INTEGER,
                vsock TEXT,
                auto_remove INTEGER NOT NULL DEFAULT 0
            );",
        )?;
        // Added after the first release: databases made before get the column.
        ironpod_images::add_column(&conn, "containers", "network", "TEXT")?;
        restart::add_columns(&conn)?;
        Ok(State { conn })
    }

    /// The state root this database is in.
    pub fn root(&self) -> Option<std::path::PathBuf> {
        Some(Path::new(self.conn.path()?).parent()?.to_path_buf())
    }

    /// Adds a container (its name must be free).
    pub fn insert(&self, r: &Record) -> Result<(), StateError> {
        let res = self.conn.execute(
            &format!("INSERT INTO containers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"),
            params![
                r.id, r.name, r.image, r.image_digest, r.created, r.options, r.spec, r.status,
                r.exit_code, r.oom_killed, r.error, r.started_at, r.finished_at, r.monitor_pid,
                r.monitor_start, r.vmm_pid, r.guest_pid, r.vsock, r.auto_remove
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation && msg.contains("name") =>
            {
                Err(StateError::NameInUse(r.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Finds a container by name, full id or unique id prefix.
    pub fn find(&self, key: &str) -> Result<Record, StateError> {
        let by_name = self
            .conn
            .query_row(
                &format!("SELECT {READ_COLUMNS} FROM containers WHERE name = ?1 OR id = ?1"),
                [key],
                record,
            )
            .optional()?;
        if let Some(r) = by_name {
            return Ok(r);
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StateError::NotFound(key.into()));
        }
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {READ_COLUMNS} FROM containers WHERE id LIKE ?1 || '%'"))?;
        let mut found: Vec<Record> = stmt.query_map([key], record)?.collect::<Result<_, _>>()?;
        match found.len() {
            0 => Err(StateError::NotFound(key.into())),
            1 => Ok(found.remove(0)),
            _ => Err(StateError::Ambiguous(key.into())),
        }
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Record>, StateError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {READ_COLUMNS} FROM containers ORDER BY created DESC, rowid DESC"
        ))?;
        let rows = stmt.query_map([], record)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records that the pod is up and the init process runs.
    pub fn set_running(
        &self,
        id: &str,
        vmm_pid: i32,
        guest_pid: i32,
        vsock: &str,
        at: &str,
    ) -> Result<(), StateError> {
        self.conn.execute(
            "UPDATE containers SET status = ?2, vmm_pid = ?3, guest_pid = ?4, vsock = ?5, started_at = ?6 WHERE id = ?1",
            params![id, status::RUNNING, vmm_pid, guest_pid, vsock, at],
        )?;
        Ok(())
    }

    /// Records the monitor process.
    pub fn set_monitor(&self, id: &str, pid: i32, start: Option<i64>) -> Result<(), StateError> {
        self.conn.execute(
            "UPDATE containers SET monitor_pid = ?2, monitor_start = ?3 WHERE id = ?1",
            params![id, pid, start],
        )?;
        Ok(())
    }

    /// Records the end (only the first end counts).
    pub fn set_exited(
        &self,
        id: &str,
        code: i32,
        oom: bool,
        error: Option<&str>,
        at: &str,
    ) -> Result<bool, StateError> {
        let n = self.conn.execute(
            "UPDATE containers SET status = ?2, exit_code = ?3, oom_killed = ?4, error = ?5, finished_at = ?6,
                 vmm_pid = NULL, vsock = NULL
             WHERE id = ?1 AND status != ?2",
            params![id, status::EXITED, code, oom, error, at],
        )?;
        Ok(n == 1)
    }

    /// Records the container's network settings (JSON of `ironpod_net::NetworkSettings`).
    pub fn set_network(&self, id: &str, settings: &str) -> Result<(), StateError> {
        self.conn
            .execute("UPDATE containers SET network = ?2 WHERE id = ?1", params![id, settings])?;
        Ok(())
    }

    /// The container's network settings, once its pod started.
    /// (A record whose settings do not parse as `T` has none.)
    pub fn network<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
    ) -> Result<Option<T>, StateError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT network FROM containers WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Replaces the run options of a container that has not started yet (created, no
    /// monitor); false when it has started meanwhile.
    pub fn set_options_while_created(&self, id: &str, options: &str) -> Result<bool, StateError> {
        let n = self.conn.execute(
            "UPDATE containers SET options = ?2
             WHERE id = ?1 AND status = ?3 AND monitor_pid IS NULL",
            params![id, options, status::CREATED],
        )?;
        Ok(n == 1)
    }

    /// Makes an exited container startable again (`created`, no pod, no exit): its disks
    /// and log stay. False when it is not exited (started meanwhile).
    pub fn rearm(&self, id: &str) -> Result<bool, StateError> {
        self.rearm_where(id, "")
    }

    /// As [`State::rearm`], for a restart by its policy: only while that restart is still
    /// pending and no user stopped the container (a user's stop, start or removal that
    /// came after the policy's decision wins). Returns whether it was rearmed.
    pub fn rearm_restart(&self, id: &str) -> Result<bool, StateError> {
        self.rearm_where(id, " AND restarting = 1 AND manually_stopped = 0")
    }

    /// Rearms an exited container that also meets `also` (an SQL condition of our own).
    fn rearm_where(&self, id: &str, also: &str) -> Result<bool, StateError> {
        let sql = format!(
            "UPDATE containers SET status = ?2, monitor_pid = NULL, monitor_start = NULL,
                 vmm_pid = NULL, guest_pid = NULL, vsock = NULL, exit_code = NULL,
                 oom_killed = 0, error = NULL, network = NULL
             WHERE id = ?1 AND status = ?3{also}"
        );
        let n = self.conn.execute(&sql, params![id, status::CREATED, status::EXITED])?;
        Ok(n == 1)
    }

    /// Gives a container another name (which must be free).
    pub fn rename(&self, id: &str, name: &str) -> Result<(), StateError> {
        match self.conn.execute("UPDATE containers SET name = ?2 WHERE id = ?1", params![id, name])
        {
            Ok(0) => Err(StateError::NotFound(id.into())),
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation && msg.contains("name") =>
            {
                Err(StateError::NameInUse(name.into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a record.
    pub fn delete(&self, id: &str) -> Result<(), StateError> {
        self.conn.execute("DELETE FROM containers WHERE id = ?1", [id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn rec(id: &str, name: &str) -> Record {
        Record::new(id, name, "demo", "sha256:00", "{}".into(), "{}".into())
    }

    #[test]
    fn insert_find_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.insert(&rec("abc123", "one")).unwrap();
        s.insert(&rec("abd456", "two")).unwrap();
        assert!(matches!(s.insert(&rec("ffff", "one")), Err(StateError::NameInUse(_))));
        assert_eq!(s.find("one").unwrap().id, "abc123");
        assert_eq!(s.find("abd").unwrap().name, "two");
        assert!(matches!(s.find("ab"), Err(StateError::Ambiguous(_))));
        assert!(matches!(s.find("zz"), Err(StateError::NotFound(_))));
        assert!(matches!(s.find("'; DROP TABLE containers; --"), Err(StateError::NotFound(_))));
        s.set_running("abc123", 10, 1, "/run/x", "t1").unwrap();
        assert_eq!(s.find("one").unwrap().status, status::RUNNING);
        assert!(s.set_exited("abc123", 7, false, None, "t2").unwrap());
        assert!(!s.set_exited("abc123", 9, false, None, "t3").unwrap(), "first end wins");
        let r = s.find("one").unwrap();
        assert_eq!((r.status.as_str(), r.exit_code), (status::EXITED, Some(7)));
        assert_eq!(s.list().unwrap().len(), 2);
        assert_eq!(s.network::<serde_json::Value>("abc123").unwrap(), None);
        s.set_network("abc123", r#"{"network":"bridge","address":"10.88.0.2"}"#).unwrap();
        let n: serde_json::Value = s.network("abc123").unwrap().unwrap();
        assert_eq!(n["address"], "10.88.0.2");
        #[derive(serde::Deserialize)]
        struct Strict {
            #[allow(dead_code)]
            port: u16,
        }
        assert!(s.network::<Strict>("abc123").unwrap().is_none(), "unparsable: none");
        s.delete("abc123").unwrap();
        assert!(s.find("one").is_err());
    }

    #[test]
    fn rename_and_options_before_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.insert(&rec("abc123", "one")).unwrap();
        s.insert(&rec("abd456", "two")).unwrap();
        assert!(matches!(s.rename("abc123", "two"), Err(StateError::NameInUse(_))));
        s.rename("abc123", "uno").unwrap();
        assert_eq!(s.find("uno").unwrap().id, "abc123");
        assert!(matches!(s.rename("nope", "x"), Err(StateError::NotFound(_))));
        assert!(s.set_options_while_created("abc123", r#"{"a":1}"#).unwrap());
        assert_eq!(s.find("uno").unwrap().options, r#"{"a":1}"#);
        s.set_monitor("abc123", 1, None).unwrap();
        assert!(!s.set_options_while_created("abc123", "{}").unwrap(), "starting: fixed");
        assert!(!s.rearm("abc123").unwrap(), "only an exited one");
        s.set_exited("abc123", 3, true, Some("x"), "t").unwrap();
        assert!(s.rearm("abc123").unwrap());
        let r = s.find("abc123").unwrap();
        assert_eq!(
            (r.status.as_str(), r.exit_code, r.monitor_pid, r.oom_killed),
            (status::CREATED, None, None, false)
        );
        assert_eq!(r.options, r#"{"a":1}"#, "kept");
        assert_eq!(s.find("uno").unwrap().options, r#"{"a":1}"#);
    }
}
