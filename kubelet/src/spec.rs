//! A pod container's OCI spec: the kube fields mapped onto the run options the CLI's
//! containers use (`ironpod_pods::spec`, so seccomp, capabilities, devices and masks are the
//! same), then what only pods have: the pod's IPC namespace, its volumes, supplemental
//! groups, and the pod's name-service files.

use ironpod_kube::meta::ObjectMeta;
use ironpod_kube::pod::{Container, PodSecurityContext, PodSpec, SecurityContext};
use ironpod_pods::spec::{self as run_spec, RunOptions};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxNamespaceType, MountBuilder, Spec};

use crate::env::expand;

/// Where a volume is in the guest, for the containers' bind mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestVolume {
    /// The volume's name.
    pub name: String,
    /// Its directory (or file) in the guest.
    pub path: String,
    /// Always mounted read-only (configMap, secret).
    pub read_only: bool,
}

/// The guest id of the pod-wide name-service files (`/run/ironpod/etc/<this>/hosts`).
pub const POD_ETC_ID: &str = "pod";

/// The program a container runs: `command` replaces the image's entrypoint (and drops its
/// cmd), `args` replaces the cmd; `$(NAME)` refers to the container's variables.
pub fn argv(
    c: &Container,
    image: &ImageConfiguration,
    env: &[(String, String)],
) -> Result<Vec<String>, String> {
    let cfg = image.config().clone().unwrap_or_default();
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let ex = |v: &Vec<String>| v.iter().map(|s| expand(s, &lookup)).collect::<Vec<_>>();
    let argv: Vec<String> = match (&c.command, &c.args) {
        (Some(cmd), args) => {
            ex(cmd).into_iter().chain(args.as_ref().map(ex).unwrap_or_default()).collect()
        }
        (None, Some(args)) => {
            cfg.entrypoint().clone().unwrap_or_default().into_iter().chain(ex(args)).collect()
        }
        (None, None) => cfg
            .entrypoint()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(cfg.cmd().clone().unwrap_or_default())
            .collect(),
    };
    match argv.first() {
        Some(a) if !a.is_empty() => Ok(argv),
        _ => Err("no command specified: the image has none and the container gives none".into()),
    }
}

/// The user the container runs as (`UID[:GID]`, or the image's), checking `runAsNonRoot`.
fn user(
    c: Option<&SecurityContext>,
    pod: Option<&PodSecurityContext>,
    image: &ImageConfiguration,
) -> Result<Option<String>, String> {
    let uid = c.and_then(|s| s.run_as_user).or(pod.and_then(|s| s.run_as_user));
    let gid = c.and_then(|s| s.run_as_group).or(pod.and_then(|s| s.run_as_group));
    let non_root =
        c.and_then(|s| s.run_as_non_root).or(pod.and_then(|s| s.run_as_non_root)) == Some(true);
    let image_user = image.config().as_ref().and_then(|c| c.user().clone()).unwrap_or_default();
    if non_root {
        match uid {
            Some(0) => return Err("container's runAsUser breaks non-root policy".into()),
            Some(_) => {}
            None => {
                let name = image_user.split(':').next().unwrap_or_default();
                match name.parse::<u32>() {
                    Ok(0) => return Err("container has runAsNonRoot and image will run as root".into()),
                    Ok(_) => {}
                    Err(_) if name.is_empty() || name == "root" => {
                        return Err("container has runAsNonRoot and image will run as root".into())
                    }
                    Err(_) => {
                        return Err(format!(
                            "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root"
                        ))
                    }
                }
            }
        }
    }
    Ok(match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => {
            let name = image_user.split(':').next().unwrap_or_default();
            Some(format!("{}:{g}", if name.is_empty() { "0" } else { name }))
        }
        (None, None) => None,
    })
}

/// Everything a container's spec is made from.
pub struct SpecInput<'a> {
    /// The pod's metadata.
    pub meta: &'a ObjectMeta,
    /// The pod's spec.
    pub pod: &'a PodSpec,
    /// The container.
    pub container: &'a Container,
    /// Its image's configuration.
    pub image: &'a ImageConfiguration,
    /// Its resolved variables.
    pub env: &'a [(String, String)],
    /// The pod's volumes in the guest.
    pub volumes: &'a [GuestVolume],
    /// The container's id in the guest.
    pub id: &'a str,
}

