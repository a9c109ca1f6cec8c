//! Image archives: `GET /images/get?names=…` and `GET /images/{name}/get` (save: an OCI
//! layout tar, what `ironpod save` writes) and `POST /images/load` (a tar in the body, as
//! `ironpod load` takes it). Archives pass through files under `<root>/service-tmp`, unlinked
//! once open, so a failed or cut request leaves nothing behind.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use ironpod_images::{ImageError, ImageStore};
use serde_json::json;

use crate::error::{blocking, ApiError, ApiResult};
use crate::transfer::json_lines;
use crate::Ctx;

/// Where archives pass through.
fn tmp_dir(root: &Path) -> ApiResult<PathBuf> {
    let d = root.join("service-tmp");
    std::fs::create_dir_all(&d).map_err(|e| ApiError::internal(format!("{}: {e}", d.display())))?;
    Ok(d)
}

/// Removes what a service that died left in the archives' directory.
pub fn clean_tmp(root: &Path) {
    if let Ok(rd) = std::fs::read_dir(root.join("service-tmp")) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn tmp_name(root: &Path, what: &str) -> ApiResult<PathBuf> {
    let r = ironpod_ids::random_hex(8).map_err(ApiError::internal)?;
    Ok(tmp_dir(root)?.join(format!("{what}-{r}.tar")))
}

/// The `names` of `GET /images/get` (repeated parameter).
fn names_of(raw: Option<&str>) -> Vec<String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter(|(k, v)| k == "names" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn save_error(e: ImageError) -> ApiError {
    match e {
        ImageError::NotFound(r) => ApiError::not_found(format!("No such image: {r}")),
        ImageError::InvalidName(m) => {
            ApiError::bad_request(format!("invalid reference format: {m}"))
        }
        e => ApiError::internal(e),
    }
}

/// Saves `names` and answers with the tar.
async fn save(root: PathBuf, names: Vec<String>) -> ApiResult<Response> {
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names given"));
    }
    let file = blocking(move || {
        let store = ImageStore::open(&root).map_err(ApiError::internal)?;
        let path = tmp_name(&root, "save")?;
        let r = store.save(&names, &path).map_err(save_error).and_then(|()| {
            std::fs::File::open(&path)
                .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))
        });
        let _ = std::fs::remove_file(&path);
        r
    })
    .await?;
    let file = tokio::fs::File::from_std(file);
    let stream = file_stream(file);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

/// A file's bytes as a body stream, in 64 KiB reads.
pub(crate) fn file_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::unfold(Some(file), |f| async move {
        use tokio::io::AsyncReadExt;
        let mut f = f?;
        let mut buf = vec![0u8; 64 << 10];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// `GET /images/get?names=A&names=B`: the images as one tar.
pub async fn save_many(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    save(ctx.root.as_ref().clone(), names_of(q.as_deref())).await
}

/// `GET /images/{name}/get`.
pub async fn save_one(ctx: Ctx, name: String) -> ApiResult<Response> {
    save(ctx.root.as_ref().clone(), vec![name]).await
}

/// A new unlinked file under `<root>/service-tmp`, open for reading and writing.
pub(crate) fn tmp_file(root: &Path, what: &str) -> ApiResult<std::fs::File> {
    let path = tmp_name(root, what)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// Stores a request body in an unlinked file under `<root>/service-tmp` (refused when it
/// outgrows the state root's free space) and returns it open (read it back through
/// `/proc/self/fd`, or from its start).
pub(crate) async fn spool(root: &Path, body: Body, what: &str) -> ApiResult<std::fs::File> {
    let file = tmp_file(root, what)?;
    let mut writer = tokio::fs::File::from_std(file.try_clone().map_err(ApiError::internal)?);
    let free = ironpod_images::free_bytes(root);
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        total += chunk.len() as u64;
        if free.is_some_and(|f| total > f) {
            return Err(ApiError::internal("the body does not fit on the state root's disk"));
        }
        tokio::io::AsyncWriteExt::write_all(&mut writer, &chunk)
            .await
            .map_err(ApiError::internal)?;
    }
    // (tokio's file writes in the background: flushed, the bytes are in the file.)
    tokio::io::AsyncWriteExt::flush(&mut writer).await.map_err(ApiError::internal)?;
    Ok(file)
}

/// `POST /images/load`: the tar in the body is stored, then loaded; answers with Docker's
/// `{"stream": "Loaded image: NAME\n"}` lines (there is no progress to quieten).
pub async fn load(State(ctx): State<Ctx>, body: Body) -> ApiResult<Response> {
    let root = ctx.root.clone();
    let file = spool(&root, body, "load").await?;
    Ok(json_lines(move |lines| {
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let store = match ImageStore::open(&root) {
            Ok(s) => s,
            Err(e) => return lines.fail(ApiError::internal(e)),
        };
        match store.load(&fd_path) {
            Ok(names) => {
                for n in names {
                    let what =
                        if n.starts_with("sha256:") { "Loaded image ID" } else { "Loaded image" };
                    lines.send(json!({"stream": format!("{what}: {n}\n")}));
                }
            }
            Err(e @ ImageError::BadTar(_)) => lines.fail(ApiError::bad_request(e.to_string())),
            Err(e) => lines.fail(ApiError::internal(e)),
        }
        drop(file);
    })
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names() {
        assert_eq!(names_of(Some("names=a&names=b%3A1&x=y&names=")), ["a", "b:1"]);
        assert!(names_of(None).is_empty());
    }
}
