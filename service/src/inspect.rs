//! `GET /containers/{id}/json` and `GET /images/{name}/json`: Docker's inspect documents,
//! from a container's record (its OCI spec and run options) and an image's config.

use std::collections::HashMap;
use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::Json;
use bollard_stubs::models::{
    ContainerConfig, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
    DriverData, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, MountPoint,
    NetworkSettings, PortBinding, PortMap, RestartPolicy, RestartPolicyNameEnum,
};
use ironpod_net::NetworkSettings as PodNetwork;
use ironpod_pods::paths;
use ironpod_pods::spec::RunOptions;
use ironpod_state::{status, Record, StateError};
use serde::Serialize;

use crate::error::{blocking, ApiError, ApiResult};
use crate::images::ImageIndex;
use crate::Ctx;

/// A record by name, id or id prefix (404 as Docker words it).
pub fn find(root: &Path, key: &str) -> ApiResult<Record> {
    let state = ironpod_state::State::open(root).map_err(ApiError::internal)?;
    let r = state.find(key).map_err(|e| match e {
        StateError::NotFound(_) => ApiError::not_found(format!("No such container: {key}")),
        StateError::Ambiguous(_) => ApiError::bad_request(e.to_string()),
        e => ApiError::internal(e),
    })?;
    ironpod_pods::pod::reconcile(&state, r).map_err(ApiError::internal)
}

fn state_of(r: &Record) -> ContainerState {
    let running = r.status == status::RUNNING;
    let paused = running && ironpod_pods::lifecycle::is_paused(&r.id);
    ContainerState {
        status: Some(match r.status.as_str() {
            status::RUNNING if paused => ContainerStateStatusEnum::PAUSED,
            status::RUNNING => ContainerStateStatusEnum::RUNNING,
            status::EXITED | status::CREATED if r.restart.restarting => {
                ContainerStateStatusEnum::RESTARTING
            }
            status::EXITED => ContainerStateStatusEnum::EXITED,
            _ => ContainerStateStatusEnum::CREATED,
        }),
        running: Some(running),
        paused: Some(paused),
        restarting: Some(r.status != status::RUNNING && r.restart.restarting),
        oom_killed: Some(r.oom_killed),
        dead: Some(false),
        // The init's pid is the guest's; no host process is the container's.
        pid: Some(if running { r.guest_pid.unwrap_or(0).into() } else { 0 }),
        exit_code: Some(r.exit_code.unwrap_or(0).into()),
        error: Some(r.error.clone().unwrap_or_default()),
        started_at: Some(r.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into())),
        finished_at: Some(r.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into())),
        // Our record of it has Docker's shape.
        health: r.health.as_deref().and_then(|h| serde_json::from_str(h).ok()),
    }
}

