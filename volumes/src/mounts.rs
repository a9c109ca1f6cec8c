//! A container's volume mounts: `-v` values parsed, the host directories behind them,
//! how `inspect` shows them and the OCI mounts that bind the share's entries.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io, VolumeError};
use crate::store::{valid_name, VolumeStore};

/// What a volume mount takes its files from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A host directory (`-v /host/dir:/ctr`).
    Host(PathBuf),
    /// A named volume (`-v name:/ctr`), made on first use.
    Named(String),
}

/// One `-v SOURCE:DESTINATION[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Where the files come from.
    pub source: Source,
    /// The path in the container.
    pub destination: String,
    /// Mounted read-only (`:ro`).
    pub read_only: bool,
}

impl std::fmt::Display for VolumeMount {
    /// As `-v` takes it (and Docker's `HostConfig.Binds` shows it): `SOURCE:DEST[:ro]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Host(p) => write!(f, "{}:{}", p.display(), self.destination)?,
            Source::Named(n) => write!(f, "{n}:{}", self.destination)?,
        }
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// Most volumes per container.
pub const MAX_VOLUMES: usize = 64;

/// A container path for a mount: absolute, not `/`, no `..`; returned normalized.
fn container_path(p: &str) -> Option<String> {
    if !p.starts_with('/') || p.contains('\0') || p.len() > 4096 {
        return None;
    }
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

/// Parses one `-v` value.
pub fn parse(v: &str) -> Result<VolumeMount, VolumeError> {
    let bad = |why: &str| VolumeError::Invalid(format!("invalid volume {v:?}: {why}"));
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) =
        match parts.as_slice() {
            [_] => return Err(bad(
                "give a source: -v /host/dir:/path or -v NAME:/path (anonymous volumes are not \
                 supported)",
            )),
            [s, d] => (*s, *d, ""),
            [s, d, o] => (*s, *d, *o),
            _ => return Err(bad("expected SOURCE:DESTINATION[:ro|rw]")),
        };
    let destination = container_path(dst)
        .ok_or_else(|| bad("the destination must be an absolute path other than / without .."))?;
    let source = if src.starts_with('/') {
        if src.contains('\0') {
            return Err(bad("bad host path"));
        }
        Source::Host(PathBuf::from(src))
    } else if valid_name(src) {
        Source::Named(src.to_string())
    } else {
        return Err(bad("the source must be an absolute host path or a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"));
    };
    let mut read_only = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => return Err(bad(&format!("unsupported option {other:?} (ro or rw)"))),
        }
    }
    Ok(VolumeMount { source, destination, read_only })
}

/// Parses all `-v` values of a container; two volumes on one destination are refused.
pub fn parse_all(values: &[String]) -> Result<Vec<VolumeMount>, VolumeError> {
    if values.len() > MAX_VOLUMES {
        return Err(VolumeError::Invalid(format!("at most {MAX_VOLUMES} volumes per container")));
    }
    let mut out: Vec<VolumeMount> = Vec::new();
    for v in values {
        let m = parse(v)?;
        if out.iter().any(|o| o.destination == m.destination) {
            return Err(VolumeError::Invalid(format!("duplicate mount point: {}", m.destination)));
        }
        out.push(m);
    }
    Ok(out)
}

/// A volume ready to share: its host directory and whether it is read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDir {
    /// The directory on the host.
    pub path: PathBuf,
    /// Shared read-only.
    pub read_only: bool,
}

/// The host directories behind a container's volumes, in order: host paths are made if
/// missing (as Docker does) and must be directories; named volumes are made on first use.
pub fn resolve(root: &Path, mounts: &[VolumeMount]) -> Result<Vec<HostDir>, VolumeError> {
    let mut store = None;
    mounts
        .iter()
        .map(|m| {
            let path = match &m.source {
                Source::Host(p) => {
                    std::fs::create_dir_all(p)
                        .map_err(io(format!("host directory {}", p.display())))?;
                    let canonical =
                        p.canonicalize().map_err(io(format!("host directory {}", p.display())))?;
                    if !canonical.is_dir() {
                        return Err(VolumeError::Invalid(format!(
                            "{} is not a directory (only directories can be volumes)",
                            p.display()
                        )));
                    }
                    canonical
                }
                Source::Named(n) => {
                    if store.is_none() {
                        store = Some(VolumeStore::new(root));
                    }
                    store.as_ref().map(|s| s.ensure(n)).transpose()?.unwrap_or_default()
                }
            };
            Ok(HostDir { path, read_only: m.read_only })
        })
        .collect()
}

