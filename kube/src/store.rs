//! The object store: desired state and status of every object, in SQLite under the state
//! root (`<root>/kube.db`, mode 0600: it holds Secrets), safe for many processes at once.
//!
//! Every write takes the next resource version from one counter, so a reader that saw
//! version N knows something changed when the counter moved ([`KubeStore::version`]).
//! Objects being deleted keep their row, with a deletion time, until whoever runs them
//! finishes ([`KubeStore::finalize`]); kinds nothing runs go at once.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::meta::DEFAULT_NAMESPACE;
use crate::object::{Body, Kind, Object};

/// Errors of the object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("object store: {0}")]
    Db(#[from] rusqlite::Error),
    /// No such object.
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// Its plural kind (as kubectl says it).
        kind: String,
        /// Its name.
        name: String,
    },
    /// It exists already.
    #[error("{kind} \"{name}\" already exists")]
    Exists {
        /// Its plural kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// Someone wrote it since it was read.
    #[error("{0}: the object has been modified; read it again and retry")]
    Conflict(String),
    /// The change is not allowed.
    #[error("{0}")]
    Invalid(String),
    /// A stored row is not an object (a newer or damaged database).
    #[error("stored {0} is unreadable: {1}")]
    Corrupt(String, String),
}

/// An object as stored: its metadata filled in (uid, resource version, generation, creation
/// time), and its status.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The object.
    pub object: Object,
    /// Its status as its controller wrote it (`Null` before).
    pub status: Value,
}

impl Stored {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.object.metadata.name
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        self.object.metadata.namespace()
    }

    /// Its uid.
    pub fn uid(&self) -> &str {
        self.object.metadata.uid.as_deref().unwrap_or_default()
    }

    /// Its resource version.
    pub fn version(&self) -> i64 {
        let rv = self.object.metadata.resource_version.as_deref();
        rv.and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Whether its deletion was asked for.
    pub fn deleting(&self) -> bool {
        self.object.metadata.deletion_timestamp.is_some()
    }

    /// The document with status, as `get -o yaml` shows it.
    pub fn to_value(&self) -> Value {
        let mut v = self.object.to_value();
        if !self.status.is_null() {
            if let Some(m) = v.as_object_mut() {
                m.insert("status".into(), self.status.clone());
            }
        }
        v
    }

    /// The status as `T` (its default when unset or unreadable).
    pub fn status_as<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value(self.status.clone()).unwrap_or_default()
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Made.
    Created,
    /// Changed.
    Configured,
    /// Already so.
    Unchanged,
}

impl Applied {
    /// kubectl's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        }
    }
}

/// An event about an object (`describe` lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `Normal` or `Warning`.
    pub kind: String,
    /// A word (`Scheduled`, `Pulled`, `Started`, `Unhealthy`, `BackOff`, `Killing`).
    pub reason: String,
    /// What happened.
    pub message: String,
    /// How many times (the same event again raises the count).
    pub count: i64,
    /// First time (RFC 3339).
    pub first: String,
    /// Last time (RFC 3339).
    pub last: String,
    /// Who saw it (`kubelet`, `replicaset-controller`, …).
    pub source: String,
}

/// The object store.
pub struct KubeStore {
    conn: Connection,
}

/// Most events kept per object.
const EVENTS_PER_OBJECT: i64 = 100;

