//! A pod's volumes in its VM: an `emptyDir` is a directory on the pod's writable disk (or,
//! with `medium: Memory`, a tmpfs in the VM); a `configMap` or `secret` volume is a small
//! tmpfs in the VM whose files the kubelet writes as Kubernetes' atomic writer does (a
//! hidden directory per version, `..data` pointing at the current one, each key a link
//! through it) and keeps current while the pod runs; a `hostPath` is a host directory or
//! file in the pod's virtio-fs share. Nothing of a Secret touches a disk: not the host's,
//! not the pod's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ironpod_kube::pod::{KeyToPath, PodSpec, Volume};
use ironpod_pods::agent_client::AgentClient;
use ironpod_protocol::FileAttrs;
use ironpod_volumes::HostDir;

use crate::env::ConfigSource;
use crate::spec::GuestVolume;

/// Where the in-memory volumes are mounted in the guest.
pub const VOLUMES_DIR: &str = "/run/ironpod/kube/volumes";
/// Size of a configMap or secret volume's tmpfs (both hold at most 1 MiB of data).
const CONFIG_TMPFS: &str = "size=4m,mode=0755";

/// A `configMap` or `secret` volume's files: relative path → (bytes, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// The host side of the `hostPath` volumes, in the order of the pod's volumes: made (for
/// the `…OrCreate` types) and checked as Kubernetes does, then shared with the VM —
/// read-only when every container mounts it `readOnly`.
pub fn host_dirs(pod: &PodSpec) -> Result<Vec<(String, HostDir)>, String> {
    let mut out = Vec::new();
    for v in &pod.volumes {
        let Some(h) = &v.host_path else { continue };
        let p = PathBuf::from(&h.path);
        let meta = std::fs::metadata(&p);
        match (h.kind.as_deref().unwrap_or(""), &meta) {
            ("DirectoryOrCreate", Err(_)) => std::fs::create_dir_all(&p)
                .map_err(|e| format!("hostPath {}: create: {e}", h.path))?,
            ("FileOrCreate", Err(_)) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("hostPath {}: {e}", h.path))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&p)
                    .map(drop)
                    .map_err(|e| format!("hostPath {}: create: {e}", h.path))?
            }
            ("Directory", Ok(m)) if !m.is_dir() => {
                return Err(format!("hostPath type check failed: {} is not a directory", h.path))
            }
            ("File", Ok(m)) if !m.is_file() => {
                return Err(format!("hostPath type check failed: {} is not a file", h.path))
            }
            ("Directory" | "File" | "", Err(e)) => {
                return Err(format!("hostPath type check failed: {}: {e}", h.path))
            }
            _ => {}
        }
        // Shared read-only unless a container mounts it writable: a hostile guest kernel
        // cannot write what no container may.
        let mounts =
            pod.init_containers.iter().chain(&pod.containers).flat_map(|c| &c.volume_mounts);
        let read_only = mounts.filter(|m| m.name == v.name).all(|m| m.read_only == Some(true));
        out.push((v.name.clone(), HostDir { path: p, read_only }));
    }
    Ok(out)
}

/// The directory of an in-memory volume in the guest.
fn memory_path(name: &str) -> String {
    format!("{VOLUMES_DIR}/{name}")
}

/// The directory of a disk `emptyDir` on the pod's writable disk (`writable`: its serial).
fn disk_path(writable: &str, name: &str) -> String {
    format!("{}/{writable}/kube-volumes/{name}", ironpod_protocol::WRITABLE_DIR)
}

/// The files of a `configMap` or `secret` volume (`None`: an optional one that is missing).
pub fn files(v: &Volume, src: &dyn ConfigSource) -> Result<Option<Files>, String> {
    let (data, items, mode, optional, what, name) = match (&v.config_map, &v.secret) {
        (Some(c), _) => {
            (src.config_map(&c.name), &c.items, c.default_mode, c.optional, "configmap", &c.name)
        }
        (_, Some(s)) => (
            src.secret(&s.secret_name),
            &s.items,
            s.default_mode,
            s.optional,
            "secret",
            &s.secret_name,
        ),
        _ => return Ok(None),
    };
    let mode = mode.unwrap_or(0o644);
    let Some(data) = data else {
        return match optional {
            Some(true) => Ok(Some(Files::new())),
            _ => Err(format!("{what} \"{name}\" not found")),
        };
    };
    Ok(Some(
        project(&data, items, mode, optional == Some(true))
            .map_err(|e| format!("{what} \"{name}\": {e}"))?,
    ))
}

fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    mode: u32,
    optional: bool,
) -> Result<Files, String> {
    if items.is_empty() {
        return Ok(data.iter().map(|(k, v)| (k.clone(), (v.clone(), mode))).collect());
    }
    let mut out = Files::new();
    for it in items {
        match data.get(&it.key) {
            Some(v) => {
                out.insert(it.path.clone(), (v.clone(), it.mode.unwrap_or(mode)));
            }
            None if optional => {}
            None => return Err(format!("couldn't find key {}", it.key)),
        }
    }
    Ok(out)
}

/// One `configMap` or `secret` volume written in the guest, with the version it shows.
#[derive(Debug, Clone)]
pub struct Projected {
    /// The volume's name.
    pub name: String,
    /// Its directory in the guest.
    pub dir: String,
    /// The files it shows.
    pub files: Files,
    /// The hidden directory `..data` points at.
    pub version_dir: Option<String>,
}

impl Projected {
    /// Writes `files` as the volume's new version, as Kubernetes' atomic writer does: a
    /// reader sees the old files or the new ones, never a mix.
    pub fn write(&mut self, ctl: &mut AgentClient, files: Files) -> Result<(), String> {
        let err = |e: ironpod_pods::agent_client::ClientError| format!("volume {}: {e}", self.name);
        let stamp = format!("..{}", ironpod_ids::random_hex(8).map_err(|e| e.to_string())?);
        let dir = &self.dir;
        ctl.make_dir(&format!("{dir}/{stamp}"), Some(FileAttrs { mode: 0o755, uid: 0, gid: 0 }))
            .map_err(err)?;
        for (path, (data, mode)) in &files {
            let attrs = FileAttrs { mode: mode & 0o777, uid: 0, gid: 0 };
            ctl.write_file_with(&format!("{dir}/{stamp}/{path}"), data, attrs).map_err(err)?;
        }
        ctl.symlink(&stamp, &format!("{dir}/..data_tmp")).map_err(err)?;
        ctl.rename(&format!("{dir}/..data_tmp"), &format!("{dir}/..data")).map_err(err)?;
        let top = |f: &Files| -> std::collections::BTreeSet<String> {
            f.keys().map(|p| p.split('/').next().unwrap_or(p).to_string()).collect()
        };
        let (new_top, old_top) = (top(&files), top(&self.files));
        for t in new_top.difference(&old_top) {
            ctl.symlink(&format!("..data/{t}"), &format!("{dir}/{t}")).map_err(err)?;
        }
        for t in old_top.difference(&new_top) {
            ctl.remove_file(&format!("{dir}/{t}")).map_err(err)?;
        }
        if let Some(old) = self.version_dir.replace(stamp) {
            ctl.remove_tree(&format!("{dir}/{old}")).map_err(err)?;
        }
        self.files = files;
        Ok(())
    }
}

/// What [`setup`] made.
#[derive(Debug, Default)]
pub struct SetUp {
    /// Every volume's place in the guest.
    pub guest: Vec<GuestVolume>,
    /// The `configMap` and `secret` volumes, to keep current.
    pub projected: Vec<(Volume, Projected)>,
}

