//! Volume routes: `GET /volumes`, `POST /volumes/create`, `GET|DELETE /volumes/{name}`,
//! `POST /volumes/prune` — the named volumes the CLI's `-v NAME:/path` uses.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard_stubs::models::{
    Volume, VolumeCreateRequest, VolumeListResponse, VolumePruneResponse, VolumeScopeEnum,
};
use ironpod_volumes::{VolumeError, VolumeStore};
use serde::Deserialize;

use crate::body::DockerJson;
use crate::containers::{records, truthy};
use crate::error::{blocking, ApiError, ApiResult};
use crate::filters::Filters;
use crate::Ctx;

fn volume_error(e: VolumeError) -> ApiError {
    match e {
        VolumeError::NotFound(n) => ApiError::not_found(format!("get {n}: no such volume")),
        VolumeError::Invalid(m) => ApiError::bad_request(m),
        e @ VolumeError::InUse { .. } => {
            ApiError { status: StatusCode::CONFLICT, message: e.to_string() }
        }
        e => ApiError::internal(e),
    }
}

fn docker_volume(v: ironpod_volumes::Volume) -> Volume {
    Volume {
        name: v.name,
        driver: v.driver,
        mountpoint: v.mountpoint.display().to_string(),
        created_at: Some(v.created_at),
        labels: v.labels.into_iter().collect(),
        scope: Some(VolumeScopeEnum::LOCAL),
        options: HashMap::new(),
        ..Default::default()
    }
}

/// The volumes some container (running or not) mounts.
fn used(root: &Path) -> ApiResult<Vec<String>> {
    let recs = records(root)?;
    let store = VolumeStore::new(root);
    Ok(store
        .list()
        .map_err(volume_error)?
        .into_iter()
        .filter(|v| !ironpod_pods::pod::volume_users(&v.name, &recs).is_empty())
        .map(|v| v.name)
        .collect())
}

/// Query with Docker's `filters`.
#[derive(Debug, Deserialize)]
pub struct FilterQuery {
    pub(crate) filters: Option<String>,
}

fn selected(f: &Filters, v: &ironpod_volumes::Volume, used: &[String]) -> ApiResult<bool> {
    let dangling = f.flag("dangling")?;
    Ok(f.any("name", |n| v.name.contains(n))
        && f.any("driver", |d| d == v.driver)
        && f.labels_match("label", |k| v.labels.get(k).map(String::as_str))
        && dangling.is_none_or(|d| d != used.contains(&v.name)))
}

/// `GET /volumes`.
pub async fn list(
    State(ctx): State<Ctx>,
    Query(q): Query<FilterQuery>,
) -> ApiResult<Json<VolumeListResponse>> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["name", "driver", "label", "dangling"])?;
    let root = ctx.root.clone();
    blocking(move || {
        let used = used(&root)?;
        let mut out = Vec::new();
        for v in VolumeStore::new(&root).list().map_err(volume_error)? {
            if selected(&f, &v, &used)? {
                out.push(docker_volume(v));
            }
        }
        Ok(Json(VolumeListResponse { volumes: Some(out), warnings: Some(Vec::new()) }))
    })
    .await
}

/// A random 64-hex-digit name (what Docker gives an unnamed volume).
fn random_name() -> ApiResult<String> {
    ironpod_ids::random_hex(32).map_err(ApiError::internal)
}

/// `POST /volumes/create`: 201 with the volume (an existing one is returned as it is).
pub async fn create(
    State(ctx): State<Ctx>,
    DockerJson(req): DockerJson<VolumeCreateRequest>,
) -> ApiResult<Response> {
    if let Some(d) = req.driver.as_deref().filter(|d| !d.is_empty() && *d != "local") {
        return Err(ApiError::not_found(format!(
            "volume driver {d:?} not found: only \"local\" volumes exist"
        )));
    }
    if req.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad_request(
            "driver options (type, device, o) are not supported: a volume is a directory under the state root",
        ));
    }
    if req.cluster_volume_spec.is_some() {
        return Err(ApiError::bad_request("cluster volumes need swarm, which is not active"));
    }
    let root = ctx.root.clone();
    blocking(move || {
        let name = match req.name.filter(|n| !n.is_empty()) {
            Some(n) => n,
            None => random_name()?,
        };
        let labels: BTreeMap<String, String> = req.labels.unwrap_or_default().into_iter().collect();
        let v = VolumeStore::new(&root).create_with_labels(&name, &labels).map_err(volume_error)?;
        Ok((StatusCode::CREATED, Json(docker_volume(v))).into_response())
    })
    .await
}

/// `GET /volumes/{name}`.
pub async fn inspect(
    State(ctx): State<Ctx>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Volume>> {
    let root = ctx.root.clone();
    blocking(move || {
        Ok(Json(docker_volume(VolumeStore::new(&root).get(&name).map_err(volume_error)?)))
    })
    .await
}

/// Query of `DELETE /volumes/{name}`.
#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    force: Option<String>,
}

/// `DELETE /volumes/{name}`: 204; 409 while a container mounts it. `force` also removes
/// a volume that is gone already (no 404), as Docker's does; it never removes one in use.
pub async fn delete(
    State(ctx): State<Ctx>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let force = truthy(&q.force);
    let root = ctx.root.clone();
    blocking(move || {
        let recs = records(&root)?;
        let users = ironpod_pods::pod::volume_users(&name, &recs);
        match VolumeStore::new(&root).remove(&name, &users) {
            Ok(()) => Ok(StatusCode::NO_CONTENT),
            Err(VolumeError::NotFound(_)) if force => Ok(StatusCode::NO_CONTENT),
            Err(e) => Err(volume_error(e)),
        }
    })
    .await
}

/// Bytes a directory tree holds (allocated blocks), not following links.
pub(crate) fn disk_usage(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::symlink_metadata(p) else { return 0 };
    let mut n = md.blocks() * 512;
    if md.is_dir() {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            n += disk_usage(&e.path());
        }
    }
    n
}

/// `POST /volumes/prune`: removes the volumes no container mounts (filter `label`).
pub async fn prune(
    State(ctx): State<Ctx>,
    Query(q): Query<FilterQuery>,
) -> ApiResult<Json<VolumePruneResponse>> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["label", "label!", "all"])?;
    let root = ctx.root.clone();
    blocking(move || {
        let recs = records(&root)?;
        let store = VolumeStore::new(&root);
        let (mut deleted, mut space) = (Vec::new(), 0u64);
        for v in store.list().map_err(volume_error)? {
            if !f.prune_labels(|k| v.labels.get(k).map(String::as_str)) {
                continue;
            }
            let users = ironpod_pods::pod::volume_users(&v.name, &recs);
            if !users.is_empty() {
                continue;
            }
            let size = disk_usage(&v.mountpoint);
            match store.remove(&v.name, &users) {
                Ok(()) => {
                    space += size;
                    deleted.push(v.name);
                }
                Err(VolumeError::NotFound(_)) => {} // removed meanwhile
                Err(e) => return Err(volume_error(e)),
            }
        }
        Ok(Json(VolumePruneResponse {
            volumes_deleted: Some(deleted),
            space_reclaimed: Some(space as i64),
        }))
    })
    .await
}
