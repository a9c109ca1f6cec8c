//! `POST /containers/create`: Docker's container config (Config, HostConfig,
//! NetworkingConfig) turned into ironpod's run options, and the container made (record,
//! layer disks, writable disk; no VM until it starts). A setting that would change how the
//! container runs and that ironpod cannot honour is refused with a 400 naming it, never
//! dropped.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard_stubs::models::{
    ContainerCreateBody, ContainerCreateResponse, HostConfig, MountType, RestartPolicyNameEnum,
};
use ironpod_images::{ImageError, ImageStore};
use ironpod_net::{PortMapping, Protocol};
use ironpod_pods::health::HealthConfig;
use ironpod_pods::restart::RestartPolicy;
use ironpod_pods::spec::RunOptions;
use ironpod_state::StateError;
use serde::Deserialize;

use crate::body::DockerJson;
use crate::error::{blocking, ApiError, ApiResult};
use crate::Ctx;

/// What a create request asks for.
#[derive(Debug, PartialEq)]
pub struct Wanted {
    /// The image reference.
    pub image: String,
    /// Run options.
    pub options: RunOptions,
    /// `HostConfig.AutoRemove`.
    pub auto_remove: bool,
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!("{what} is not supported by ironpod"))
}

/// `HostConfig.PortBindings` → published ports.
fn port_mappings(h: &HostConfig) -> ApiResult<Vec<PortMapping>> {
    let mut out = Vec::new();
    for (key, bindings) in h.port_bindings.iter().flatten() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let pod_port: u16 =
            port.parse().map_err(|_| ApiError::bad_request(format!("invalid port {key:?}")))?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            p => return Err(ApiError::bad_request(format!("invalid protocol {p:?} in {key:?}"))),
        };
        let list = bindings.clone().unwrap_or_default();
        if list.is_empty() {
            out.push(PortMapping {
                host_ip: [0, 0, 0, 0].into(),
                host_port: 0,
                pod_port,
                protocol,
            });
        }
        for b in list {
            let host_ip = match b.host_ip.as_deref().filter(|s| !s.is_empty()) {
                Some(ip) => ip.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid host address {ip:?} (IPv4 only)"))
                })?,
                None => [0, 0, 0, 0].into(),
            };
            let host_port = match b.host_port.as_deref().filter(|s| !s.is_empty()) {
                Some(p) => p
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid host port {p:?}")))?,
                None => 0,
            };
            out.push(PortMapping { host_ip, host_port, pod_port, protocol });
        }
    }
    Ok(out)
}

/// `HostConfig.Mounts` → `-v` and `--tmpfs` values.
fn mounts(h: &HostConfig, volumes: &mut Vec<String>, tmpfs: &mut Vec<String>) -> ApiResult<()> {
    for m in h.mounts.iter().flatten() {
        let target =
            m.target.clone().ok_or_else(|| ApiError::bad_request("a mount needs a Target"))?;
        let ro = if m.read_only.unwrap_or(false) { ":ro" } else { "" };
        match m.typ {
            Some(MountType::BIND) | Some(MountType::VOLUME) => {
                let source = m.source.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
                    ApiError::bad_request(format!("the mount at {target} needs a Source (anonymous volumes are not supported)"))
                })?;
                volumes.push(format!("{source}:{target}{ro}"));
            }
            Some(MountType::TMPFS) => {
                let mut opts = Vec::new();
                if let Some(t) = &m.tmpfs_options {
                    if let Some(size) = t.size_bytes.filter(|s| *s > 0) {
                        opts.push(format!("size={size}"));
                    }
                    if let Some(mode) = t.mode.filter(|m| *m > 0) {
                        opts.push(format!("mode={mode:o}"));
                    }
                }
                if m.read_only.unwrap_or(false) {
                    opts.push("ro".into());
                }
                tmpfs.push(if opts.is_empty() {
                    target
                } else {
                    format!("{target}:{}", opts.join(","))
                });
            }
            ref t => return Err(unsupported(&format!("a mount of type {t:?}"))),
        }
    }
    Ok(())
}

