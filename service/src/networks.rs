//! Network routes: `GET /networks`, `GET|DELETE /networks/{id}`, `POST /networks/create`,
//! `POST /networks/{id}/connect|disconnect`, `POST /networks/prune` — the bridge networks
//! the CLI's `network` commands manage. A pod has one network card, fixed when its VM
//! starts: connect and disconnect change the network of a container that has not started.

use std::collections::HashMap;
use std::path::Path;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard_stubs::models::{
    ConfigReference, EndpointResource, Ipam, IpamConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkCreateResponse, NetworkDisconnectRequest, NetworkInspect,
    NetworkPruneResponse,
};
use ironpod_net::{Network, NetworkError, NetworkStore, NewNetwork, DEFAULT_NETWORK};
use ironpod_pods::lifecycle;
use ironpod_pods::spec::RunOptions;

use crate::body::DockerJson;
use crate::error::{blocking, ApiError, ApiResult};
use crate::filters::Filters;
use crate::inspect::find;
use crate::volumes::FilterQuery;
use crate::Ctx;

/// Option that lets a network's pods reach private ranges beyond the host
/// (`ironpod network create --allow-private`).
const ALLOW_PRIVATE: &str = "ironpod.allow-private";

fn network_error(e: NetworkError) -> ApiError {
    match e {
        NetworkError::NotFound(n) => ApiError::not_found(format!("network {n} not found")),
        e @ NetworkError::Exists(_) => ApiError::conflict(e.to_string()),
        e @ NetworkError::InUse(..) => ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("error while removing network: {e}"),
        },
        NetworkError::Invalid(m) => ApiError::bad_request(m),
        e => ApiError::internal(e),
    }
}

fn store(root: &Path) -> ApiResult<NetworkStore> {
    NetworkStore::open(root).map_err(network_error)
}

/// A network as Docker shows it, with the live pods on it.
fn document(root: &Path, store: &NetworkStore, n: Network) -> ApiResult<NetworkInspect> {
    let mut containers = HashMap::new();
    let state = ironpod_state::State::open(root).map_err(ApiError::internal)?;
    for l in store.leases(&n.name).map_err(network_error)? {
        let Ok(r) = state.find(&l.container) else { continue };
        let settings: Option<ironpod_net::NetworkSettings> = state.network(&r.id).ok().flatten();
        let prefix = n.subnet().map(|s| s.prefix).unwrap_or(32);
        containers.insert(
            r.id.clone(),
            EndpointResource {
                name: Some(r.name.clone()),
                endpoint_id: Some(r.id.clone()),
                mac_address: Some(settings.and_then(|s| s.mac).unwrap_or_default()),
                ipv4_address: Some(format!("{}/{prefix}", l.address)),
                ipv6_address: Some(String::new()),
            },
        );
    }
    let mut options = HashMap::new();
    if n.allow_private {
        options.insert(ALLOW_PRIVATE.to_string(), "true".to_string());
    }
    Ok(NetworkInspect {
        name: Some(n.name.clone()),
        id: Some(n.id.clone()),
        created: Some(n.created.clone()),
        scope: Some("local".into()),
        driver: Some("bridge".into()),
        enable_ipv4: Some(true),
        enable_ipv6: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(n.subnet.clone()),
                gateway: Some(n.gateway.clone()),
                ..Default::default()
            }]),
            options: Some(HashMap::new()),
        }),
        internal: Some(n.internal),
        attachable: Some(false),
        ingress: Some(false),
        config_from: Some(ConfigReference { network: Some(String::new()) }),
        config_only: Some(false),
        options: Some(options),
        labels: Some(n.labels.into_iter().collect()),
        containers: Some(containers),
        ..Default::default()
    })
}

fn selected(f: &Filters, n: &Network) -> bool {
    let builtin = n.name == DEFAULT_NETWORK;
    f.any("name", |v| n.name.contains(v))
        && f.any("id", |v| n.id.starts_with(v))
        && f.any("driver", |v| v == "bridge")
        && f.any("scope", |v| v == "local")
        && f.any("type", |v| v == if builtin { "builtin" } else { "custom" })
        && f.labels_match("label", |k| n.labels.get(k).map(String::as_str))
}

