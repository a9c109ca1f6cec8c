//! Image transfers: pull (`POST /images/create`), push (`POST /images/{name}/push`) and the
//! credential check behind `docker login` (`POST /auth`). Pulls and pushes answer with
//! Docker's JSON-lines progress stream; a failure before anything moved is a plain HTTP
//! error (404 for an image the registry does not have), one later an `errorDetail` line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use ironpod_images::progress::{ProgressEvent, ProgressSink};
use ironpod_images::{familiar, ImageError, ImageName, ImageStore, RegistryOptions};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::body::DockerJson;
use crate::error::{ApiError, ApiResult};
use crate::Ctx;

/// What a transfer's worker sends to its response.
enum Msg {
    Line(Bytes),
    Fail(ApiError),
}

/// The worker's end of a JSON-lines response.
#[derive(Clone)]
pub struct Lines {
    tx: mpsc::UnboundedSender<Msg>,
    /// Bytes sent and not yet taken by the response (see [`Lines::wait_for_room`]).
    queued: Arc<AtomicUsize>,
}

impl Lines {
    /// Sends one JSON message.
    pub fn send(&self, v: serde_json::Value) {
        let mut b = v.to_string().into_bytes();
        b.push(b'\n');
        self.queued.fetch_add(b.len(), Ordering::SeqCst);
        let _ = self.tx.send(Msg::Line(b.into()));
    }

