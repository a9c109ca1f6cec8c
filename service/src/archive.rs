//! A container's files (`docker cp`, `docker diff`): `HEAD /containers/{id}/archive` (a
//! path's facts in the `X-Docker-Container-Path-Stat` header), `GET` (a tar of the path),
//! `PUT` (a tar extracted into a directory) and `GET /containers/{id}/changes`. They work
//! whether the container runs or not: a stopped container's files are reached in a VM
//! booted on its disks for the request ([`ironpod_pods::files::Files`]).

use std::io::Read;

use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Json;
use base64::Engine;
use ironpod_pods::files::Files;
use ironpod_protocol::{ChangeKind, PathStat};
use serde_json::{json, Value};

use crate::containers::truthy;
use crate::error::{blocking, ApiError, ApiResult};
use crate::inspect::find;
use crate::Ctx;

/// The header Docker puts a path's facts in (base64 of JSON).
const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// A Unix `st_mode` as Go's `os.FileMode` (what docker's `ContainerPathStat.Mode` holds).
fn go_mode(m: u32) -> u32 {
    let mut g = m & 0o777;
    g |= match m & libc::S_IFMT {
        libc::S_IFDIR => 1 << 31,
        libc::S_IFLNK => 1 << 27,
        libc::S_IFIFO => 1 << 25,
        libc::S_IFSOCK => 1 << 24,
        libc::S_IFBLK => 1 << 26,
        libc::S_IFCHR => (1 << 26) | (1 << 21),
        _ => 0,
    };
    for (bit, go) in [(libc::S_ISUID, 1 << 23), (libc::S_ISGID, 1 << 22), (libc::S_ISVTX, 1 << 20)]
    {
        if m & bit != 0 {
            g |= go;
        }
    }
    g
}

/// The JSON of `X-Docker-Container-Path-Stat`.
fn stat_json(s: &PathStat) -> Value {
    let secs = ironpod_images::time::format_rfc3339(s.mtime_secs.max(0) as u64);
    let mtime = match secs.strip_suffix('Z') {
        Some(base) if s.mtime_nanos > 0 => format!("{base}.{:09}Z", s.mtime_nanos),
        _ => secs,
    };
    json!({
        "name": s.name,
        "size": s.size,
        "mode": go_mode(s.mode),
        "mtime": mtime,
        "linkTarget": s.link_target,
    })
}

fn stat_header(s: &PathStat) -> ApiResult<HeaderValue> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(stat_json(s).to_string());
    HeaderValue::from_str(&b64).map_err(ApiError::internal)
}

/// The query of the archive routes.
struct Query {
    path: String,
    no_overwrite_dir_non_dir: bool,
    copy_uid_gid: bool,
}

fn query(raw: Option<String>) -> ApiResult<Query> {
    let mut q = Query { path: String::new(), no_overwrite_dir_non_dir: false, copy_uid_gid: false };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "path" => q.path = v.into_owned(),
            "noOverwriteDirNonDir" => q.no_overwrite_dir_non_dir = truthy(&Some(v.into_owned())),
            "copyUIDGID" => q.copy_uid_gid = truthy(&Some(v.into_owned())),
            _ => {}
        }
    }
    if q.path.is_empty() {
        return Err(ApiError::bad_request("path is required"));
    }
    if !q.path.starts_with('/') {
        // Docker resolves a relative path from the container's root.
        q.path.insert(0, '/');
    }
    Ok(q)
}

/// A files error as Docker words it: 404 for a missing path, 403 for a read-only one.
fn files_error(e: ironpod_pods::PodError, path: &str, container: &str) -> ApiError {
    use ironpod_protocol::ErrorKind;
    match e {
        ironpod_pods::PodError::Guest(g) => match g.kind {
            ErrorKind::NotFound => ApiError::not_found(format!(
                "Could not find the file {path} in container {container}"
            )),
            ErrorKind::ReadOnly | ErrorKind::PermissionDenied => {
                ApiError { status: StatusCode::FORBIDDEN, message: g.message }
            }
            ErrorKind::BadRequest | ErrorKind::Unsupported => ApiError::bad_request(g.message),
            _ => ApiError::internal(g.message),
        },
        e => e.into(),
    }
}

fn open_files(ctx: &Ctx, key: &str) -> ApiResult<Files> {
    let r = find(&ctx.root, key)?;
    let store = ironpod_images::ImageStore::open(&ctx.root).map_err(ApiError::internal)?;
    Ok(Files::open(&ctx.root, &store, &r)?)
}

