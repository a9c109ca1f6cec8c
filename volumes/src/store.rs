//! Named volumes: `<root>/volumes/<name>/_data` directories that outlive the containers using
//! them. A volume appears whole or not at all (made under a temporary name, then renamed)
//! and disappears the same way.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{io, VolumeError};

/// Whether `n` is a valid volume name (Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    (2..=128).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// One named volume (what `ironpod volume inspect` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// The directory holding its files.
    pub mountpoint: PathBuf,
    /// RFC 3339.
    pub created_at: String,
    /// Labels given when it was made (`labels.json` beside `_data`).
    pub labels: BTreeMap<String, String>,
}

/// Most labels a volume keeps, and their total size in bytes.
const MAX_LABELS: usize = 256;
const MAX_LABEL_BYTES: usize = 64 * 1024;

/// The named volumes under a state root.
pub struct VolumeStore {
    dir: PathBuf,
}

impl VolumeStore {
    /// The volumes of state root `root` (nothing is touched yet).
    pub fn new(root: &Path) -> Self {
        VolumeStore { dir: root.join("volumes") }
    }

    fn check(name: &str) -> Result<(), VolumeError> {
        if valid_name(name) {
            Ok(())
        } else {
            Err(VolumeError::Invalid(format!(
                "invalid volume name {name:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]+, 2 to 128 characters"
            )))
        }
    }

    fn read(&self, name: &str) -> Option<Volume> {
        let base = self.dir.join(name);
        let data = base.join("_data");
        if !data.is_dir() {
            return None;
        }
        let created_at = fs::read_to_string(base.join("created")).unwrap_or_default();
        Some(Volume {
            name: name.to_string(),
            driver: "local".into(),
            mountpoint: data,
            created_at: created_at.trim().to_string(),
            labels: fs::read(base.join("labels.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
        })
    }

    /// Makes volume `name` unless it exists (as `docker volume create` does); returns it.
    pub fn create(&self, name: &str) -> Result<Volume, VolumeError> {
        self.create_with_labels(name, &BTreeMap::new())
    }

    /// [`VolumeStore::create`] with labels (kept only when the volume is new, as Docker).
    pub fn create_with_labels(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        Self::check(name)?;
        let label_bytes: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        if labels.len() > MAX_LABELS || label_bytes > MAX_LABEL_BYTES {
            return Err(VolumeError::Invalid(format!(
                "too many labels: at most {MAX_LABELS} of {MAX_LABEL_BYTES} bytes in all"
            )));
        }
        if let Some(v) = self.read(name) {
            return Ok(v);
        }
        fs::create_dir_all(&self.dir).map_err(io(format!("create {}", self.dir.display())))?;
        let tmp = self.dir.join(format!(
            ".new-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let made = (|| {
            fs::create_dir(&tmp)?;
            fs::create_dir(tmp.join("_data"))?;
            fs::write(tmp.join("created"), ironpod_images::time::now_rfc3339())?;
            if !labels.is_empty() {
                fs::write(tmp.join("labels.json"), serde_json::to_vec(labels)?)?;
            }
            fs::File::open(&tmp)?.sync_all()
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&tmp);
            return Err(io(format!("create volume {name}"))(e));
        }
        let target = self.dir.join(name);
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_dir_all(&tmp);
            // Made meanwhile by another process: that one is the volume.
            if self.read(name).is_none() {
                return Err(io(format!("create volume {name}"))(e));
            }
        }
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.event("create", name);
        self.read(name).ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    /// The data directory of volume `name`, made on first use.
    pub fn ensure(&self, name: &str) -> Result<PathBuf, VolumeError> {
        Ok(self.create(name)?.mountpoint)
    }

    /// Volume `name`.
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        Self::check(name)?;
        self.read(name).ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    /// All volumes, by name.
    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("read {}", self.dir.display()))(e)),
        };
        let mut out: Vec<Volume> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| valid_name(n))
            .filter_map(|n| self.read(&n))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes volume `name` and its files; refused while `users` (the short ids of the
    /// containers, running or not, that mount it) is not empty.
    pub fn remove(&self, name: &str, users: &[String]) -> Result<(), VolumeError> {
        self.get(name)?;
        if !users.is_empty() {
            return Err(VolumeError::InUse { name: name.to_string(), users: users.join(", ") });
        }
        // Out of sight first, then deleted: a crash half way leaves no half volume.
        let gone = self.dir.join(format!(".rm-{name}-{}", std::process::id()));
        fs::rename(self.dir.join(name), &gone).map_err(io(format!("remove volume {name}")))?;
        self.event("destroy", name);
        fs::remove_dir_all(&gone).map_err(io(format!("remove volume {name}")))
    }

    /// Logs a volume event in the state root's event log.
    fn event(&self, action: &str, name: &str) {
        if let Some(root) = self.dir.parent() {
            let e = ironpod_events::Event::now("volume", action, name).with("driver", "local");
            let _ = ironpod_events::record(root, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let s = VolumeStore::new(root.path());
        let labels = BTreeMap::from([("com.example.app".to_string(), "web".to_string())]);
        assert_eq!(s.create_with_labels("lab", &labels).unwrap().labels, labels);
        assert_eq!(s.get("lab").unwrap().labels, labels);
        // An existing volume keeps its labels.
        assert_eq!(s.create_with_labels("lab", &BTreeMap::new()).unwrap().labels, labels);
        assert!(s.create("plain").unwrap().labels.is_empty());
        let many: BTreeMap<String, String> =
            (0..300).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(s.create_with_labels("many", &many), Err(VolumeError::Invalid(_))));
        assert!(matches!(s.get("many"), Err(VolumeError::NotFound(_))));
    }

    #[test]
    fn create_list_remove() {
        let root = tempfile::tempdir().unwrap();
        let s = VolumeStore::new(root.path());
        assert!(s.list().unwrap().is_empty());
        let v = s.create("data").unwrap();
        assert!(v.mountpoint.ends_with("volumes/data/_data") && v.mountpoint.is_dir());
        fs::write(v.mountpoint.join("f"), b"kept").unwrap();
        // Creating again keeps the files.
        assert_eq!(s.create("data").unwrap().mountpoint, v.mountpoint);
        assert_eq!(fs::read(v.mountpoint.join("f")).unwrap(), b"kept");
        s.create("other").unwrap();
        let names: Vec<String> = s.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["data", "other"]);
        assert!(!s.get("data").unwrap().created_at.is_empty());
        s.remove("data", &[]).unwrap();
        assert!(matches!(s.get("data"), Err(VolumeError::NotFound(_))));
        assert!(matches!(s.remove("data", &[]), Err(VolumeError::NotFound(_))));
        for bad in ["", "a", "../x", ".hidden", "a/b"] {
            assert!(s.create(bad).is_err(), "{bad}");
        }
        let leftovers: Vec<_> = fs::read_dir(root.path().join("volumes")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only `other` is left");
    }

    #[test]
    fn in_use_volumes_stay() {
        let root = tempfile::tempdir().unwrap();
        let s = VolumeStore::new(root.path());
        s.create("db").unwrap();
        let err = s.remove("db", &["aaaaaaaaaaaa".into(), "bbbbbbbbbbbb".into()]).unwrap_err();
        assert!(err.to_string().contains("aaaaaaaaaaaa, bbbbbbbbbbbb"), "{err}");
        assert!(s.get("db").is_ok());
    }
}
