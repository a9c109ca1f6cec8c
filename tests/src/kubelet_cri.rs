//! What a kubelet hands the CRI for a manifest's Pod: the sandbox config, the init
//! containers' and containers' configs, and the pod's volumes made on the host (an
//! `emptyDir` directory, a `configMap` or `secret` volume's files with their modes). With
//! it a test runs the same manifest through containerd and the shim that `ironpod kube
//! apply` runs, and compares what the containers see.
//!
//! The environment and the volumes' files are worked out by the kubelet's own functions
//! (`ironpod_kubelet::env`, `ironpod_kubelet::volumes`), so both paths read a manifest the
//! same way; what differs is only where the result goes.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ironpod_kube::meta::ObjectMeta;
use ironpod_kube::object::{parse_manifest, Body, Object};
use ironpod_kube::pod::{Container, PodSpec};
use ironpod_kubelet::env::{ConfigSource, PodFields};
use k8s_cri::v1::{self as cri, NamespaceMode};

/// A Pod as CRI calls.
pub struct CriPod {
    /// The sandbox's config.
    pub sandbox: cri::PodSandboxConfig,
    /// The runtime handler (`runtimeClassName`).
    pub handler: String,
    /// Init containers, run to their end one after another.
    pub init: Vec<cri::ContainerConfig>,
    /// The containers.
    pub containers: Vec<cri::ContainerConfig>,
}

/// The ConfigMaps and Secrets of a manifest.
struct Sources(Vec<Object>);

impl Sources {
    fn find(&self, name: &str, secret: bool) -> Option<BTreeMap<String, Vec<u8>>> {
        self.0.iter().find(|o| o.metadata.name == name).and_then(|o| match &o.body {
            Body::ConfigMap(d) if !secret => d.values().ok(),
            Body::Secret(d) if secret => d.values().ok(),
            _ => None,
        })
    }
}

impl ConfigSource for Sources {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.find(name, false)
    }
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.find(name, true)
    }
}

/// Translates the manifest's (only) Pod. Volumes are made under `volumes` (one directory
/// per volume), logs go under `log_dir`.
pub fn from_manifest(manifest: &str, volumes: &Path, log_dir: &Path) -> Result<CriPod, String> {
    let objects = parse_manifest(manifest, "manifest")?;
    let (meta, spec) = objects
        .iter()
        .find_map(|o| match &o.body {
            Body::Pod(s) => Some((o.metadata.clone(), s.clone())),
            _ => None,
        })
        .ok_or("the manifest has no Pod")?;
    let src = Sources(objects);
    let host_paths = make_volumes(&spec, &src, volumes)?;
    let fields = PodFields::default();
    let config = |c: &Container| container(&spec, c, &meta, &fields, &src, &host_paths);
    Ok(CriPod {
        sandbox: sandbox(&meta, &spec, log_dir),
        handler: spec.runtime_class_name.clone().unwrap_or_default(),
        init: spec.init_containers.iter().map(config).collect::<Result<_, _>>()?,
        containers: spec.containers.iter().map(config).collect::<Result<_, _>>()?,
    })
}

fn sandbox(meta: &ObjectMeta, spec: &PodSpec, log_dir: &Path) -> cri::PodSandboxConfig {
    let psc = spec.security_context.as_ref();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: meta.name.clone(),
            uid: format!("uid-{}", meta.name),
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            attempt: 0,
        }),
        hostname: spec.hostname.clone().unwrap_or_else(|| meta.name.clone()),
        log_directory: log_dir.to_string_lossy().into_owned(),
        labels: meta.labels.clone().into_iter().collect(),
        annotations: meta.annotations.clone().into_iter().collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                run_as_user: psc.and_then(|s| s.run_as_user).map(|value| cri::Int64Value { value }),
                run_as_group: psc
                    .and_then(|s| s.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                supplemental_groups: psc.map(|s| s.supplemental_groups.clone()).unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A volume on the host: its path and whether every mount of it is read-only by nature
/// (configMap and secret volumes are, as the kubelet mounts them).
type HostPaths = HashMap<String, (String, bool)>;

/// Writes a configMap or secret volume's files at `dir` as the kubelet's atomic writer
/// does: the files in a hidden version directory, `..data` linking to it, each top-level
/// name a link through `..data`.
fn atomic_write(dir: &Path, files: &ironpod_kubelet::volumes::Files) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    let version = dir.join("..2026_12_06_00_00_00.0000");
    for (rel, (data, mode)) in files {
        let f = version.join(rel);
        std::fs::create_dir_all(f.parent().unwrap_or(&version)).map_err(err)?;
        std::fs::write(&f, data).map_err(err)?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode)).map_err(err)?;
    }
    std::fs::create_dir_all(&version).map_err(err)?;
    std::os::unix::fs::symlink(version.file_name().unwrap_or_default(), dir.join("..data"))
        .map_err(err)?;
    let mut tops: Vec<&str> = files.keys().filter_map(|k| k.split('/').next()).collect();
    tops.dedup();
    for top in tops {
        std::os::unix::fs::symlink(format!("..data/{top}"), dir.join(top)).map_err(err)?;
    }
    Ok(())
}