/// `GET /networks`.
pub async fn list(
    State(ctx): State<Ctx>,
    Query(q): Query<FilterQuery>,
) -> ApiResult<Json<Vec<NetworkInspect>>> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["name", "id", "driver", "scope", "type", "label", "dangling"])?;
    let dangling = f.flag("dangling")?;
    let root = ctx.root.clone();
    blocking(move || {
        let store = store(&root)?;
        let mut out = Vec::new();
        for n in store.list().map_err(network_error)? {
            if !selected(&f, &n) {
                continue;
            }
            let doc = document(&root, &store, n)?;
            let unused = doc.containers.as_ref().is_none_or(HashMap::is_empty);
            if dangling.is_none_or(|d| d == unused) {
                out.push(doc);
            }
        }
        Ok(Json(out))
    })
    .await
}

/// `GET /networks/{id}`.
pub async fn inspect(
    State(ctx): State<Ctx>,
    UrlPath(key): UrlPath<String>,
) -> ApiResult<Json<NetworkInspect>> {
    let root = ctx.root.clone();
    blocking(move || {
        let store = store(&root)?;
        let n = store.find(&key).map_err(network_error)?;
        Ok(Json(document(&root, &store, n)?))
    })
    .await
}

/// The network a create request asks for; what ironpod cannot honour is refused by name.
fn new_network(req: &NetworkCreateRequest) -> ApiResult<NewNetwork<'_>> {
    let no = |what: &str| ApiError::bad_request(format!("{what} is not supported by ironpod"));
    if let Some(d) = req.driver.as_deref().filter(|d| !d.is_empty() && *d != "bridge") {
        return Err(ApiError::not_found(format!(
            "plugin {d:?} not found: ironpod networks use the bridge driver"
        )));
    }
    if req.enable_ipv6.unwrap_or(false) {
        return Err(no("IPv6 (EnableIPv6)"));
    }
    if req.ingress.unwrap_or(false) || req.scope.as_deref().is_some_and(|s| s == "swarm") {
        return Err(ApiError::bad_request("swarm networks need swarm, which is not active"));
    }
    if req.config_only.unwrap_or(false)
        || req
            .config_from
            .as_ref()
            .is_some_and(|c| c.network.as_deref().is_some_and(|n| !n.is_empty()))
    {
        return Err(no("a config-only network (ConfigOnly/ConfigFrom)"));
    }
    let mut allow_private = false;
    for (k, v) in req.options.iter().flatten() {
        match k.as_str() {
            ALLOW_PRIVATE => {
                allow_private = v.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "option {ALLOW_PRIVATE}: {v:?} is not true or false"
                    ))
                })?
            }
            _ => return Err(no(&format!("network option {k:?}"))),
        }
    }
    let (mut subnet, mut gateway) = (None, None);
    if let Some(ipam) = &req.ipam {
        if ipam.driver.as_deref().is_some_and(|d| !d.is_empty() && d != "default") {
            return Err(no(&format!("IPAM driver {:?}", ipam.driver.as_deref().unwrap_or(""))));
        }
        if ipam.options.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(no("IPAM options"));
        }
        let configs = ipam.config.as_deref().unwrap_or_default();
        if configs.len() > 1 {
            return Err(no("more than one IPAM config (one IPv4 subnet per network)"));
        }
        if let Some(c) = configs.first() {
            if c.ip_range.as_deref().is_some_and(|r| !r.is_empty()) {
                return Err(no("IPRange"));
            }
            if c.auxiliary_addresses.as_ref().is_some_and(|a| !a.is_empty()) {
                return Err(no("AuxiliaryAddresses"));
            }
            subnet = c.subnet.as_deref().filter(|s| !s.is_empty());
            gateway = c.gateway.as_deref().filter(|s| !s.is_empty());
        }
    }
    if gateway.is_some() && subnet.is_none() {
        return Err(ApiError::bad_request("a Gateway needs its Subnet"));
    }
    Ok(NewNetwork {
        name: &req.name,
        subnet,
        gateway,
        internal: req.internal.unwrap_or(false),
        allow_private,
        labels: req.labels.clone().unwrap_or_default().into_iter().collect(),
    })
}