/// Refuses host settings ironpod cannot honour when they are set to something else than
/// Docker's defaults (what clients send when the user did not ask).
fn refuse_unsupported(h: &HostConfig) -> ApiResult<()> {
    let set = |b: bool, what: &str| if b { Err(unsupported(what)) } else { Ok(()) };
    let nonempty = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    set(h.publish_all_ports.unwrap_or(false), "PublishAllPorts (-P)")?;
    set(nonempty(&h.volumes_from), "VolumesFrom")?;
    set(nonempty(&h.links), "Links")?;
    set(h.devices.as_ref().is_some_and(|d| !d.is_empty()), "Devices")?;
    set(
        h.ipc_mode.as_deref().is_some_and(|m| !m.is_empty() && m != "private" && m != "shareable"),
        "IpcMode",
    )?;
    set(h.pid_mode.as_deref().is_some_and(|m| !m.is_empty()), "PidMode")?;
    set(h.uts_mode.as_deref().is_some_and(|m| !m.is_empty()), "UTSMode")?;
    set(h.userns_mode.as_deref().is_some_and(|m| !m.is_empty()), "UsernsMode")?;
    set(h.sysctls.as_ref().is_some_and(|s| !s.is_empty()), "Sysctls")?;
    set(
        h.runtime.as_deref().is_some_and(|r| !r.is_empty() && r != "ironpod" && r != "runc"),
        "a Runtime other than ironpod",
    )?;
    set(h.volume_driver.as_deref().is_some_and(|d| !d.is_empty() && d != "local"), "VolumeDriver")?;
    Ok(())
}

/// `Config.Healthcheck` (durations in nanoseconds; negative ones are refused).
fn health_config(h: &bollard_stubs::models::HealthConfig) -> ApiResult<HealthConfig> {
    let ns = |name: &str, v: Option<i64>| {
        u64::try_from(v.unwrap_or(0))
            .map_err(|_| ApiError::bad_request(format!("{name} in Healthcheck cannot be negative")))
    };
    if h.start_interval.is_some_and(|v| v != 0) {
        return Err(unsupported("Healthcheck.StartInterval (API 1.44)"));
    }
    let cfg = HealthConfig {
        test: h.test.clone().unwrap_or_default(),
        interval_ns: ns("Interval", h.interval)?,
        timeout_ns: ns("Timeout", h.timeout)?,
        retries: u32::try_from(h.retries.unwrap_or(0))
            .map_err(|_| ApiError::bad_request("Retries in Healthcheck cannot be negative"))?,
        start_period_ns: ns("StartPeriod", h.start_period)?,
    };
    cfg.validate().map_err(ApiError::bad_request)?;
    Ok(cfg)
}

/// `HostConfig.RestartPolicy`; refused with `AutoRemove`, as Docker does.
fn restart_policy(h: &HostConfig) -> ApiResult<RestartPolicy> {
    let Some(p) = &h.restart_policy else { return Ok(RestartPolicy::No) };
    let max = p.maximum_retry_count.unwrap_or(0);
    let max = u32::try_from(max)
        .map_err(|_| ApiError::bad_request(format!("invalid MaximumRetryCount {max}")))?;
    let policy = match p.name.unwrap_or(RestartPolicyNameEnum::EMPTY) {
        RestartPolicyNameEnum::EMPTY | RestartPolicyNameEnum::NO => RestartPolicy::No,
        RestartPolicyNameEnum::ON_FAILURE => RestartPolicy::OnFailure { max },
        RestartPolicyNameEnum::ALWAYS => RestartPolicy::Always,
        RestartPolicyNameEnum::UNLESS_STOPPED => RestartPolicy::UnlessStopped,
    };
    if max > 0 && !matches!(policy, RestartPolicy::OnFailure { .. }) {
        return Err(ApiError::bad_request(format!(
            "maximum retry count cannot be used with restart policy '{}'",
            policy.name()
        )));
    }
    if policy != RestartPolicy::No && h.auto_remove.unwrap_or(false) {
        return Err(ApiError::bad_request(
            "conflicting options: AutoRemove and RestartPolicy (a container removed when it exits \
             cannot be restarted)",
        ));
    }
    Ok(policy)
}