/// Makes the pod's volumes where a kubelet keeps them:
/// `<dir>/volumes/kubernetes.io~<plugin>/<name>`.
fn make_volumes(spec: &PodSpec, src: &Sources, dir: &Path) -> Result<HostPaths, String> {
    let mut out = HostPaths::new();
    for v in &spec.volumes {
        let plugin = match (&v.empty_dir, &v.config_map, &v.secret) {
            (Some(_), _, _) => "empty-dir",
            (_, Some(_), _) => "configmap",
            (_, _, Some(_)) => "secret",
            _ => "host-path",
        };
        let path = dir.join("volumes").join(format!("kubernetes.io~{plugin}")).join(&v.name);
        let made = |p: &Path| std::fs::create_dir_all(p).map_err(|e| format!("{v:?}: {e}"));
        if v.empty_dir.is_some() {
            made(&path)?;
            // The kubelet's emptyDir is writable by every user of the pod.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| e.to_string())?;
            out.insert(v.name.clone(), (path.to_string_lossy().into_owned(), false));
        } else if let Some(files) = ironpod_kubelet::volumes::files(v, src)? {
            made(&path)?;
            atomic_write(&path, &files)?;
            out.insert(v.name.clone(), (path.to_string_lossy().into_owned(), true));
        } else if let Some(h) = &v.host_path {
            out.insert(v.name.clone(), (h.path.clone(), false));
        } else {
            return Err(format!("volume {:?}: no source this translation knows", v.name));
        }
    }
    Ok(out)
}

fn container(
    pod: &PodSpec,
    c: &Container,
    meta: &ObjectMeta,
    fields: &PodFields,
    src: &Sources,
    vols: &HostPaths,
) -> Result<cri::ContainerConfig, String> {
    let env = ironpod_kubelet::env::resolve(c, meta, fields, src)?;
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let expand = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| ironpod_kubelet::env::expand(s, &lookup)).collect()
    };
    let mut mounts = Vec::new();
    for m in &c.volume_mounts {
        let (host, nature_ro) =
            vols.get(&m.name).ok_or_else(|| format!("volume {:?} not found", m.name))?;
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sp) => format!("{host}/{sp}"),
            None => host.clone(),
        };
        mounts.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host,
            readonly: *nature_ro || m.read_only == Some(true),
            ..Default::default()
        });
    }
    let sc = c.security_context.as_ref();
    // The kubelet merges the pod's security context into each container's.
    let psc = pod.security_context.as_ref();
    let user = sc.and_then(|s| s.run_as_user).or(psc.and_then(|p| p.run_as_user));
    let group = sc.and_then(|s| s.run_as_group).or(psc.and_then(|p| p.run_as_group));
    let limits = c.resources.as_ref().map(|r| &r.limits);
    let memory = limits.and_then(|l| l.get("memory")).map(|q| q.bytes()).transpose()?;
    let cpu = limits.and_then(|l| l.get("cpu")).map(|q| q.millicpu()).transpose()?;
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: c.image.clone(), ..Default::default() }),
        command: expand(&c.command),
        args: expand(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .iter()
            .map(|(key, value)| cri::KeyValue { key: key.clone(), value: value.clone() })
            .collect(),
        mounts,
        log_path: format!("{}.log", c.name),
        stdin: c.stdin,
        tty: c.tty,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: memory.unwrap_or(0) as i64,
                cpu_period: if cpu.is_some() { 100_000 } else { 0 },
                // The kubelet's quota: 100 µs per millicpu, at least 1 ms.
                cpu_quota: cpu.map(|m| (m * 100).max(1000) as i64).unwrap_or(0),
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: user.map(|value| cri::Int64Value { value }),
                run_as_group: group.map(|value| cri::Int64Value { value }),
                supplemental_groups: psc.map(|p| p.supplemental_groups.clone()).unwrap_or_default(),
                readonly_rootfs: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
                privileged: sc.and_then(|s| s.privileged) == Some(true),
                capabilities: sc.and_then(|s| s.capabilities.as_ref()).map(|c| cri::Capability {
                    add_capabilities: c.add.clone(),
                    drop_capabilities: c.drop.clone(),
                    ..Default::default()
                }),
                namespace_options: Some(cri::NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}