    /// Whether the client is gone (nothing sent reaches anyone).
    pub fn closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits while more than `limit` bytes wait for the client (a worker that can make
    /// output faster than a client reads it holds back instead of growing the service's
    /// memory). False when the client is gone, or took nothing for `idle`.
    pub fn wait_for_room(&self, limit: usize, idle: std::time::Duration) -> bool {
        let mut last = (self.queued.load(Ordering::SeqCst), std::time::Instant::now());
        loop {
            let queued = self.queued.load(Ordering::SeqCst);
            if self.closed() {
                return false;
            }
            if queued <= limit {
                return true;
            }
            if queued < last.0 {
                last = (queued, std::time::Instant::now());
            } else if last.1.elapsed() > idle {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Fails the request: an HTTP error if nothing was sent yet, else an `errorDetail` line.
    pub fn fail(&self, e: ApiError) {
        let _ = self.tx.send(Msg::Fail(e));
    }
}

/// Runs `work` on a thread of its own (registry transfers run their own I/O runtime) and
/// answers with what it sends.
pub async fn json_lines(work: impl FnOnce(&Lines) + Send + 'static) -> Response {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let lines = Lines { tx, queued: queued.clone() };
    std::thread::spawn(move || work(&lines));
    let taken = queued.clone();
    let first = match rx.recv().await {
        None => Bytes::new(),
        Some(Msg::Fail(e)) => return e.into_response(),
        Some(Msg::Line(b)) => {
            taken.fetch_sub(b.len(), Ordering::SeqCst);
            b
        }
    };
    let rest = futures_util::stream::unfold(rx, move |mut rx| {
        let taken = taken.clone();
        async move {
            let b = match rx.recv().await? {
                Msg::Line(b) => {
                    taken.fetch_sub(b.len(), Ordering::SeqCst);
                    b
                }
                Msg::Fail(e) => {
                    let line = json!({"errorDetail": {"message": e.message}, "error": e.message});
                    Bytes::from(format!("{line}\n"))
                }
            };
            Some((Ok::<_, std::convert::Infallible>(b), rx))
        }
    });
    let stream =
        futures_util::StreamExt::chain(futures_util::stream::once(async move { Ok(first) }), rest);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// Docker's size text (`units.HumanSize`: decimal units, 4 significant digits).
fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let (mut v, mut i) = (n as f64, 0);
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    format!("{s}{}", units[i])
}

/// Docker's progress bar text: `[=====>      ]  1.2MB/3.4MB`.
fn bar(current: u64, total: u64) -> String {
    let width = 50u64;
    let filled = (current.min(total) * width).checked_div(total).map_or(width, |f| f.max(1));
    let mut s = String::from("[");
    s.push_str(&"=".repeat(filled.saturating_sub(1) as usize));
    s.push('>');
    s.push_str(&" ".repeat((width - filled) as usize));
    s.push(']');
    format!("{s} {:>8}/{}", human(current), human(total))
}

/// A message sent once, before the first progress message (or at the end when nothing
/// moved): only once the registry answered, so that a failure before is a plain error.
#[derive(Clone)]
struct Prelude(Arc<Mutex<Option<serde_json::Value>>>);

impl Prelude {
    fn new(v: serde_json::Value) -> Self {
        Prelude(Arc::new(Mutex::new(Some(v))))
    }

    fn send(&self, lines: &Lines) {
        if let Some(v) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            lines.send(v);
        }
    }
}

/// Turns transfer events into Docker's progress messages (downloads throttled to about
/// fifty per blob).
fn progress_sink(lines: Lines, pulling: bool, prelude: Prelude) -> ProgressSink {
    let sent: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    ProgressSink(Arc::new(move |e| {
        prelude.send(&lines);
        let short = |d: &ironpod_images::Digest| d.hex()[..12].to_string();
        match e {
            ProgressEvent::Start { digest, size, .. } => {
                let id = short(&digest);
                if pulling {
                    lines.send(
                        json!({"status": "Pulling fs layer", "progressDetail": {}, "id": id}),
                    );
                } else {
                    lines.send(json!({"status": "Preparing", "progressDetail": {}, "id": id}));
                    lines.send(json!({"status": "Pushing", "progressDetail": {"current": 0, "total": size}, "progress": bar(0, size), "id": id}));
                }
            }
            ProgressEvent::Advance { digest, current, size } => {
                let id = short(&digest);
                let step = (size / 50).max(256 << 10);
                let mut m = sent.lock().unwrap_or_else(|p| p.into_inner());
                let last = m.entry(id.clone()).or_insert(0);
                if current < size && current < *last + step {
                    return;
                }
                *last = current;
                let status = if pulling { "Downloading" } else { "Pushing" };
                lines.send(json!({"status": status, "progressDetail": {"current": current, "total": size}, "progress": bar(current, size), "id": id}));
            }
            ProgressEvent::Done { digest, how } => {
                let id = short(&digest);
                if how == "Downloaded" {
                    lines.send(
                        json!({"status": "Download complete", "progressDetail": {}, "id": id}),
                    );
                    lines.send(json!({"status": "Pull complete", "progressDetail": {}, "id": id}));
                } else {
                    lines.send(json!({"status": how, "progressDetail": {}, "id": id}));
                }
            }
        }
    }))
}

/// The credentials of `X-Registry-Auth` (base64url JSON: username and password, or
/// `auth` = base64 `user:password`); none for an empty header or `{}`.
pub fn registry_auth(headers: &HeaderMap) -> ApiResult<Option<(String, String)>> {
    let Some(raw) = headers.get("x-registry-auth") else { return Ok(None) };
    let raw = raw.to_str().map_err(|_| ApiError::bad_request("X-Registry-Auth is not text"))?;
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || ApiError::bad_request("X-Registry-Auth is not base64 JSON");
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = [URL_SAFE, URL_SAFE_NO_PAD, STANDARD, STANDARD_NO_PAD]
        .iter()
        .find_map(|e| e.decode(raw).ok())
        .ok_or_else(bad)?;
    #[derive(Deserialize, Default)]
    struct AuthConfig {
        #[serde(default)]
        username: String,
        #[serde(default)]
        password: String,
        #[serde(default)]
        auth: String,
        #[serde(default)]
        identitytoken: String,
        #[serde(default)]
        registrytoken: String,
    }
    let a: AuthConfig = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if !a.username.is_empty() {
        return Ok(Some((a.username, a.password)));
    }
    if !a.auth.is_empty() {
        let text = STANDARD.decode(a.auth.trim()).ok().and_then(|b| String::from_utf8(b).ok());
        let (u, p) = text.as_deref().and_then(|t| t.split_once(':')).ok_or_else(bad)?;
        return Ok(Some((u.to_string(), p.to_string())));
    }
    if !a.identitytoken.is_empty() || !a.registrytoken.is_empty() {
        return Err(ApiError::bad_request(
            "token credentials are not supported: log in with a user name and password",
        ));
    }
    Ok(None)
}

/// A registry failure as Docker's status codes say it.
fn transfer_error(reference: &str, e: ImageError) -> ApiError {
    let text = e.to_string();
    match e {
        ImageError::InvalidName(m) => {
            ApiError::bad_request(format!("invalid reference format: {m}"))
        }
        ImageError::NotFound(_) => ApiError::not_found(format!("No such image: {reference}")),
        _ if text.contains("manifest unknown")
            || text.contains("404")
            || text.contains("not found") =>
        {
            ApiError::not_found(format!("manifest for {reference} not found: {text}"))
        }
        _ if text.contains("401") || text.contains("nauthorized") || text.contains("denied") => {
            ApiError { status: StatusCode::UNAUTHORIZED, message: text }
        }
        _ => ApiError::internal(text),
    }
}

/// Query of `POST /images/create`.
#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    #[serde(rename = "fromImage")]
    from_image: Option<String>,
    #[serde(rename = "fromSrc")]
    from_src: Option<String>,
    tag: Option<String>,
    platform: Option<String>,
}

/// `POST /images/create?fromImage=&tag=`: pulls, streaming Docker's progress messages.
pub async fn create(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<CreateQuery>,
) -> Response {
    let r = (|| {
        if q.from_src.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request(
                "importing through the API (fromSrc) is not supported: use `ironpod import`",
            ));
        }
        let image = q
            .from_image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::bad_request("fromImage is required"))?;
        let reference = match q.tag.as_deref().filter(|t| !t.is_empty()) {
            Some(t) if t.contains(':') => format!("{image}@{t}"),
            Some(t) => format!("{image}:{t}"),
            None if image.contains('@')
                || image.rsplit('/').next().is_some_and(|l| l.contains(':')) =>
            {
                image
            }
            None => {
                return Err(ApiError::bad_request(
                    "pulling every tag of a repository is not supported: name a tag",
                ))
            }
        };
        let name = ImageName::parse(&reference)
            .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))?;
        Ok((reference, name, registry_auth(&headers)?))
    })();
    let (reference, name, credentials) = match r {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let root = ctx.root.clone();
    let platform = q.platform.filter(|p| !p.is_empty());
    json_lines(move |lines| {
        let r = name.reference();
        let shown = familiar(&name.full());
        let store = match ImageStore::open(&root) {
            Ok(s) => s,
            Err(e) => return lines.fail(ApiError::internal(e)),
        };
        let before = store.resolve(&reference).ok();
        let what = r.tag().or(r.digest()).unwrap_or("latest");
        let prelude =
            Prelude::new(json!({"status": format!("Pulling from {}", r.repository()), "id": what}));
        let opts = RegistryOptions {
            platform,
            quiet: true,
            credentials,
            progress: Some(progress_sink(lines.clone(), true, prelude.clone())),
            ..Default::default()
        };
        match store.pull(&reference, &opts) {
            Ok(s) => {
                prelude.send(lines);
                lines.send(json!({"status": format!("Digest: {}", s.manifest)}));
                let status = if before.is_some_and(|b| b.to_string() == s.manifest) {
                    format!("Status: Image is up to date for {shown}")
                } else {
                    format!("Status: Downloaded newer image for {shown}")
                };
                lines.send(json!({"status": status}));
            }
            Err(e) => lines.fail(transfer_error(&shown, e)),
        }
    })
    .await
}