/// `POST /networks/create`: 201 `{"Id", "Warning"}`; 409 when the name is taken.
pub async fn create(
    State(ctx): State<Ctx>,
    DockerJson(req): DockerJson<NetworkCreateRequest>,
) -> ApiResult<Response> {
    if ironpod_net::store::RESERVED.contains(&req.name.as_str()) {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("operation is not permitted on predefined {} network", req.name),
        });
    }
    new_network(&req)?;
    let root = ctx.root.clone();
    blocking(move || {
        let new = new_network(&req)?;
        let n = store(&root)?.create(&new).map_err(network_error)?;
        let body = NetworkCreateResponse { id: n.id, warning: String::new() };
        Ok((StatusCode::CREATED, Json(body)).into_response())
    })
    .await
}

/// `DELETE /networks/{id}`: 204; 403 while a running pod uses it or for the default one.
pub async fn delete(
    State(ctx): State<Ctx>,
    UrlPath(key): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let root = ctx.root.clone();
    blocking(move || {
        let n = store(&root)?.find(&key).map_err(network_error)?;
        if n.name == DEFAULT_NETWORK {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                message: format!(
                    "{DEFAULT_NETWORK} is a pre-defined network and cannot be removed"
                ),
            });
        }
        ironpod_net::remove(&root, &n.id).map_err(network_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `POST /networks/prune`: removes the networks no running pod uses (filters `label`,
/// `label!`, `until`).
pub async fn prune(
    State(ctx): State<Ctx>,
    Query(q): Query<FilterQuery>,
) -> ApiResult<Json<NetworkPruneResponse>> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["label", "label!", "until"])?;
    let until = f.until()?;
    let root = ctx.root.clone();
    blocking(move || {
        let gone = ironpod_net::prune(&root, |n| {
            let created = ironpod_images::time::parse_rfc3339(&n.created).unwrap_or(0) as f64;
            f.prune_labels(|k| n.labels.get(k).map(String::as_str))
                && until.is_none_or(|u| created < u)
        })
        .map_err(network_error)?;
        Ok(Json(NetworkPruneResponse {
            networks_deleted: Some(gone.into_iter().map(|n| n.name).collect()),
        }))
    })
    .await
}

/// `POST /networks/{id}/connect`: puts a container that has not started on the network
/// (with the endpoint's aliases). 409 for a started one, or one on another user network.
pub async fn connect(
    State(ctx): State<Ctx>,
    UrlPath(key): UrlPath<String>,
    DockerJson(req): DockerJson<NetworkConnectRequest>,
) -> ApiResult<StatusCode> {
    let endpoint = req.endpoint_config.unwrap_or_default();
    crate::create::check_endpoint(&endpoint)?;
    let root = ctx.root.clone();
    blocking(move || {
        let net = store(&root)?.find(&key).map_err(network_error)?;
        let r = find(&root, &req.container)?;
        let o: RunOptions = serde_json::from_str(&r.options).unwrap_or_default();
        let mut aliases = Vec::new();
        if o.network_name() == Some(net.name.as_str()) {
            aliases = o.network_aliases.clone();
        }
        for a in endpoint.aliases.unwrap_or_default() {
            if !aliases.contains(&a) {
                aliases.push(a);
            }
        }
        lifecycle::set_network(&root, &r, Some(&net.name), aliases)?;
        Ok(StatusCode::OK)
    })
    .await
}

/// `POST /networks/{id}/disconnect`: takes a container that has not started off the
/// network (it will have none).
pub async fn disconnect(
    State(ctx): State<Ctx>,
    UrlPath(key): UrlPath<String>,
    DockerJson(req): DockerJson<NetworkDisconnectRequest>,
) -> ApiResult<StatusCode> {
    let root = ctx.root.clone();
    blocking(move || {
        let net = store(&root)?.find(&key).map_err(network_error)?;
        let r = find(&root, &req.container)?;
        let o: RunOptions = serde_json::from_str(&r.options).unwrap_or_default();
        if o.network_name() != Some(net.name.as_str()) {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                message: format!("container {} is not connected to network {}", r.name, net.name),
            });
        }
        lifecycle::set_network(&root, &r, None, Vec::new())?;
        Ok(StatusCode::OK)
    })
    .await
}
