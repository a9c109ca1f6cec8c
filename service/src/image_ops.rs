//! The routes under `/images/{name}/…` (an image name may hold slashes, so one wildcard
//! route takes the rest of the path and the last segment picks the operation): `json`
//! (inspect), `history`, `tag`, and `DELETE /images/{name}`.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ironpod_images::{ImageError, ImageStore};
use serde::{Deserialize, Serialize};

use crate::containers::truthy;
use crate::error::{blocking, ApiError, ApiResult};
use crate::Ctx;

/// Query of the image routes (each uses its own part).
#[derive(Debug, Default, Deserialize)]
pub struct OpQuery {
    repo: Option<String>,
    tag: Option<String>,
    force: Option<String>,
    noprune: Option<String>,
}

/// An image error as Docker's status codes say it.
pub fn image_error(reference: &str, e: ImageError) -> ApiError {
    match e {
        ImageError::NotFound(_) => ApiError::not_found(format!("No such image: {reference}")),
        ImageError::InvalidName(m) => {
            ApiError::bad_request(format!("invalid reference format: {m}"))
        }
        ImageError::Ambiguous(_) => ApiError::bad_request(e.to_string()),
        ImageError::InUse { .. } => {
            ApiError { status: StatusCode::CONFLICT, message: format!("conflict: {e}") }
        }
        e => ApiError::internal(e),
    }
}