/// Runs `f` on a thread of its own (registry clients start their own I/O runtime).
async fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.map_err(|_| ApiError::internal("the worker thread died"))?
}

/// The local names `docker push NAME [tag]` sends: `NAME:TAG`, or with no tag every tag of
/// the repository.
fn push_targets(store: &ImageStore, name: &str, tag: Option<&str>) -> ApiResult<Vec<String>> {
    let want = ImageName::parse(name)
        .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))?;
    let repo_of = |n: &ImageName| {
        format!("{}/{}", n.reference().resolve_registry(), n.reference().repository())
    };
    if let Some(t) = tag {
        let full = if t.contains(':') { format!("{name}@{t}") } else { format!("{name}:{t}") };
        store.resolve(&full).map_err(|_| {
            ApiError::not_found(format!("An image does not exist locally with the tag: {full}"))
        })?;
        return Ok(vec![full]);
    }
    let mut out = Vec::new();
    for s in store.list().map_err(ApiError::internal)? {
        for n in s.names {
            if ImageName::parse(&n).is_ok_and(|p| repo_of(&p) == repo_of(&want)) {
                out.push(n);
            }
        }
    }
    if out.is_empty() {
        return Err(ApiError::not_found(format!(
            "An image does not exist locally with the tag: {name}"
        )));
    }
    out.sort();
    Ok(out)
}

