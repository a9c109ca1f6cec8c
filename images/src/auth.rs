//! Registry credentials, in Docker's `config.json` format (`{"auths": {"host": {"auth":
//! base64("user:password")}}}`), in a file only root can read (`<root>/auth.json`, mode 0600),
//! written through a temporary file and a rename.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::ImageError;

fn path(root: &Path) -> PathBuf {
    root.join("auth.json")
}

/// The stored credentials.
#[derive(Debug, Default)]
pub struct Credentials(BTreeMap<String, String>);

impl Credentials {
    /// (user, password) for a registry.
    pub fn get(&self, registry: &str) -> Option<(String, String)> {
        let decoded = STANDARD.decode(self.0.get(registry)?).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

/// Reads the credentials file (missing = none).
pub fn load(root: &Path) -> Result<Credentials, ImageError> {
    let p = path(root);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::default()),
        Err(e) => return Err(ImageError::io(&p, e)),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ImageError::Credentials(format!("{}: {e}", p.display())))?;
    let mut map = BTreeMap::new();
    if let Some(auths) = v.get("auths").and_then(|a| a.as_object()) {
        for (host, entry) in auths {
            if let Some(a) = entry.get("auth").and_then(|a| a.as_str()) {
                map.insert(host.clone(), a.to_string());
            }
        }
    }
    Ok(Credentials(map))
}

fn store(root: &Path, c: &Credentials) -> Result<(), ImageError> {
    let p = path(root);
    let auths: serde_json::Map<String, serde_json::Value> =
        c.0.iter().map(|(h, a)| (h.clone(), serde_json::json!({ "auth": a }))).collect();
    let text = serde_json::to_vec_pretty(&serde_json::json!({ "auths": auths }))
        .map_err(|e| ImageError::Credentials(e.to_string()))?;
    let tmp = root.join(format!(".auth.json.tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| ImageError::io(&tmp, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ImageError::io(&tmp, e))?;
    f.write_all(&text).and_then(|()| f.sync_all()).map_err(|e| ImageError::io(&tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| ImageError::io(&p, e))
}

/// Saves credentials for `registry`.
pub fn login(root: &Path, registry: &str, user: &str, password: &str) -> Result<(), ImageError> {
    if user.contains(':') {
        return Err(ImageError::Credentials("user names cannot contain ':'".into()));
    }
    crate::private::private_dir(root).map_err(|e| ImageError::io(root, e))?;
    let mut c = load(root)?;
    c.0.insert(registry.to_string(), STANDARD.encode(format!("{user}:{password}")));
    store(root, &c)
}

/// Forgets credentials for `registry`; returns whether there were any.
pub fn logout(root: &Path, registry: &str) -> Result<bool, ImageError> {
    let mut c = load(root)?;
    let had = c.0.remove(registry).is_some();
    if had {
        store(root, &c)?;
    }
    Ok(had)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn login_logout_file_mode() {
        let d = tempfile::tempdir().unwrap();
        login(d.path(), "localhost:5000", "alice", "s3cr:et").unwrap();
        assert_eq!(
            load(d.path()).unwrap().get("localhost:5000"),
            Some(("alice".into(), "s3cr:et".into()))
        );
        assert_eq!(std::fs::metadata(path(d.path())).unwrap().mode() & 0o777, 0o600);
        assert!(logout(d.path(), "localhost:5000").unwrap());
        assert!(!logout(d.path(), "localhost:5000").unwrap());
        assert!(load(d.path()).unwrap().get("localhost:5000").is_none());
        std::fs::write(path(d.path()), "not json").unwrap();
        assert!(matches!(load(d.path()), Err(ImageError::Credentials(_))));
    }
}