/// `HostConfig.NetworkMode` and `NetworkingConfig.EndpointsConfig` → the pod's network
/// (`None`: the default) and its aliases there. A pod has one network card: one endpoint.
fn endpoint(
    body: &ContainerCreateBody,
    h: &HostConfig,
) -> ApiResult<(Option<String>, Vec<String>)> {
    let mode = match h.network_mode.as_deref() {
        None | Some("") | Some("default") => None,
        Some(n) => Some(n.to_string()),
    };
    let endpoints = body
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.clone())
        .unwrap_or_default();
    let mut endpoints = endpoints.into_iter();
    let Some((net, e)) = endpoints.next() else {
        return Ok((mode.filter(|m| m != ironpod_net::DEFAULT_NETWORK), Vec::new()));
    };
    if endpoints.next().is_some() {
        return Err(ApiError::bad_request(
            "a pod has one network card: NetworkingConfig may name one network",
        ));
    }
    if mode.as_deref().is_some_and(|m| m != net) {
        return Err(ApiError::bad_request(format!(
            "NetworkingConfig names network {net:?} but NetworkMode is {:?}",
            mode.unwrap_or_default()
        )));
    }
    check_endpoint(&e)?;
    let mut aliases: Vec<String> = Vec::new();
    for a in e.aliases.unwrap_or_default() {
        if !aliases.contains(&a) {
            aliases.push(a);
        }
    }
    Ok(((net != ironpod_net::DEFAULT_NETWORK).then_some(net), aliases))
}

/// Refuses endpoint settings ironpod cannot honour (a fixed address or MAC, links, driver
/// options).
pub fn check_endpoint(e: &bollard_stubs::models::EndpointSettings) -> ApiResult<()> {
    let set = |b: bool, what: &str| if b { Err(unsupported(what)) } else { Ok(()) };
    let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    set(
        e.ipam_config.as_ref().is_some_and(|c| {
            given(&c.ipv4_address)
                || given(&c.ipv6_address)
                || c.link_local_ips.as_ref().is_some_and(|l| !l.is_empty())
        }),
        "a fixed address (IPAMConfig)",
    )?;
    set(given(&e.mac_address), "a fixed MacAddress")?;
    set(e.links.as_ref().is_some_and(|l| !l.is_empty()), "Links")?;
    set(e.driver_opts.as_ref().is_some_and(|d| !d.is_empty()), "endpoint DriverOpts")
}

/// The run options a create request asks for.
pub fn wanted(body: ContainerCreateBody) -> ApiResult<Wanted> {
    let image = body
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::bad_request("config has no Image"))?;
    let healthcheck = body.healthcheck.as_ref().map(health_config).transpose()?;
    if body.stop_signal.as_deref().is_some_and(|s| !s.is_empty()) || body.stop_timeout.is_some() {
        return Err(unsupported(
            "StopSignal/StopTimeout on a container (yet; the image's STOPSIGNAL is used)",
        ));
    }
    let h = body.host_config.clone().unwrap_or_default();
    refuse_unsupported(&h)?;
    // Docker: process = Entrypoint ++ Cmd. Ours takes one entrypoint program; the rest of a
    // longer Entrypoint goes before the command.
    let (entrypoint, mut command) = match body.entrypoint.clone() {
        None => (None, Vec::new()),
        Some(e) if e.is_empty() => (Some(String::new()), Vec::new()),
        Some(e) => (Some(e[0].clone()), e[1..].to_vec()),
    };
    // (An Entrypoint given without Cmd drops the image's Cmd, as Docker does: `spec::build`.)
    command.extend(body.cmd.clone().unwrap_or_default());
    let mut volumes = h.binds.clone().unwrap_or_default();
    let mut tmpfs: Vec<String> = h
        .tmpfs
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(p, o)| if o.is_empty() { p } else { format!("{p}:{o}") })
        .collect();
    tmpfs.sort();
    mounts(&h, &mut volumes, &mut tmpfs)?;
    let log_opt = match &h.log_config {
        Some(l) => {
            match l.typ.as_deref() {
                None | Some("") | Some("local") | Some("json-file") => {}
                Some(t) => {
                    return Err(unsupported(&format!(
                        "the {t:?} log driver (logs are kept by the pod monitor, local driver)"
                    )))
                }
            }
            let mut o: Vec<String> = l
                .config
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            o.sort();
            o
        }
        None => Vec::new(),
    };
    let mut storage_opt: Vec<String> = h
        .storage_opt
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    storage_opt.sort();
    let (network, network_aliases) = endpoint(&body, &h)?;
    let options = RunOptions {
        command,
        entrypoint,
        env: body.env.clone().unwrap_or_default(),
        workdir: body.working_dir.clone().filter(|w| !w.is_empty()),
        user: body.user.clone().filter(|u| !u.is_empty()),
        tty: body.tty.unwrap_or(false),
        interactive: body.open_stdin.unwrap_or(false),
        cpus: h.nano_cpus.filter(|n| *n > 0).map(|n| n as f64 / 1e9),
        memory: h.memory.filter(|m| *m > 0).map(|m| m as u64),
        pids_limit: h.pids_limit.filter(|p| *p > 0),
        hostname: body.hostname.clone().filter(|h| !h.is_empty()),
        read_only: h.readonly_rootfs.unwrap_or(false),
        privileged: h.privileged.unwrap_or(false),
        cap_add: h.cap_add.clone().unwrap_or_default(),
        cap_drop: h.cap_drop.clone().unwrap_or_default(),
        security_opt: h.security_opt.clone().unwrap_or_default(),
        network,
        publish: port_mappings(&h)?,
        dns: h.dns.clone().unwrap_or_default(),
        add_host: h.extra_hosts.clone().unwrap_or_default(),
        tmpfs,
        volumes: ironpod_volumes::parse_all(&volumes)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        storage_opt,
        log_opt,
        labels: body.labels.clone().unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>(),
        network_aliases,
        restart: restart_policy(&h)?,
        healthcheck,
    };
    Ok(Wanted { image, options, auto_remove: h.auto_remove.unwrap_or(false) })
}