/// A container's volumes as `docker inspect` shows them (`Mounts`).
pub fn inspect_mounts(root: &Path, mounts: &[VolumeMount]) -> serde_json::Value {
    let store = VolumeStore::new(root);
    mounts
        .iter()
        .map(|m| match &m.source {
            Source::Host(p) => serde_json::json!({
                "Type": "bind",
                "Source": p,
                "Destination": m.destination,
                "RW": !m.read_only,
            }),
            Source::Named(n) => serde_json::json!({
                "Type": "volume",
                "Name": n,
                "Source": store.get(n).map(|v| v.mountpoint).unwrap_or_default(),
                "Destination": m.destination,
                "Driver": "local",
                "RW": !m.read_only,
            }),
        })
        .collect()
}

/// The name of volume `i`'s directory in the pod's share.
pub fn share_entry(i: usize) -> String {
    format!("v{i}")
}

/// The OCI mounts of a container's volumes: bind mounts of the share's entries.
pub fn spec_mounts(mounts: &[VolumeMount]) -> Vec<oci_spec::runtime::Mount> {
    mounts
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let mut options = vec!["rbind".to_string()];
            options.push(if m.read_only { "ro" } else { "rw" }.to_string());
            oci_spec::runtime::MountBuilder::default()
                .destination(&m.destination)
                .typ("bind")
                .source(Path::new(ironpod_protocol::SHARE_DIR).join(share_entry(i)))
                .options(options)
                .build()
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let m = parse("/srv/data:/data:ro").unwrap();
        assert_eq!(m.source, Source::Host("/srv/data".into()));
        assert_eq!((m.destination.as_str(), m.read_only), ("/data", true));
        let m = parse("cache:/var/cache/app/").unwrap();
        assert_eq!(m.source, Source::Named("cache".into()));
        assert_eq!((m.destination.as_str(), m.read_only), ("/var/cache/app", false));
        assert!(!parse("db:/db:rw").unwrap().read_only);
        for v in ["/srv/data:/data:ro", "cache:/var/cache/app", "db:/db"] {
            assert_eq!(parse(v).unwrap().to_string(), v, "shown as given");
        }
        for bad in [
            "/data",
            "x:/data",
            "-v:/data",
            "vol:relative",
            "vol:/",
            "vol:/a/../etc",
            "vol:/data:rx",
            "vol:/data:ro:extra",
            "a b:/data",
            "/host:/d\0",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse_all(&["a1:/d".into(), "/h:/d/".into()]).is_err());
        assert_eq!(parse_all(&["a1:/d".into(), "/h:/e".into()]).unwrap().len(), 2);
    }

    #[test]
    fn spec_mounts_bind_share_entries() {
        let m = spec_mounts(&parse_all(&["a1:/d".into(), "/h:/e:ro".into()]).unwrap());
        assert_eq!(m[1].source().as_deref(), Some(Path::new("/run/ironpod/shared/v1")));
        assert_eq!(m[1].destination(), Path::new("/e"));
        assert_eq!(m[1].options().as_deref(), Some(&["rbind".to_string(), "ro".to_string()][..]));
    }

    #[test]
    fn host_directories_are_made_and_must_be_directories() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("new/sub");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let ok =
            resolve(dir.path(), &[parse(&format!("{}:/d:ro", made.display())).unwrap()]).unwrap();
        assert!(made.is_dir() && ok[0].read_only);
        assert!(resolve(dir.path(), &[parse(&format!("{}:/d", file.display())).unwrap()]).is_err());
        let named = resolve(dir.path(), &[parse("data1:/d").unwrap()]).unwrap();
        assert!(named[0].path.starts_with(dir.path()) && named[0].path.is_dir());
    }
}