/// `["k=v", …]` as a map.
fn key_values(list: &[String]) -> HashMap<String, String> {
    list.iter().filter_map(|o| o.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

/// Ports as Docker maps them (`"80/tcp": [{HostIp, HostPort}]`); host port 0, one still to
/// be picked at start, shows empty.
fn port_map(list: &[ironpod_net::PortMapping]) -> PortMap {
    let mut ports = PortMap::new();
    for p in list {
        let e = ports
            .entry(format!("{}/{}", p.pod_port, p.protocol))
            .or_insert_with(|| Some(Vec::new()));
        if let Some(list) = e {
            let host_port = if p.host_port == 0 { String::new() } else { p.host_port.to_string() };
            list.push(PortBinding {
                host_ip: Some(p.host_ip.to_string()),
                host_port: Some(host_port),
            });
        }
    }
    ports
}

/// A network's id by name (none when it is gone).
fn network_id(root: &Path, name: &str) -> Option<String> {
    Some(ironpod_net::NetworkStore::open(root).ok()?.find(name).ok()?.id)
}

fn network_of(root: &Path, r: &Record, o: &RunOptions, n: Option<&PodNetwork>) -> NetworkSettings {
    let mut networks = HashMap::new();
    // Docker's aliases: the short id (compose looks for it), the name, then the user's.
    let mut aliases = vec![r.id[..12.min(r.id.len())].to_string(), r.name.clone()];
    aliases.extend(o.network_aliases.iter().cloned());
    match n {
        Some(n) if n.network != "none" => {
            networks.insert(
                n.network.clone(),
                EndpointSettings {
                    ip_address: Some(n.address.map(|a| a.to_string()).unwrap_or_default()),
                    ip_prefix_len: Some(n.prefix.into()),
                    gateway: Some(n.gateway.map(|a| a.to_string()).unwrap_or_default()),
                    mac_address: Some(n.mac.clone().unwrap_or_default()),
                    aliases: Some(aliases),
                    network_id: network_id(root, &n.network),
                    ..Default::default()
                },
            );
        }
        Some(_) => {}
        // Not running: the network it will join, without an address yet.
        None => {
            if let Some(name) = o.network_name() {
                networks.insert(
                    name.to_string(),
                    EndpointSettings {
                        aliases: Some(aliases),
                        network_id: network_id(root, name),
                        ip_address: Some(String::new()),
                        ip_prefix_len: Some(0),
                        gateway: Some(String::new()),
                        mac_address: Some(String::new()),
                        ..Default::default()
                    },
                );
            }
        }
    }
    NetworkSettings {
        sandbox_id: Some(r.id.clone()),
        sandbox_key: Some(format!("/var/run/netns/{}", ironpod_net::pod_namespace(&r.id))),
        ports: Some(port_map(n.map(|n| n.ports.as_slice()).unwrap_or_default())),
        networks: Some(networks),
    }
}

/// The inspect document of a container.
pub fn container_document(
    root: &Path,
    r: &Record,
    images: &ImageIndex,
) -> ContainerInspectResponse {
    let spec: serde_json::Value = serde_json::from_str(&r.spec).unwrap_or_default();
    let o: RunOptions = serde_json::from_str(&r.options).unwrap_or_default();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let args = strings(&spec["process"]["args"]);
    let image = images.by_manifest(&r.image_digest);
    // Settings are kept while the pod runs; a stopped pod has no address.
    let net = (r.status == status::RUNNING)
        .then(|| ironpod_state::State::open(root).ok()?.network::<PodNetwork>(&r.id).ok().flatten())
        .flatten();
    let mounts: Vec<MountPoint> =
        serde_json::from_value(ironpod_volumes::inspect_mounts(root, &o.volumes))
            .unwrap_or_default();
    let entrypoint =
        o.entrypoint.as_ref().map(|e| if e.is_empty() { Vec::new() } else { vec![e.clone()] });
    ContainerInspectResponse {
        id: Some(r.id.clone()),
        created: Some(r.created.clone()),
        path: Some(args.first().cloned().unwrap_or_default()),
        args: Some(args.iter().skip(1).cloned().collect()),
        state: Some(state_of(r)),
        image: Some(image.map(|i| i.id.clone()).unwrap_or_else(|| r.image_digest.clone())),
        resolv_conf_path: Some(String::new()),
        hostname_path: Some(String::new()),
        hosts_path: Some(String::new()),
        log_path: Some(paths::log_path(root, &r.id).display().to_string()),
        name: Some(format!("/{}", r.name)),
        restart_count: Some(r.restart.count.into()),
        driver: Some("erofs".into()),
        platform: Some("linux".into()),
        mount_label: Some(String::new()),
        process_label: Some(String::new()),
        app_armor_profile: Some(String::new()),
        exec_ids: None,
        host_config: Some(HostConfig {
            auto_remove: Some(r.auto_remove),
            restart_policy: Some(RestartPolicy {
                name: Some(match o.restart.name() {
                    "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                    "always" => RestartPolicyNameEnum::ALWAYS,
                    "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
                    _ => RestartPolicyNameEnum::NO,
                }),
                maximum_retry_count: Some(o.restart.max_retries().into()),
            }),
            memory: Some(o.memory.unwrap_or(0) as i64),
            nano_cpus: Some(o.cpus.map_or(0, |c| (c * 1e9) as i64)),
            pids_limit: o.pids_limit,
            readonly_rootfs: Some(o.read_only),
            privileged: Some(o.privileged),
            cap_add: Some(o.cap_add.clone()),
            cap_drop: Some(o.cap_drop.clone()),
            security_opt: Some(o.security_opt.clone()),
            network_mode: Some(o.network.clone().unwrap_or_else(|| "default".into())),
            dns: Some(o.dns.clone()),
            extra_hosts: Some(o.add_host.clone()),
            tmpfs: Some(
                o.tmpfs
                    .iter()
                    .map(|t| match t.split_once(':') {
                        Some((p, opts)) => (p.to_string(), opts.to_string()),
                        None => (t.clone(), String::new()),
                    })
                    .collect(),
            ),
            binds: Some(o.volumes.iter().map(|v| v.to_string()).collect()),
            log_config: Some(HostConfigLogConfig {
                typ: Some("local".into()),
                config: Some(key_values(&o.log_opt)),
            }),
            storage_opt: Some(key_values(&o.storage_opt)),
            runtime: Some("ironpod".into()),
            port_bindings: Some(port_map(&o.publish)),
            ..Default::default()
        }),
        graph_driver: Some(DriverData {
            name: "erofs".into(),
            data: HashMap::from([(
                "WritableDisk".to_string(),
                paths::writable_disk(root, &r.id).display().to_string(),
            )]),
        }),
        mounts: Some(mounts),
        config: Some(ContainerConfig {
            hostname: Some(spec["hostname"].as_str().unwrap_or_default().to_string()),
            domainname: Some(String::new()),
            user: Some(o.user.clone().unwrap_or_default()),
            attach_stdin: Some(o.interactive),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(o.tty),
            open_stdin: Some(o.interactive),
            stdin_once: Some(false),
            env: Some(strings(&spec["process"]["env"])),
            cmd: Some(o.command.clone()),
            image: Some(r.image.clone()),
            working_dir: Some(spec["process"]["cwd"].as_str().unwrap_or("/").to_string()),
            entrypoint,
            labels: Some(crate::containers::labels_of(r, images)),
            healthcheck: o.healthcheck.as_ref().map(|h| HealthConfig {
                test: Some(h.test.clone()),
                interval: Some(h.interval_ns as i64),
                timeout: Some(h.timeout_ns as i64),
                retries: Some(h.retries.into()),
                start_period: Some(h.start_period_ns as i64),
                start_interval: None,
            }),
            ..Default::default()
        }),
        network_settings: Some(network_of(root, r, &o, net.as_ref())),
        ..Default::default()
    }
}

/// `GET /containers/{id}/json`.
pub async fn container(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<ContainerInspectResponse>> {
    let root = ctx.root.clone();
    blocking(move || {
        let r = find(&root, &id)?;
        Ok(Json(container_document(&root, &r, &ImageIndex::load(&root)?)))
    })
    .await
}

/// Docker 20.10's image inspect document: the config twice (`Config` and `ContainerConfig`,
/// as Docker's classic builder wrote them), sizes, the layer list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageDocument {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: String,
    container: String,
    container_config: serde_json::Value,
    docker_version: String,
    author: String,
    config: serde_json::Value,
    architecture: String,
    os: String,
    size: i64,
    virtual_size: i64,
    graph_driver: DriverData,
    #[serde(rename = "RootFS")]
    root_fs: serde_json::Value,
    metadata: serde_json::Value,
}

/// The image config's `config` in Docker's field names (the OCI config uses the same ones).
fn docker_config(c: &serde_json::Value, image: &str) -> serde_json::Value {
    let mut out = serde_json::json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false, "AttachStdout": false,
        "AttachStderr": false, "Tty": false, "OpenStdin": false, "StdinOnce": false,
        "Env": null, "Cmd": null, "Image": image, "Volumes": null, "WorkingDir": "",
        "Entrypoint": null, "OnBuild": null, "Labels": null,
    });
    if let (Some(o), Some(src)) = (out.as_object_mut(), c.as_object()) {
        for (k, v) in src {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

/// `GET /images/{name}/json`.
pub async fn image(
    State(ctx): State<Ctx>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<ImageDocument>> {
    let root = ctx.root.clone();
    blocking(move || {
        let store = ironpod_images::ImageStore::open(&root).map_err(ApiError::internal)?;
        let d = store.inspect(&name).map_err(|e| match e {
            ironpod_images::ImageError::NotFound(_)
            | ironpod_images::ImageError::InvalidName(_) => {
                ApiError::not_found(format!("No such image: {name}"))
            }
            e => ApiError::internal(e),
        })?;
        let cfg = d.config.clone();
        let config = docker_config(&cfg["config"], "");
        let mut digests: Vec<String> = d
            .summary
            .names
            .iter()
            .map(|n| format!("{}@{}", crate::images::repository(n), d.summary.manifest))
            .collect();
        digests.dedup();
        let size = d.summary.size as i64;
        Ok(Json(ImageDocument {
            id: d.summary.id.clone(),
            repo_tags: d.summary.names.clone(),
            repo_digests: digests,
            parent: String::new(),
            comment: cfg["history"]
                .as_array()
                .and_then(|h| h.last())
                .and_then(|h| h["comment"].as_str())
                .unwrap_or_default()
                .to_string(),
            created: d.summary.created.clone(),
            container: String::new(),
            container_config: config.clone(),
            docker_version: String::new(),
            author: cfg["author"].as_str().unwrap_or_default().to_string(),
            config,
            architecture: cfg["architecture"].as_str().unwrap_or("amd64").to_string(),
            os: cfg["os"].as_str().unwrap_or("linux").to_string(),
            size,
            virtual_size: size,
            graph_driver: DriverData { name: "erofs".into(), data: HashMap::new() },
            root_fs: serde_json::json!({ "Type": "layers", "Layers": cfg["rootfs"]["diff_ids"] }),
            metadata: serde_json::json!({ "LastTagTime": "0001-01-01T00:00:00Z" }),
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_fills_what_clients_read() {
        let c = serde_json::json!({ "Cmd": ["sh"], "Env": ["PATH=/bin"] });
        let d = docker_config(&c, "");
        assert_eq!(d["Cmd"], serde_json::json!(["sh"]));
        assert_eq!(d["Tty"], false);
        assert!(d["Entrypoint"].is_null());
        let d = docker_config(&serde_json::Value::Null, "x");
        assert_eq!(d["Image"], "x");
    }

    #[test]
    fn key_value_lists() {
        let m = key_values(&["a=b".into(), "c=d=e".into(), "junk".into()]);
        assert_eq!(m.len(), 2);
        assert_eq!(m["c"], "d=e");
    }
}