/// Query of `POST /containers/create`.
#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    name: Option<String>,
    platform: Option<String>,
}

/// `POST /containers/create?name=`: 201 `{"Id", "Warnings"}`.
pub async fn create(
    State(ctx): State<Ctx>,
    Query(q): Query<CreateQuery>,
    DockerJson(body): DockerJson<ContainerCreateBody>,
) -> ApiResult<Response> {
    if let Some(p) =
        q.platform.as_deref().filter(|p| !p.is_empty() && *p != "linux" && *p != "linux/amd64")
    {
        return Err(ApiError::bad_request(format!(
            "platform {p:?} is not supported: pods are linux/amd64"
        )));
    }
    let w = wanted(body)?;
    let name = q.name.filter(|n| !n.is_empty());
    let root = ctx.root.clone();
    blocking(move || {
        let options = ironpod_pods::lifecycle::check_options(&root, w.options).map_err(ApiError::bad_request)?;
        let store = ImageStore::open(&root).map_err(ApiError::internal)?;
        match store.resolve(&w.image) {
            Ok(_) => {}
            Err(ImageError::NotFound(_)) => {
                return Err(ApiError::not_found(format!("No such image: {}", crate::images::with_tag(&w.image))))
            }
            Err(e) => return Err(crate::image_ops::image_error(&w.image, e)),
        }
        let id = ironpod_ids::new_id().map_err(ApiError::internal)?;
        let name = name.map(|n| n.strip_prefix('/').unwrap_or(&n).to_string());
        let created = ironpod_pods::pod::create(&root, &store, &id, &w.image, name.as_deref(), &options, w.auto_remove, |_| Ok(()))
            .map_err(|e| match e {
                ironpod_pods::PodError::State(StateError::NameInUse(n)) => ApiError {
                    status: StatusCode::CONFLICT,
                    message: format!("Conflict. The container name \"/{n}\" is already in use. You have to remove (or rename) that container to be able to reuse that name."),
                },
                ironpod_pods::PodError::State2(m) | ironpod_pods::PodError::Spec(ironpod_pods::spec::SpecError::Invalid(m)) => ApiError::bad_request(m),
                e => ApiError::internal(e),
            })?;
        let resp = ContainerCreateResponse { id: created.record.id, warnings: Vec::new() };
        Ok((StatusCode::CREATED, Json(resp)).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> ContainerCreateBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn docker_cli_shapes() {
        let w = wanted(body(serde_json::json!({
            "Image": "demo", "Cmd": ["sh", "-c", "echo hi"], "Env": ["A=1"], "Tty": false,
            "OpenStdin": true, "WorkingDir": "/tmp", "User": "1000", "Labels": {"a": "b"},
            "Entrypoint": null,
            "HostConfig": {
                "Binds": ["data:/data"], "Memory": 134217728, "NanoCpus": 500000000,
                "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "53/udp": null},
                "Tmpfs": {"/run": "size=1m"}, "AutoRemove": true, "NetworkMode": "default",
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                "LogConfig": {"Type": "", "Config": {}}, "CapAdd": ["NET_ADMIN"],
                "Mounts": [{"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1048576}}]
            }
        })))
        .unwrap();
        assert_eq!(w.image, "demo");
        assert!(w.auto_remove);
        let o = &w.options;
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert_eq!(o.entrypoint, None);
        assert_eq!((o.memory, o.cpus), (Some(134_217_728), Some(0.5)));
        assert_eq!(o.network, None);
        assert!(o.interactive && !o.tty);
        assert_eq!(o.tmpfs, ["/run:size=1m", "/scratch:size=1048576"]);
        assert_eq!(o.volumes[0].to_string(), "data:/data");
        assert_eq!(o.publish.len(), 2);
        assert!(o.publish.iter().any(|p| p.pod_port == 80
            && p.host_port == 8080
            && p.host_ip == std::net::Ipv4Addr::LOCALHOST));
        assert!(o
            .publish
            .iter()
            .any(|p| p.pod_port == 53 && p.protocol == Protocol::Udp && p.host_port == 0));
        assert_eq!(o.labels["a"], "b");
        assert_eq!(o.cap_add, ["NET_ADMIN"]);
    }

    #[test]
    fn entrypoints() {
        let w = wanted(body(
            serde_json::json!({"Image": "x", "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo"]}),
        ))
        .unwrap();
        assert_eq!(
            (w.options.entrypoint.as_deref(), w.options.command.clone()),
            (Some("/bin/sh"), vec!["-c".to_string(), "echo".into()])
        );
        let w = wanted(body(serde_json::json!({"Image": "x", "Entrypoint": []}))).unwrap();
        assert_eq!(w.options.entrypoint.as_deref(), Some(""));
    }

    #[test]
    fn refusals() {
        for (v, what) in [
            (serde_json::json!({}), "no Image"),
            (
                serde_json::json!({"Image": "x", "HostConfig": {"PublishAllPorts": true}}),
                "PublishAllPorts",
            ),
            (
                serde_json::json!({"Image": "x", "HostConfig": {"AutoRemove": true, "RestartPolicy": {"Name": "always"}}}),
                "AutoRemove and RestartPolicy",
            ),
            (
                serde_json::json!({"Image": "x", "HostConfig": {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 2}}}),
                "maximum retry count",
            ),
            (serde_json::json!({"Image": "x", "HostConfig": {"PidMode": "host"}}), "PidMode"),
            (
                serde_json::json!({"Image": "x", "HostConfig": {"LogConfig": {"Type": "syslog"}}}),
                "syslog",
            ),
            (
                serde_json::json!({"Image": "x", "HostConfig": {"PortBindings": {"x/tcp": []}}}),
                "invalid port",
            ),
            (
                serde_json::json!({"Image": "x", "HostConfig": {"Mounts": [{"Type": "volume", "Target": "/d"}]}}),
                "anonymous",
            ),
            (
                serde_json::json!({"Image": "x", "Healthcheck": {"Test": ["SHELL", "true"]}}),
                "healthcheck test",
            ),
            (
                serde_json::json!({"Image": "x", "Healthcheck": {"Test": ["CMD", "true"], "Interval": -1}}),
                "cannot be negative",
            ),
            (serde_json::json!({"Image": "x", "HostConfig": {"Binds": ["relative:dir"]}}), ""),
        ] {
            let e = wanted(body(v.clone())).unwrap_err();
            assert_eq!(e.status, 400, "{v}");
            assert!(e.message.contains(what), "{v}: {}", e.message);
        }
        // Defaults clients send are not refusals.
        wanted(body(serde_json::json!({"Image": "x", "Healthcheck": {"Test": ["NONE"]},
            "HostConfig": {"IpcMode": "private", "Runtime": "", "Sysctls": {}, "Devices": []}})))
        .unwrap();
    }
}