/// Makes the pod's volumes in the guest (`writable`: the writable disk's serial; `shared`:
/// the guest paths of the `hostPath` volumes, by name).
pub fn setup(
    ctl: &mut AgentClient,
    pod: &PodSpec,
    writable: &str,
    shared: &BTreeMap<String, String>,
    src: &dyn ConfigSource,
) -> Result<SetUp, String> {
    let mut out = SetUp::default();
    let open = FileAttrs { mode: 0o1777, uid: 0, gid: 0 };
    for v in &pod.volumes {
        let err = |e: ironpod_pods::agent_client::ClientError| format!("volume {}: {e}", v.name);
        let (path, read_only) = if let Some(e) = &v.empty_dir {
            if e.medium.as_deref() == Some("Memory") {
                let path = memory_path(&v.name);
                let mut opts = "mode=1777".to_string();
                if let Some(q) = &e.size_limit {
                    opts.push_str(&format!(",size={}", q.bytes()?));
                }
                ctl.mount_with("tmpfs", &path, "tmpfs", false, Some(&opts)).map_err(err)?;
                (path, false)
            } else {
                let path = disk_path(writable, &v.name);
                ctl.make_dir(&path, Some(open)).map_err(err)?;
                (path, false)
            }
        } else if v.config_map.is_some() || v.secret.is_some() {
            let path = memory_path(&v.name);
            let files = files(v, src)?.unwrap_or_default();
            ctl.mount_with("tmpfs", &path, "tmpfs", false, Some(CONFIG_TMPFS)).map_err(err)?;
            let mut p = Projected {
                name: v.name.clone(),
                dir: path.clone(),
                files: Files::new(),
                version_dir: None,
            };
            p.write(ctl, files)?;
            out.projected.push((v.clone(), p));
            (path, true)
        } else if v.host_path.is_some() {
            let path = shared
                .get(&v.name)
                .cloned()
                .ok_or_else(|| format!("volume {}: not shared", v.name))?;
            (path, false)
        } else {
            return Err(format!("volume {}: no source", v.name));
        };
        out.guest.push(GuestVolume { name: v.name.clone(), path, read_only });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironpod_kube::pod::{ConfigMapVolume, SecretVolume};

    struct Src;
    impl ConfigSource for Src {
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "cm").then(|| {
                [("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())].into()
            })
        }
        fn secret(&self, _: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            None
        }
    }

    fn cm(items: Vec<KeyToPath>, optional: Option<bool>) -> Volume {
        Volume {
            name: "v".into(),
            empty_dir: None,
            config_map: Some(ConfigMapVolume {
                name: "cm".into(),
                items,
                default_mode: Some(0o600),
                optional,
            }),
            secret: None,
            host_path: None,
        }
    }

    #[test]
    fn projects_keys_and_items() {
        let all = files(&cm(vec![], None), &Src).unwrap().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["a"], (b"1".to_vec(), 0o600));
        let item = KeyToPath { key: "b".into(), path: "conf/b.txt".into(), mode: Some(0o400) };
        let some = files(&cm(vec![item.clone()], None), &Src).unwrap().unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), ["conf/b.txt"]);
        assert_eq!(some["conf/b.txt"].1, 0o400);
        let missing = KeyToPath { key: "z".into(), ..item };
        assert!(files(&cm(vec![missing.clone()], None), &Src)
            .unwrap_err()
            .contains("couldn't find key z"));
        assert!(files(&cm(vec![missing], Some(true)), &Src).unwrap().unwrap().is_empty());
        let secret = Volume {
            config_map: None,
            secret: Some(SecretVolume {
                secret_name: "s".into(),
                items: vec![],
                default_mode: None,
                optional: None,
            }),
            ..cm(vec![], None)
        };
        assert_eq!(files(&secret, &Src).unwrap_err(), "secret \"s\" not found");
    }

    #[test]
    fn host_paths_are_made_and_checked() {
        let t = tempfile::tempdir().unwrap();
        let hp = |p: &std::path::Path, kind: &str| Volume {
            name: "h".into(),
            empty_dir: None,
            config_map: None,
            secret: None,
            host_path: Some(ironpod_kube::pod::HostPath {
                path: p.to_string_lossy().into(),
                kind: Some(kind.into()),
            }),
        };
        let pod = |v: Volume| PodSpec { volumes: vec![v], ..Default::default() };
        let d = t.path().join("made/dir");
        let made = host_dirs(&pod(hp(&d, "DirectoryOrCreate"))).unwrap();
        assert_eq!(made[0].1.path, d);
        assert!(made[0].1.read_only, "no container writes it");
        let mount = |ro| ironpod_kube::pod::VolumeMount {
            name: "h".into(),
            mount_path: "/h".into(),
            read_only: ro,
            sub_path: None,
        };
        let mut writer = pod(hp(&d, "Directory"));
        writer.containers = vec![
            ironpod_kube::pod::Container {
                volume_mounts: vec![mount(Some(true))],
                ..Default::default()
            },
            ironpod_kube::pod::Container { volume_mounts: vec![mount(None)], ..Default::default() },
        ];
        assert!(!host_dirs(&writer).unwrap()[0].1.read_only, "one container writes it");
        assert!(d.is_dir());
        let f = t.path().join("made/file");
        host_dirs(&pod(hp(&f, "FileOrCreate"))).unwrap();
        assert!(f.is_file());
        assert!(host_dirs(&pod(hp(&f, "Directory"))).unwrap_err().contains("not a directory"));
        assert!(host_dirs(&pod(hp(&t.path().join("nope"), "")))
            .unwrap_err()
            .contains("type check failed"));
        assert_eq!(disk_path("rw1", "data"), "/run/ironpod/rw/rw1/kube-volumes/data");
    }
}