/// `POST /images/{name}/push?tag=`: pushes, streaming Docker's progress messages.
pub async fn push(ctx: Ctx, headers: HeaderMap, name: String, tag: Option<String>) -> Response {
    let credentials = match registry_auth(&headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let root = ctx.root.clone();
    json_lines(move |lines| {
        let store = match ImageStore::open(&root) {
            Ok(s) => s,
            Err(e) => return lines.fail(ApiError::internal(e)),
        };
        let targets = match push_targets(&store, &name, tag.as_deref().filter(|t| !t.is_empty())) {
            Ok(t) => t,
            Err(e) => return lines.fail(e),
        };
        let repo = ironpod_images::ImageName::parse(&name)
            .map(|n| familiar(&format!("{}/{}", n.reference().resolve_registry(), n.reference().repository())))
            .unwrap_or(name.clone());
        let prelude = Prelude::new(json!({"status": format!("The push refers to repository [{repo}]")}));
        let opts = RegistryOptions {
            quiet: true,
            credentials,
            progress: Some(progress_sink(lines.clone(), false, prelude.clone())),
            ..Default::default()
        };
        for t in targets {
            match store.push(&t, &opts) {
                Ok(d) => {
                    prelude.send(lines);
                    let size = std::fs::metadata(store.blobs().path(&d)).map(|m| m.len()).unwrap_or(0);
                    let tag = ImageName::parse(&t)
                        .ok()
                        .and_then(|n| n.reference().tag().map(String::from))
                        .unwrap_or_else(|| "latest".into());
                    lines.send(json!({"status": format!("{tag}: digest: {d} size: {size}")}));
                    lines.send(json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": d.to_string(), "Size": size}}));
                }
                Err(e) => return lines.fail(transfer_error(&t, e)),
            }
        }
    })
    .await
}

/// Body of `POST /auth`.
#[derive(Debug, Default, Deserialize)]
pub struct AuthBody {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    serveraddress: String,
}

/// `POST /auth`: checks credentials against a registry (as `docker login` asks); the
/// docker CLI keeps them and sends them with each pull and push.
pub async fn auth(DockerJson(b): DockerJson<AuthBody>) -> ApiResult<Response> {
    let registry = b
        .serveraddress
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    if registry.is_empty() || b.username.is_empty() {
        return Err(ApiError::bad_request("serveraddress and username are required"));
    }
    on_thread(move || {
        ironpod_images::check_login(
            &registry,
            &b.username,
            &b.password,
            &RegistryOptions::default(),
        )
        .map_err(|e| ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: format!("login attempt to {registry} failed: {e}"),
        })
    })
    .await?;
    Ok(Json(json!({"Status": "Login Succeeded", "IdentityToken": ""})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_waits_for_a_slow_reader() {
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let response = json_lines(move |lines| {
            for i in 0..2000 {
                assert!(lines.wait_for_room(64 * 1024, std::time::Duration::from_secs(60)));
                lines.send(json!({ "stream": format!("{i:01000}") }));
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        // Nobody reads: the worker stops at about 64 KiB of waiting lines.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let early = sent.load(Ordering::SeqCst);
        assert!((60..=70).contains(&early), "{early} lines sent before anyone read");
        // Reading it all lets it finish: every line arrives.
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert_eq!(body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 2000);
    }

    #[test]
    fn sizes_and_bars() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(999), "999B");
        assert_eq!(human(1234), "1.234kB");
        assert_eq!(human(12_345_678), "12.35MB");
        assert_eq!(human(100_000), "100kB");
        let b = bar(50, 100);
        assert!(b.starts_with("[========================>"), "{b}");
        assert!(b.ends_with("50B/100B"), "{b}");
        assert!(bar(100, 100).starts_with(&format!("[{}>]", "=".repeat(49))));
    }

    #[test]
    fn registry_credentials() {
        let mut h = HeaderMap::new();
        assert_eq!(registry_auth(&h).unwrap(), None);
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        h.insert("x-registry-auth", enc("{}").parse().unwrap());
        assert_eq!(registry_auth(&h).unwrap(), None);
        h.insert("x-registry-auth", enc(r#"{"username":"a","password":"b?>"}"#).parse().unwrap());
        assert_eq!(registry_auth(&h).unwrap(), Some(("a".into(), "b?>".into())));
        let inner = base64::engine::general_purpose::STANDARD.encode("u:p:q");
        h.insert("x-registry-auth", enc(&format!(r#"{{"auth":"{inner}"}}"#)).parse().unwrap());
        assert_eq!(registry_auth(&h).unwrap(), Some(("u".into(), "p:q".into())));
        h.insert("x-registry-auth", enc(r#"{"identitytoken":"t"}"#).parse().unwrap());
        assert!(registry_auth(&h).unwrap_err().message.contains("token"));
        h.insert("x-registry-auth", "!!!".parse().unwrap());
        assert_eq!(registry_auth(&h).unwrap_err().status, 400);
    }
}