/// `HEAD /containers/{id}/archive?path=`: 200 with the path's facts in the header.
pub async fn head(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = query(raw)?;
    let stat = blocking(move || {
        let files = open_files(&ctx, &id)?;
        files.stat(&q.path).map_err(|e| files_error(e, &q.path, &id))
    })
    .await?;
    Response::builder()
        .status(StatusCode::OK)
        .header(STAT_HEADER, stat_header(&stat)?)
        .body(Body::empty())
        .map_err(ApiError::internal)
}

/// `GET /containers/{id}/archive?path=`: a tar of the path, its facts in the header. It
/// streams as the agent writes it (a client that goes away ends the copy); a tar the
/// agent could not finish ends the response in an error, never as if it were whole. A
/// stopped container's VM and disk lock are held until the tar has been read out.
pub async fn get_archive(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = query(raw)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    // One blocking task holds the files (perhaps a VM) until the tar has been read out.
    tokio::task::spawn_blocking(move || {
        let opened = open_files(&ctx, &id).and_then(|files| {
            let stat = files.stat(&q.path).map_err(|e| files_error(e, &q.path, &id))?;
            let stream = files.read_archive(&q.path).map_err(|e| files_error(e, &q.path, &id))?;
            Ok((files, stat, stream))
        });
        let (files, stat, mut stream) = match opened {
            Ok(o) => o,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        if ready_tx.send(Ok(stat)).is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                        break; // the client went away
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
        drop(files);
    });
    let stat = ready_rx.await.map_err(|_| ApiError::internal("the archive's worker ended"))??;
    let body =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header(STAT_HEADER, stat_header(&stat)?)
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
}

/// `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=`: the tar in the
/// body is extracted into directory `path`; 200.
pub async fn put_archive(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    let q = query(raw)?;
    // The container must exist before its body is stored.
    let key = id.clone();
    let root = ctx.root.clone();
    blocking(move || find(&root, &key).map(|_| ())).await?;
    let mut tar = crate::image_files::spool(&ctx.root, body, "archive").await?;
    blocking(move || {
        use std::io::Seek;
        tar.rewind().map_err(ApiError::internal)?;
        let files = open_files(&ctx, &id)?;
        files
            .write_archive(&q.path, &mut tar, q.no_overwrite_dir_non_dir, q.copy_uid_gid)
            .map_err(|e| files_error(e, &q.path, &id))
    })
    .await?;
    Response::builder().status(StatusCode::OK).body(Body::empty()).map_err(ApiError::internal)
}

/// `GET /containers/{id}/changes`: `[{"Path", "Kind"}]`, Kind 0 modified, 1 added, 2
/// deleted (Docker's numbers).
pub async fn changes(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let changes = blocking(move || {
        let files = open_files(&ctx, &id)?;
        files.changes().map_err(|e| files_error(e, "/", &id))
    })
    .await?;
    let list: Vec<Value> = changes
        .iter()
        .map(|c| {
            let kind = match c.kind {
                ChangeKind::Modified => 0,
                ChangeKind::Added => 1,
                ChangeKind::Deleted => 2,
            };
            json!({"Path": c.path, "Kind": kind})
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_go_file_modes() {
        assert_eq!(go_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_mode(libc::S_IFREG | 0o644), 0o644);
        assert_eq!(go_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(go_mode(libc::S_IFREG | libc::S_ISUID | 0o755), (1 << 23) | 0o755);
    }

    #[test]
    fn stat_header_is_base64_json_with_rfc3339_time() {
        let s = PathStat {
            name: "hosts".into(),
            size: 12,
            mode: libc::S_IFREG | 0o644,
            mtime_secs: 0,
            mtime_nanos: 5,
            link_target: String::new(),
        };
        let h = stat_header(&s).unwrap();
        let raw = base64::engine::general_purpose::STANDARD.decode(h.as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["name"], "hosts");
        assert_eq!(v["mode"], 0o644);
        assert_eq!(v["mtime"], "1970-01-01T00:00:00.000000005Z");
    }

    #[test]
    fn the_path_is_required_and_made_absolute() {
        assert!(query(None).is_err());
        let q = query(Some("path=etc%2Fhosts&noOverwriteDirNonDir=true".into())).unwrap();
        assert_eq!(q.path, "/etc/hosts");
        assert!(q.no_overwrite_dir_non_dir && !q.copy_uid_gid);
    }
}
