//! The HTTP side: connections accepted on the unix socket, HTTP/1.1 with upgrades (what
//! `attach` and `exec` hijack), the API version taken off the path (`/v1.41/…` and `/…` are
//! the same route; a version newer than ours is refused as Docker refuses it), Docker's
//! headers on every reply, and the service's end: SIGINT/SIGTERM, or `--time` seconds
//! without a connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, Uri};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tower::ServiceExt;

use crate::error::ApiError;

/// The API version served (Docker 20.10's).
pub const API_VERSION: &str = "1.41";
/// The oldest version clients may ask for (Docker's own minimum).
pub const MIN_API_VERSION: &str = "1.12";

/// `(major, minor)` of a version string like `1.41`.
fn version_of(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Takes `/vX.Y` off the front of the request's path; refuses versions outside ours.
fn strip_version<B>(req: &mut Request<B>) -> Result<(), ApiError> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/v") else { return Ok(()) };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Some(v) = version_of(ver) else { return Ok(()) };
    let (max, min) = (version_of(API_VERSION).unwrap(), version_of(MIN_API_VERSION).unwrap());
    if v > max {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if v < min {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    let pq = match req.uri().query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| ApiError::bad_request("bad request path"))?);
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|_| ApiError::bad_request("bad request path"))?;
    Ok(())
}

/// Docker's headers on every reply.
fn stamp(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("ironpod/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
}

/// Serves `app` on `listener` until a signal, or until no connection was open for `idle`.
pub async fn serve(listener: UnixListener, app: Router, idle: Option<Duration>) {
    let open = Arc::new(AtomicUsize::new(0));
    let idle_fired = idle_watch(open.clone(), idle);
    tokio::pin!(idle_fired);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); return; }
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {
                tracing::info!("terminated: stopping");
                return;
            }
            _ = &mut idle_fired => { tracing::info!("idle: stopping"); return; }
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let open = open.clone();
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let app = app.clone();
                async move {
                    let mut resp = match strip_version(&mut req) {
                        Ok(()) => {
                            app.oneshot(req.map(Body::new)).await.unwrap_or_else(|e| match e {})
                        }
                        Err(e) => e.into_response(),
                    };
                    stamp(&mut resp);
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Resolves once no connection has been open for `idle` (never, without one).
async fn idle_watch(open: Arc<AtomicUsize>, idle: Option<Duration>) {
    let Some(idle) = idle else { return std::future::pending().await };
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        if open.load(Ordering::SeqCst) == 0 {
            quiet += tick;
            if quiet >= idle {
                return;
            }
        } else {
            quiet = Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(version_of("1.41"), Some((1, 41)));
        assert_eq!(version_of("1.9"), Some((1, 9)));
        assert!(version_of("1.9") < version_of("1.41"));
        assert_eq!(version_of("x"), None);
        assert_eq!(version_of("1.x"), None);
    }

    fn path_after(p: &str) -> Result<String, ApiError> {
        let mut r = Request::builder().uri(p).body(()).unwrap();
        strip_version(&mut r).map(|()| r.uri().to_string())
    }

    #[test]
    fn version_prefixes() {
        assert_eq!(path_after("/v1.41/containers/json?all=1").unwrap(), "/containers/json?all=1");
        assert_eq!(path_after("/v1.24/_ping").unwrap(), "/_ping");
        assert_eq!(path_after("/containers/json").unwrap(), "/containers/json");
        assert_eq!(path_after("/v1.41").unwrap(), "/");
        // Not a version: left for the router (a volume named v1 is a path like any other).
        assert_eq!(path_after("/volumes/v1").unwrap(), "/volumes/v1");
        assert_eq!(path_after("/vx/_ping").unwrap(), "/vx/_ping");
        let e = path_after("/v1.99/_ping").unwrap_err();
        assert!(e.message.contains("too new"), "{e:?}");
        assert!(path_after("/v1.2/_ping").unwrap_err().message.contains("too old"));
    }
}
