//! References (name → manifest digest) in SQLite: safe for several processes at once (WAL,
//! busy timeout), durable (synchronous=FULL).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Digest, ImageError};

/// Adds column `column` (declared `decl`) to `table` unless it is there (a database made
/// before the column existed). Two processes opening a new database at once may both add
/// it: the one that comes second finds it added, which is not an error.
pub fn add_column(
    conn: &Connection,
    table: &str,
    column: &str,
    decl: &str,
) -> rusqlite::Result<()> {
    let has = conn
        .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?
        .exists([column])?;
    if has {
        return Ok(());
    }
    match conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}")) {
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("duplicate column name") => {
            Ok(())
        }
        r => r,
    }
}

/// Opens an SQLite database for use by several processes at once: WAL journal, a generous
/// busy timeout, synchronous=FULL (what is committed survives a crash).
pub fn open_sqlite(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    // WAL is a property of the file: set it once. Switching modes needs an exclusive lock
    // that SQLite may refuse without waiting while another process works, so retry.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            break;
        }
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// The database.
pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let conn = open_sqlite(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS refs (
                name TEXT PRIMARY KEY NOT NULL,
                manifest TEXT NOT NULL,
                updated INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS refs_manifest ON refs(manifest);
            CREATE TABLE IF NOT EXISTS leases (
                holder TEXT NOT NULL,
                manifest TEXT NOT NULL,
                PRIMARY KEY (holder, manifest)
            );
            CREATE TABLE IF NOT EXISTS build_cache (
                key TEXT PRIMARY KEY NOT NULL,
                manifest TEXT NOT NULL,
                created INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS sources (
                manifest TEXT NOT NULL,
                registry TEXT NOT NULL,
                repository TEXT NOT NULL,
                PRIMARY KEY (manifest, registry, repository)
            );",
        )?;
        Ok(Db { conn })
    }

    /// Points `name` at `manifest` (replacing an older target).
    pub fn set_ref(&self, name: &str, manifest: &Digest) -> Result<(), ImageError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.conn.execute(
            "INSERT INTO refs(name, manifest, updated) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET manifest = excluded.manifest, updated = excluded.updated",
            params![name, manifest.to_string(), now as i64],
        )?;
        Ok(())
    }

    /// The manifest `name` points at.
    pub fn get_ref(&self, name: &str) -> Result<Option<String>, ImageError> {
        Ok(self
            .conn
            .query_row("SELECT manifest FROM refs WHERE name = ?1", [name], |r| r.get(0))
            .optional()?)
    }

    /// Removes a name.
    pub fn delete_ref(&self, name: &str) -> Result<(), ImageError> {
        self.conn.execute("DELETE FROM refs WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Every (name, manifest).
    pub fn all_refs(&self) -> Result<Vec<(String, String)>, ImageError> {
        let mut st = self.conn.prepare("SELECT name, manifest FROM refs ORDER BY name")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that `registry/repository` holds the image `manifest` (for cross-repository
    /// blob mounts when pushing elsewhere in the same registry).
    pub fn add_source(
        &self,
        manifest: &Digest,
        registry: &str,
        repository: &str,
    ) -> Result<(), ImageError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO sources(manifest, registry, repository) VALUES (?1, ?2, ?3)",
            params![manifest.to_string(), registry, repository],
        )?;
        Ok(())
    }

    /// Repositories of `registry` known to hold some of our images.
    pub fn sources_in(&self, registry: &str) -> Result<Vec<String>, ImageError> {
        let mut st = self.conn.prepare(
            "SELECT DISTINCT repository FROM sources WHERE registry = ?1 ORDER BY repository",
        )?;
        let rows = st.query_map([registry], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks `manifest` as in use by `holder` (a pod or container id).
    pub fn add_lease(&self, holder: &str, manifest: &Digest) -> Result<(), ImageError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO leases(holder, manifest) VALUES (?1, ?2)",
            params![holder, manifest.to_string()],
        )?;
        Ok(())
    }

    /// Drops every lease of `holder`; returns how many there were.
    pub fn remove_leases(&self, holder: &str) -> Result<usize, ImageError> {
        Ok(self.conn.execute("DELETE FROM leases WHERE holder = ?1", [holder])?)
    }

    /// Holders of leases on `manifest`.
    pub fn lease_holders(&self, manifest: &Digest) -> Result<Vec<String>, ImageError> {
        let mut st =
            self.conn.prepare("SELECT holder FROM leases WHERE manifest = ?1 ORDER BY holder")?;
        let rows = st.query_map([manifest.to_string()], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every leased manifest.
    pub fn leased(&self) -> Result<Vec<String>, ImageError> {
        let mut st = self.conn.prepare("SELECT DISTINCT manifest FROM leases")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Names pointing at `manifest`.
    pub fn names_for(&self, manifest: &Digest) -> Result<Vec<String>, ImageError> {
        let mut st =
            self.conn.prepare("SELECT name FROM refs WHERE manifest = ?1 ORDER BY name")?;
        let rows = st.query_map([manifest.to_string()], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The image a build step with cache key `key` made, if one did.
    pub fn cached(&self, key: &str) -> Result<Option<String>, ImageError> {
        Ok(self
            .conn
            .query_row("SELECT manifest FROM build_cache WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Records the image a build step made.
    pub fn put_cached(&self, key: &str, manifest: &Digest) -> Result<(), ImageError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.conn.execute(
            "INSERT INTO build_cache(key, manifest, created) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET manifest = excluded.manifest, created = excluded.created",
            params![key, manifest.to_string(), now as i64],
        )?;
        Ok(())
    }

    /// Every manifest the build cache keeps.
    pub fn cached_manifests(&self) -> Result<Vec<String>, ImageError> {
        let mut st = self.conn.prepare("SELECT DISTINCT manifest FROM build_cache")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets every build step; returns how many there were.
    pub fn clear_cache(&self) -> Result<usize, ImageError> {
        Ok(self.conn.execute("DELETE FROM build_cache", [])?)
    }
}