impl KubeStore {
    /// Opens (or makes) `<root>/kube.db`, with the `default` namespace.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        ironpod_images::private::private_dir(root).ok();
        let path = root.join("kube.db");
        let conn = ironpod_images::open_sqlite(&path)?;
        // Secrets live here: only root reads it (the root is 0700 too).
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                kind TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                uid TEXT NOT NULL UNIQUE,
                version INTEGER NOT NULL,
                object TEXT NOT NULL,
                status TEXT,
                PRIMARY KEY (kind, namespace, name)
            );
            CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 0),
                value INTEGER NOT NULL);
            INSERT OR IGNORE INTO counter VALUES (0, 0);
            CREATE TABLE IF NOT EXISTS events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                uid TEXT NOT NULL,
                kind TEXT NOT NULL,
                reason TEXT NOT NULL,
                message TEXT NOT NULL,
                count INTEGER NOT NULL,
                first TEXT NOT NULL,
                last TEXT NOT NULL,
                source TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS events_uid ON events (uid);",
        )?;
        let mut s = KubeStore { conn };
        if s.get(Kind::Namespace, "", DEFAULT_NAMESPACE)?.is_none() {
            let ns = Object {
                metadata: crate::meta::ObjectMeta {
                    name: DEFAULT_NAMESPACE.into(),
                    ..Default::default()
                },
                body: Body::Namespace,
            };
            match s.create(ns) {
                Ok(_) | Err(StoreError::Exists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(s)
    }

    /// A write transaction that takes the write lock at once (waiting for it up to the busy
    /// timeout): one that read first and then wrote could fail at once when another process
    /// wrote meanwhile.
    fn write_tx(&mut self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        Ok(self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }

    /// The store's version: it moves with every write.
    pub fn version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row("SELECT value FROM counter WHERE id = 0", [], |r| r.get(0))?)
    }

    fn ns_key(kind: Kind, o: &Object) -> String {
        match kind.namespaced() {
            true => o.metadata.namespace().to_string(),
            false => String::new(),
        }
    }

    /// One object (`ns` is ignored for cluster-wide kinds).
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Option<Stored>, StoreError> {
        let ns = if kind.namespaced() { ns } else { "" };
        let row = self
            .conn
            .query_row(
                "SELECT object, status FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                params![kind.name(), ns, name],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .optional()?;
        row.map(|(o, s)| decode(kind, name, &o, s.as_deref())).transpose()
    }

    /// One object that must exist.
    pub fn must_get(&self, kind: Kind, ns: &str, name: &str) -> Result<Stored, StoreError> {
        self.get(kind, ns, name)?
            .ok_or_else(|| StoreError::NotFound { kind: kind.plural().into(), name: name.into() })
    }

    /// Every object of a kind, in one namespace or all (`None`), by namespace and name.
    pub fn list(&self, kind: Kind, ns: Option<&str>) -> Result<Vec<Stored>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, object, status FROM objects WHERE kind = ?1
             AND (?2 IS NULL OR namespace = ?2) ORDER BY namespace, name",
        )?;
        let ns = if kind.namespaced() { ns } else { None };
        let rows = stmt.query_map(params![kind.name(), ns], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, o, s) = row?;
            out.push(decode(kind, &name, &o, s.as_deref())?);
        }
        Ok(out)
    }

    fn bump(tx: &rusqlite::Transaction<'_>) -> Result<i64, StoreError> {
        tx.execute("UPDATE counter SET value = value + 1 WHERE id = 0", [])?;
        Ok(tx.query_row("SELECT value FROM counter WHERE id = 0", [], |r| r.get(0))?)
    }

    fn check_namespace(
        tx: &rusqlite::Transaction<'_>,
        kind: Kind,
        o: &Object,
    ) -> Result<(), StoreError> {
        if !kind.namespaced() {
            return Ok(());
        }
        let ns = o.metadata.namespace();
        let row: Option<String> = tx
            .query_row(
                "SELECT object FROM objects WHERE kind = 'Namespace' AND namespace = '' AND name = ?1",
                [ns],
                |r| r.get(0),
            )
            .optional()?;
        let deleting = |text: &str| {
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            v.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
        };
        match row {
            None => Err(StoreError::NotFound { kind: "namespaces".into(), name: ns.into() }),
            Some(r) if deleting(&r) => Err(StoreError::Invalid(format!(
                "namespace {ns:?} is being deleted: no new objects in it"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Makes a new object (fails if its name is taken).
    pub fn create(&mut self, mut o: Object) -> Result<Stored, StoreError> {
        let kind = o.kind();
        let tx = self.write_tx()?;
        Self::check_namespace(&tx, kind, &o)?;
        let ns = Self::ns_key(kind, &o);
        let taken: bool = tx
            .prepare("SELECT 1 FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3")?
            .exists(params![kind.name(), ns, o.metadata.name])?;
        if taken {
            return Err(StoreError::Exists { kind: kind.plural().into(), name: o.metadata.name });
        }
        let rv = Self::bump(&tx)?;
        let uid = new_uid();
        let m = &mut o.metadata;
        if kind.namespaced() {
            m.namespace = Some(ns.clone());
        }
        m.uid = Some(uid.clone());
        m.resource_version = Some(rv.to_string());
        m.generation = Some(1);
        m.creation_timestamp = Some(ironpod_images::time::now_rfc3339());
        m.deletion_timestamp = None;
        normalise(&mut o)?;
        allocate(&tx, &mut o, None)?;
        let text = o.to_value().to_string();
        tx.execute(
            "INSERT INTO objects (kind, namespace, name, uid, version, object, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
            params![kind.name(), ns, o.metadata.name, uid, rv, text],
        )?;
        tx.commit()?;
        Ok(Stored { object: o, status: Value::Null })
    }

    /// Creates or updates an object from a manifest (`kube apply`): an update keeps the uid,
    /// creation time and status, keeps owner references when the manifest gives none, and
    /// raises the generation when anything but metadata changed.
    pub fn apply(&mut self, o: Object) -> Result<(Applied, Stored), StoreError> {
        let kind = o.kind();
        let ns = Self::ns_key(kind, &o);
        let Some(old) = self.get(kind, &ns, &o.metadata.name)? else {
            return Ok((Applied::Created, self.create(o)?));
        };
        if old.deleting() {
            return Err(StoreError::Invalid(format!(
                "{} {:?} is being deleted: apply again once it is gone",
                kind.singular(),
                o.metadata.name
            )));
        }
        let mut new = o;
        let m = &mut new.metadata;
        if m.uid.as_ref().is_some_and(|u| Some(u) != old.object.metadata.uid.as_ref()) {
            return Err(StoreError::Conflict(format!(
                "{} {:?}: the manifest's uid is of an object since deleted",
                kind.singular(),
                m.name
            )));
        }
        if m.owner_references.is_empty() {
            m.owner_references = old.object.metadata.owner_references.clone();
        }
        self.update_from(new, &old)
    }

    /// Writes `new` over `old` (read before): fails with a conflict when the object changed
    /// since `old` was read. Used by controllers (scale, annotations) and by `apply`.
    pub fn update(&mut self, new: Object, old: &Stored) -> Result<Stored, StoreError> {
        self.update_from(new, old).map(|(_, s)| s)
    }

    fn update_from(
        &mut self,
        mut new: Object,
        old: &Stored,
    ) -> Result<(Applied, Stored), StoreError> {
        let kind = new.kind();
        if kind != old.object.kind() || new.metadata.name != old.name() {
            return Err(StoreError::Invalid("an update must be of the same object".into()));
        }
        normalise(&mut new)?;
        let tx = self.write_tx()?;
        allocate(&tx, &mut new, Some(&old.object))?;
        check_immutable(&old.object, &new)?;
        let om = &old.object.metadata;
        let spec_changed = new.spec_value() != old.object.spec_value();
        let m = &mut new.metadata;
        if kind.namespaced() {
            m.namespace = Some(old.namespace().to_string());
        }
        m.uid = om.uid.clone();
        m.creation_timestamp = om.creation_timestamp.clone();
        m.deletion_timestamp = om.deletion_timestamp.clone();
        m.resource_version = om.resource_version.clone();
        m.generation = Some(om.generation.unwrap_or(1) + i64::from(spec_changed));
        if new == old.object {
            return Ok((Applied::Unchanged, old.clone()));
        }
        let rv = Self::bump(&tx)?;
        new.metadata.resource_version = Some(rv.to_string());
        let text = new.to_value().to_string();
        let n = tx.execute(
            "UPDATE objects SET object = ?1, version = ?2 WHERE uid = ?3 AND version = ?4",
            params![text, rv, old.uid(), old.version()],
        )?;
        if n != 1 {
            return Err(StoreError::Conflict(old.object.reference()));
        }
        tx.commit()?;
        Ok((Applied::Configured, Stored { object: new, status: old.status.clone() }))
    }

    /// Writes an object's status (`uid`: the object it is of; an object since deleted and
    /// made again is left alone). Returns false when the object is gone.
    pub fn set_status(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        uid: &str,
        status: &Value,
    ) -> Result<bool, StoreError> {
        let ns = if kind.namespaced() { ns } else { "" };
        let tx = self.write_tx()?;
        let cur: Option<(Option<String>, String)> = tx
            .query_row(
                "SELECT status, object FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3 AND uid = ?4",
                params![kind.name(), ns, name, uid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((cur, object)) = cur else { return Ok(false) };
        let text = status.to_string();
        if cur.as_deref() == Some(text.as_str()) {
            return Ok(true);
        }
        let rv = Self::bump(&tx)?;
        let mut o: Value = serde_json::from_str(&object)
            .map_err(|e| StoreError::Corrupt(name.into(), e.to_string()))?;
        if let Some(m) = o.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        tx.execute(
            "UPDATE objects SET status = ?1, version = ?2, object = ?3 WHERE uid = ?4",
            params![text, rv, o.to_string(), uid],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Asks for an object's deletion: kinds that something runs (pods, workloads,
    /// namespaces) get a deletion time and stay until [`Self::finalize`]; the others go now.
    /// Returns the object as it was.
    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) -> Result<Stored, StoreError> {
        if kind == Kind::Namespace && name == DEFAULT_NAMESPACE {
            return Err(StoreError::Invalid("the default namespace cannot be deleted".into()));
        }
        let old = self.must_get(kind, ns, name)?;
        if !finalized_by_controller(kind) {
            self.finalize(kind, ns, name, old.uid())?;
            return Ok(old);
        }
        if old.deleting() {
            return Ok(old);
        }
        let mut o = old.object.clone();
        o.metadata.deletion_timestamp = Some(ironpod_images::time::now_rfc3339());
        let tx = self.write_tx()?;
        let rv = Self::bump(&tx)?;
        o.metadata.resource_version = Some(rv.to_string());
        let n = tx.execute(
            "UPDATE objects SET object = ?1, version = ?2 WHERE uid = ?3 AND version = ?4",
            params![o.to_value().to_string(), rv, old.uid(), old.version()],
        )?;
        if n != 1 {
            // Written meanwhile: mark what is there now.
            drop(tx);
            return self.delete(kind, ns, name);
        }
        tx.commit()?;
        Ok(old)
    }

    /// Removes an object for good (its events too). Returns false when it was gone.
    pub fn finalize(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> Result<bool, StoreError> {
        let ns = if kind.namespaced() { ns } else { "" };
        let tx = self.write_tx()?;
        let n = tx.execute(
            "DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3 AND uid = ?4",
            params![kind.name(), ns, name, uid],
        )?;
        tx.execute("DELETE FROM events WHERE uid = ?1", [uid])?;
        if n > 0 {
            Self::bump(&tx)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Records an event about an object; the same reason and message as its last event
    /// raises that one's count.
    pub fn record_event(
        &mut self,
        uid: &str,
        kind: &str,
        reason: &str,
        message: &str,
        source: &str,
    ) -> Result<(), StoreError> {
        let now = ironpod_images::time::now_rfc3339();
        let tx = self.write_tx()?;
        let last: Option<(i64, String, String)> = tx
            .query_row(
                "SELECT id, reason, message FROM events WHERE uid = ?1 ORDER BY id DESC LIMIT 1",
                [uid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        match last {
            Some((id, r, m)) if r == reason && m == message => {
                tx.execute(
                    "UPDATE events SET count = count + 1, last = ?1 WHERE id = ?2",
                    params![now, id],
                )?;
            }
            _ => {
                tx.execute(
                    "INSERT INTO events (uid, kind, reason, message, count, first, last, source)
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?6)",
                    params![uid, kind, reason, message, now, source],
                )?;
                tx.execute(
                    "DELETE FROM events WHERE uid = ?1 AND id NOT IN
                     (SELECT id FROM events WHERE uid = ?1 ORDER BY id DESC LIMIT ?2)",
                    params![uid, EVENTS_PER_OBJECT],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// An object's events, oldest first.
    pub fn events(&self, uid: &str) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, reason, message, count, first, last, source FROM events
             WHERE uid = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([uid], |r| {
            Ok(Event {
                kind: r.get(0)?,
                reason: r.get(1)?,
                message: r.get(2)?,
                count: r.get(3)?,
                first: r.get(4)?,
                last: r.get(5)?,
                source: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Whether deleting the kind waits for a controller to finish it.
pub fn finalized_by_controller(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Pod
            | Kind::ReplicationController
            | Kind::ReplicaSet
            | Kind::Deployment
            | Kind::Namespace
    )
}

/// Hands a Service its cluster IP and node ports (kept from `old` when it has them).
fn allocate(
    tx: &rusqlite::Transaction<'_>,
    o: &mut Object,
    old: Option<&Object>,
) -> Result<(), StoreError> {
    if o.kind() != Kind::Service {
        return Ok(());
    }
    let mut taken = crate::allocate::Taken::default();
    let mut stmt = tx.prepare("SELECT object, uid FROM objects WHERE kind = 'Service'")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let me = old.and_then(|o| o.metadata.uid.clone());
    for row in rows {
        let (text, uid) = row?;
        if Some(&uid) == me.as_ref() {
            continue;
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt("service".into(), e.to_string()))?;
        if let Ok(Object { body: Body::Service(s), .. }) = Object::from_value(v) {
            taken.add(&s);
        }
    }
    crate::allocate::service(o, old, &taken).map_err(StoreError::Invalid)
}

/// Stored forms: a Secret's `stringData` merged into `data`.
fn normalise(o: &mut Object) -> Result<(), StoreError> {
    if let Body::Secret(s) = &o.body {
        o.body = Body::Secret(s.normalised().map_err(StoreError::Invalid)?);
    }
    Ok(())
}

/// Refuses changes Kubernetes does not allow: immutable ConfigMaps and Secrets, a Service's
/// address, a workload's selector.
fn check_immutable(old: &Object, new: &Object) -> Result<(), StoreError> {
    let refuse = |what: &str| {
        Err(StoreError::Invalid(format!("{}: {what} cannot be changed", old.reference())))
    };
    match (&old.body, &new.body) {
        (Body::ConfigMap(a), Body::ConfigMap(b)) if a.immutable == Some(true) && a != b => {
            refuse("an immutable ConfigMap")
        }
        (Body::Secret(a), Body::Secret(b)) if a.immutable == Some(true) && a != b => {
            refuse("an immutable Secret")
        }
        (Body::Service(a), Body::Service(b))
            if b.cluster_ip.is_some() && a.cluster_ip.is_some() && a.cluster_ip != b.cluster_ip =>
        {
            refuse("spec.clusterIP")
        }
        (Body::Pod(a), Body::Pod(b)) if a != b => {
            refuse("a pod's spec (as in Kubernetes: delete the pod and apply it again)")
        }
        (Body::ReplicaSet(a), Body::ReplicaSet(b)) if a.selector != b.selector => {
            refuse("spec.selector")
        }
        (Body::Deployment(a), Body::Deployment(b)) if a.selector != b.selector => {
            refuse("spec.selector")
        }
        _ => Ok(()),
    }
}

fn decode(
    kind: Kind,
    name: &str,
    object: &str,
    status: Option<&str>,
) -> Result<Stored, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(format!("{} {name}", kind.singular()), e);
    let v: Value = serde_json::from_str(object).map_err(|e| corrupt(e.to_string()))?;
    let object = Object::from_value(v).map_err(corrupt)?;
    let status = match status {
        Some(s) => serde_json::from_str(s).map_err(|e| corrupt(e.to_string()))?,
        None => Value::Null,
    };
    Ok(Stored { object, status })
}

/// A new uid in Kubernetes' form (a random UUID).
pub fn new_uid() -> String {
    let h = ironpod_ids::random_hex(16).unwrap_or_else(|_| format!("{:032x}", std::process::id()));
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// A generated name: `prefix` and five characters from Kubernetes' alphabet.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let h = ironpod_ids::random_hex(5).unwrap_or_default();
    let suffix: String = h
        .as_bytes()
        .chunks(2)
        .map(|c| {
            let b = u8::from_str_radix(std::str::from_utf8(c).unwrap_or("0"), 16).unwrap_or(0);
            ALPHABET[usize::from(b) % ALPHABET.len()] as char
        })
        .collect();
    format!("{prefix}{suffix}")
}

#[cfg(test)]
mod tests;