/// The pod's host name.
pub fn hostname(meta: &ObjectMeta, pod: &PodSpec) -> String {
    pod.hostname.clone().unwrap_or_else(|| meta.name.chars().take(63).collect())
}

/// Builds a container's spec.
pub fn build(i: &SpecInput<'_>) -> Result<Spec, String> {
    let c = i.container;
    let sc = c.security_context.as_ref();
    let psc = i.pod.security_context.as_ref();
    let limits = c.resources.as_ref().map(|r| r.limits.clone()).unwrap_or_default();
    let memory = limits.get("memory").map(|q| q.bytes()).transpose()?;
    let cpus = limits.get("cpu").map(|q| q.millicpu()).transpose()?.map(|m| m as f64 / 1000.0);
    let caps = sc.and_then(|s| s.capabilities.clone()).unwrap_or_default();
    let mut security_opt = Vec::new();
    if sc.and_then(|s| s.allow_privilege_escalation) == Some(false) {
        security_opt.push("no-new-privileges".to_string());
    }
    let argv = argv(c, i.image, i.env)?;
    let opts = RunOptions {
        entrypoint: Some(String::new()),
        command: argv,
        env: i.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        workdir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user: user(sc, psc, i.image)?,
        tty: c.tty,
        interactive: c.stdin,
        cpus,
        memory,
        hostname: Some(hostname(i.meta, i.pod)),
        read_only: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        privileged: sc.and_then(|s| s.privileged) == Some(true),
        cap_add: caps.add,
        cap_drop: caps.drop,
        security_opt,
        network: Some("none".into()),
        ..Default::default()
    };
    let mut spec = run_spec::build(i.id, i.image, &opts).map_err(|e| e.to_string())?;
    // The pod's containers share its IPC namespace (the VM's), as they share its network.
    if let Some(linux) = spec.linux_mut() {
        if let Some(ns) = linux.namespaces_mut() {
            ns.retain(|n| n.typ() != LinuxNamespaceType::Ipc);
        }
    }
    if let (Some(groups), Some(p)) = (psc.map(|p| &p.supplemental_groups), spec.process_mut()) {
        if !groups.is_empty() {
            let mut user = p.user().clone();
            let mut extra = user.additional_gids().clone().unwrap_or_default();
            extra.extend(groups.iter().map(|g| *g as u32));
            user.set_additional_gids(Some(extra));
            p.set_user(user);
        }
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &c.volume_mounts {
        let v = i
            .volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("volume {:?} is not set up", m.name))?;
        let ro = v.read_only || m.read_only == Some(true);
        let mut options = vec!["rbind".to_string(), if ro { "ro" } else { "rw" }.to_string()];
        // The agent resolves a subPath inside the volume, never leaving it.
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            options.push(format!("{}{sp}", ironpod_protocol::SUBPATH_OPTION));
        }
        let mount = MountBuilder::default()
            .destination(&m.mount_path)
            .typ("bind")
            .source(&v.path)
            .options(options)
            .build()
            .map_err(|e| e.to_string())?;
        mounts.retain(|x| x.destination() != mount.destination());
        mounts.push(mount);
    }
    spec.set_mounts(Some(mounts));
    run_spec::add_etc_mounts(&mut spec, POD_ETC_ID).map_err(|e| e.to_string())?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironpod_kube::pod::{Capabilities, VolumeMount};

    fn image(entrypoint: &[&str], cmd: &[&str], user: &str) -> ImageConfiguration {
        let v = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": entrypoint, "Cmd": cmd, "User": user},
            "rootfs": {"type": "layers", "diff_ids": []}
        });
        serde_json::from_value(v).unwrap()
    }

    fn strings(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let img = image(&["/entry"], &["serve"], "");
        let env = vec![("PORT".to_string(), "80".to_string())];
        let mut c = Container::default();
        assert_eq!(argv(&c, &img, &env).unwrap(), ["/entry", "serve"]);
        c.args = strings(&["--port=$(PORT)"]);
        assert_eq!(argv(&c, &img, &env).unwrap(), ["/entry", "--port=80"]);
        c.command = strings(&["/bin/sh", "-c"]);
        c.args = None;
        assert_eq!(argv(&c, &img, &env).unwrap(), ["/bin/sh", "-c"]);
        c.args = strings(&["echo $(PORT)"]);
        assert_eq!(argv(&c, &img, &env).unwrap(), ["/bin/sh", "-c", "echo 80"]);
        assert!(argv(&Container::default(), &image(&[], &[], ""), &env).is_err());
    }

    #[test]
    fn users_and_non_root() {
        let root = image(&["/e"], &[], "");
        let named = image(&["/e"], &[], "app");
        let sc = |u: Option<i64>, g: Option<i64>, nr: Option<bool>| SecurityContext {
            run_as_user: u,
            run_as_group: g,
            run_as_non_root: nr,
            ..Default::default()
        };
        assert_eq!(user(None, None, &root).unwrap(), None);
        assert_eq!(
            user(Some(&sc(Some(1000), None, None)), None, &root).unwrap().as_deref(),
            Some("1000")
        );
        assert_eq!(
            user(Some(&sc(Some(1000), Some(5), None)), None, &root).unwrap().as_deref(),
            Some("1000:5")
        );
        let pod = PodSecurityContext { run_as_user: Some(7), ..Default::default() };
        assert_eq!(user(None, Some(&pod), &root).unwrap().as_deref(), Some("7"));
        assert!(user(Some(&sc(None, None, Some(true))), None, &root)
            .unwrap_err()
            .contains("run as root"));
        assert!(user(Some(&sc(None, None, Some(true))), None, &named)
            .unwrap_err()
            .contains("non-numeric"));
        assert!(user(Some(&sc(Some(0), None, Some(true))), None, &named).is_err());
        assert!(user(Some(&sc(Some(1), None, Some(true))), None, &root).is_ok());
    }

    #[test]
    fn spec_has_pod_ipc_volumes_and_limits() {
        let img = image(&["/e"], &[], "");
        let meta = ObjectMeta { name: "web-abc".into(), ..Default::default() };
        let c = Container {
            name: "web".into(),
            image: "demo".into(),
            volume_mounts: vec![
                VolumeMount {
                    name: "data".into(),
                    mount_path: "/data".into(),
                    read_only: None,
                    sub_path: Some("sub".into()),
                },
                VolumeMount {
                    name: "cfg".into(),
                    mount_path: "/cfg".into(),
                    read_only: None,
                    sub_path: None,
                },
            ],
            resources: Some(ironpod_kube::pod::Resources {
                limits: [("memory".to_string(), ironpod_kube::quantity::Quantity("64Mi".into()))]
                    .into(),
                requests: Default::default(),
            }),
            security_context: Some(SecurityContext {
                capabilities: Some(Capabilities { add: vec!["NET_ADMIN".into()], drop: vec![] }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = PodSpec { containers: vec![c.clone()], ..Default::default() };
        let volumes = vec![
            GuestVolume { name: "data".into(), path: "/run/v/data".into(), read_only: false },
            GuestVolume { name: "cfg".into(), path: "/run/v/cfg".into(), read_only: true },
        ];
        let spec = build(&SpecInput {
            meta: &meta,
            pod: &pod,
            container: &c,
            image: &img,
            env: &[],
            volumes: &volumes,
            id: "1-web.0",
        })
        .unwrap();
        let ns: Vec<_> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(
            !ns.contains(&LinuxNamespaceType::Ipc) && !ns.contains(&LinuxNamespaceType::Network)
        );
        assert!(ns.contains(&LinuxNamespaceType::Mount) && ns.contains(&LinuxNamespaceType::Pid));
        assert_eq!(spec.hostname().as_deref(), Some("web-abc"));
        let mounts = spec.mounts().clone().unwrap();
        let data = mounts.iter().find(|m| m.destination().to_str() == Some("/data")).unwrap();
        assert_eq!(data.source().as_ref().unwrap().to_str(), Some("/run/v/data"));
        assert!(data.options().as_ref().unwrap().contains(&"x-ironpod.subpath=sub".to_string()));
        let cfg = mounts.iter().find(|m| m.destination().to_str() == Some("/cfg")).unwrap();
        assert!(cfg.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert!(mounts
            .iter()
            .any(|m| m.source().as_ref().and_then(|s| s.to_str())
                == Some("/run/ironpod/etc/pod/hosts")));
        let mem = spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .memory()
            .as_ref()
            .unwrap()
            .limit();
        assert_eq!(mem, Some(64 << 20));
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        assert!(caps.iter().any(|c| format!("{c:?}").contains("NetAdmin")));
    }
}