/// Dispatches `/images/{rest}` by method and last segment.
pub async fn route(
    method: Method,
    headers: axum::http::HeaderMap,
    state: State<Ctx>,
    UrlPath(rest): UrlPath<String>,
    Query(q): Query<OpQuery>,
) -> Response {
    let split = rest.rsplit_once('/').filter(|(n, _)| !n.is_empty());
    let r = match (method, split) {
        (Method::GET | Method::HEAD, Some((name, "json"))) => {
            crate::inspect::image(state, UrlPath(name.to_string()))
                .await
                .map(IntoResponse::into_response)
        }
        (Method::GET | Method::HEAD, Some((name, "history"))) => {
            history(state, name.to_string()).await
        }
        (Method::POST, Some((name, "tag"))) => tag(state, name.to_string(), q).await,
        (Method::POST, Some((name, "push"))) => {
            Ok(crate::transfer::push(state.0, headers, name.to_string(), q.tag).await)
        }
        (Method::GET, Some((name, "get"))) => {
            crate::image_files::save_one(state.0, name.to_string()).await
        }
        (Method::DELETE, _) => delete(state, rest.clone(), q).await,
        _ => Err(ApiError::not_found("page not found")),
    };
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /images/{name}/tag?repo=R&tag=T`: 201.
async fn tag(State(ctx): State<Ctx>, name: String, q: OpQuery) -> ApiResult<Response> {
    let repo = q
        .repo
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("repo is required"))?;
    let target = match q.tag.filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo,
    };
    let root = ctx.root.clone();
    blocking(move || {
        let store = ImageStore::open(&root).map_err(ApiError::internal)?;
        store.tag(&name, &target).map_err(|e| match e {
            ImageError::InvalidName(m) => {
                ApiError::bad_request(format!("invalid reference format: {m}"))
            }
            e => image_error(&name, e),
        })?;
        Ok(StatusCode::CREATED.into_response())
    })
    .await
}

/// One line of `DELETE /images/{name}`'s answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    untagged: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<String>,
}

/// `DELETE /images/{name}?force=&noprune=`.
async fn delete(State(ctx): State<Ctx>, name: String, q: OpQuery) -> ApiResult<Response> {
    if truthy(&q.noprune) {
        return Err(ApiError::bad_request(
            "noprune is not supported: content no name or container uses is always collected",
        ));
    }
    let force = truthy(&q.force);
    let root = ctx.root.clone();
    blocking(move || {
        let store = ImageStore::open(&root).map_err(ApiError::internal)?;
        let (untagged, deleted) = store.remove(&name, force).map_err(|e| image_error(&name, e))?;
        let items: Vec<DeleteItem> = untagged
            .into_iter()
            .map(|u| DeleteItem { untagged: Some(u), deleted: None })
            .chain(deleted.into_iter().map(|d| DeleteItem { untagged: None, deleted: Some(d) }))
            .collect();
        Ok(Json(items).into_response())
    })
    .await
}

/// One entry of `GET /images/{name}/history`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct HistoryItem {
    id: String,
    created: i64,
    created_by: String,
    tags: Option<Vec<String>>,
    size: i64,
    comment: String,
}

/// `GET /images/{name}/history`: newest first; the newest entry carries the image's id and
/// names, older ones `<missing>` (as Docker shows images it did not build).
async fn history(State(ctx): State<Ctx>, name: String) -> ApiResult<Response> {
    let root = ctx.root.clone();
    blocking(move || {
        let store = ImageStore::open(&root).map_err(ApiError::internal)?;
        let d = store.inspect(&name).map_err(|e| image_error(&name, e))?;
        let h = store.history(&name).map_err(|e| image_error(&name, e))?;
        // Layer sizes, newest first, for the entries that made a layer.
        let mut sizes: Vec<i64> =
            d.manifest_json.layers().iter().map(|l| l.size() as i64).collect();
        sizes.reverse();
        let mut sizes = sizes.into_iter();
        let items: Vec<HistoryItem> = h
            .iter()
            .enumerate()
            .map(|(i, e)| HistoryItem {
                id: if i == 0 { d.summary.id.clone() } else { "<missing>".into() },
                created: e
                    .created()
                    .as_deref()
                    .and_then(ironpod_images::time::parse_rfc3339)
                    .map_or(0, |t| t as i64),
                created_by: e.created_by().clone().unwrap_or_default(),
                tags: (i == 0).then(|| d.summary.names.clone()),
                size: if e.empty_layer().unwrap_or(false) { 0 } else { sizes.next().unwrap_or(0) },
                comment: e.comment().clone().unwrap_or_default(),
            })
            .collect();
        Ok(Json(items).into_response())
    })
    .await
}

/// `POST /images/prune`: ironpod keeps no dangling images (content no name reaches goes at
/// once, unless a container uses it), so the default prune (`dangling=true`) finds nothing;
/// `dangling=false` (`docker image prune -a`) removes every image no container uses.
/// Filters: `dangling`, `until`, `label`, `label!`.
pub async fn prune(
    State(ctx): State<Ctx>,
    Query(q): Query<crate::volumes::FilterQuery>,
) -> ApiResult<Json<bollard_stubs::models::ImagePruneResponse>> {
    use bollard_stubs::models::{ImageDeleteResponseItem, ImagePruneResponse};
    let f = crate::filters::Filters::parse(q.filters.as_deref())?;
    f.only(&["dangling", "until", "label", "label!"])?;
    let dangling_only = f.flag("dangling")?.unwrap_or(true);
    let until = f.until()?;
    let root = ctx.root.clone();
    blocking(move || {
        let (mut items, mut space) = (Vec::new(), 0u64);
        if !dangling_only {
            let index = crate::images::ImageIndex::load(&root)?;
            let store = ImageStore::open(&root).map_err(ApiError::internal)?;
            for i in index.all() {
                let kept = f.prune_labels(|k| i.labels.get(k).map(String::as_str));
                if !kept || until.is_some_and(|u| i.created as f64 >= u) {
                    continue;
                }
                match store.remove(&i.id, false) {
                    Ok((untagged, deleted)) => {
                        if !deleted.is_empty() {
                            space += i.size;
                        }
                        items.extend(
                            untagged.into_iter().map(|u| ImageDeleteResponseItem {
                                untagged: Some(u),
                                deleted: None,
                            }),
                        );
                        items.extend(
                            deleted.into_iter().map(|d| ImageDeleteResponseItem {
                                untagged: None,
                                deleted: Some(d),
                            }),
                        );
                    }
                    // In use by a container, or gone meanwhile: kept.
                    Err(ImageError::InUse { .. } | ImageError::NotFound(_)) => {}
                    Err(e) => return Err(image_error(&i.id, e)),
                }
            }
        }
        Ok(Json(ImagePruneResponse {
            images_deleted: Some(items),
            space_reclaimed: Some(space as i64),
        }))
    })
    .await
}
