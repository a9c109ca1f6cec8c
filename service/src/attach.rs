//! `POST /containers/{id}/attach`: the connection is hijacked (`101 UPGRADED`,
//! `application/vnd.docker.raw-stream`) and relayed to the pod monitor's attach socket:
//! output to the client (Docker's 8-byte stream headers unless the container has a TTY),
//! the client's input to the container, its half-close as the end of input. `docker run`
//! attaches before it starts the container: the attach waits for the pod, and a start
//! while an attach waits makes the monitor hold the program until the attach is in, so no
//! output is lost.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use ironpod_pods::attach::{self, Frame};
use ironpod_pods::{lifecycle, paths};
use ironpod_state::status;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::containers::truthy;
use crate::error::{blocking, ApiError, ApiResult};
use crate::inspect::find;
use crate::Ctx;

/// Containers with attaches waiting for their start: id → how many.
#[derive(Debug, Default, Clone)]
pub struct Waiting(Arc<Mutex<HashMap<String, usize>>>);

impl Waiting {
    fn add(&self, id: &str) -> WaitingGuard {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_string()).or_default() += 1;
        WaitingGuard { waiting: self.clone(), id: Some(id.to_string()) }
    }

    /// Whether an attach waits for `id` to start.
    pub fn any(&self, id: &str) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(id).is_some_and(|n| *n > 0)
    }
}

/// Exit codes the service learned from its attaches and waits (the monitor's last frame), for
/// waits on containers removed on exit: their record is gone by the time a wait looks.
#[derive(Debug, Default, Clone)]
pub struct Exits(Arc<Mutex<HashMap<String, i64>>>);

/// Exit codes kept (oldest are not tracked: any entry may go once this many are kept).
const EXITS_KEPT: usize = 4096;

impl Exits {
    /// Records how container `id` ended.
    pub fn put(&self, id: &str, code: i64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= EXITS_KEPT {
            m.clear();
        }
        m.insert(id.to_string(), code);
    }

    /// How container `id` ended, if the service learned it.
    pub fn get(&self, id: &str) -> Option<i64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }
}

/// Reads a monitor's frames until the container's exit report; `None` if the connection
/// ended first. (Blocking.)
pub fn exit_code_from(monitor: &mut UnixStream) -> Option<i64> {
    while let Ok(Some(f)) = attach::read(monitor) {
        if let Frame::Exit(r) = f {
            return Some(r.code.into());
        }
    }
    None
}

/// Connects to a started container's monitor as a passive client (blocking).
pub fn connect_started(id: &str) -> Option<UnixStream> {
    let mut s = UnixStream::connect(paths::attach_socket(id)).ok()?;
    attach::write(&mut s, &Frame::Hello).ok()?;
    Some(s)
}

/// Counts one waiting attach until it is connected or gone.
struct WaitingGuard {
    waiting: Waiting,
    id: Option<String>,
}

impl WaitingGuard {
    fn done(&mut self) {
        if let Some(id) = self.id.take() {
            let mut m = self.waiting.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&id);
                }
            }
        }
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.done();
    }
}

/// Query of attach.
#[derive(Debug, Deserialize)]
pub struct AttachQuery {
    stream: Option<String>,
    stdin: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    logs: Option<String>,
    #[serde(rename = "detachKeys")]
    detach_keys: Option<String>,
}

/// What the relay passes on.
#[derive(Clone, Copy, Debug)]
struct Relay {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// Output bytes as the client reads them.
fn framed(r: Relay, stream: u8, data: &[u8]) -> Vec<u8> {
    frame(r.tty, stream, data)
}

/// Output bytes on a hijacked stream: raw with a TTY, else with Docker's 8-byte header
/// (stream 1 stdout, 2 stderr; big-endian length).
pub fn frame(tty: bool, stream: u8, data: &[u8]) -> Vec<u8> {
    if tty {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend([stream, 0, 0, 0]);
    out.extend((data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// `POST /containers/{id}/attach`.
pub async fn attach(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttachQuery>,
    mut req: Request,
) -> ApiResult<Response> {
    if q.detach_keys.as_deref().is_some_and(|k| !k.is_empty()) {
        return Err(ApiError::bad_request("detach keys are not supported by ironpod"));
    }
    if truthy(&q.logs) {
        return Err(ApiError::bad_request(
            "logs=1 on attach is not supported: read them with GET /containers/{id}/logs",
        ));
    }
    if !truthy(&q.stream) {
        return Err(ApiError::bad_request("only stream=1 attaches are supported"));
    }
    let root = ctx.root.clone();
    let rec = blocking(move || find(&root, &id)).await?;
    if rec.status == status::EXITED {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("container {} has exited", rec.id),
        });
    }
    let options: ironpod_pods::spec::RunOptions =
        serde_json::from_str(&rec.options).unwrap_or_default();
    let relay = Relay {
        stdin: truthy(&q.stdin),
        stdout: truthy(&q.stdout),
        stderr: truthy(&q.stderr),
        tty: options.tty,
    };
    // Registered before the answer: the client starts the container only after it.
    let guard = ctx.waiting.add(&rec.id);
    let upgrade = hyper::upgrade::on(&mut req);
    let (root, id, exits) = (ctx.root.clone(), rec.id.clone(), ctx.exits.clone());
    tokio::spawn(async move {
        let mut guard = guard;
        let Ok(upgraded) = upgrade.await else { return };
        let Some(monitor) = connect_monitor(&root, &id).await else { return };
        guard.done();
        relay_streams(TokioIo::new(upgraded), monitor, relay, exits, id).await;
    });
    let wants_upgrade = req.headers().get(header::UPGRADE).is_some();
    let mut resp = Response::builder()
        .status(if wants_upgrade { StatusCode::SWITCHING_PROTOCOLS } else { StatusCode::OK })
        .header(header::CONTENT_TYPE, "application/vnd.docker.raw-stream");
    if wants_upgrade {
        resp = resp.header(header::CONNECTION, "Upgrade").header(header::UPGRADE, "tcp");
    }
    resp.body(Body::empty()).map_err(ApiError::internal)
}

/// Connects to the container's monitor once it listens (it may not have started yet);
/// `None` once the container ended or is gone before that.
async fn connect_monitor(
    root: &std::sync::Arc<std::path::PathBuf>,
    id: &str,
) -> Option<UnixStream> {
    let sock = paths::attach_socket(id);
    loop {
        if let Ok(mut s) = UnixStream::connect(&sock) {
            attach::write(&mut s, &Frame::Hello).ok()?;
            return Some(s);
        }
        let (root, id2) = (root.clone(), id.to_string());
        let alive = tokio::task::spawn_blocking(move || {
            lifecycle::find(&root, &id2).is_ok_and(|r| r.status != status::EXITED)
        })
        .await
        .unwrap_or(false);
        if !alive {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Relays until the container ends (its exit frame) or the client goes away.
/// What a hijacked client sends, read by a task of its own: `Some(bytes)` as they come,
/// then one `None` when it half-closes (or its connection fails).
pub fn client_input<R>(mut client: R) -> mpsc::Receiver<Option<Vec<u8>>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>(64);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None).await;
                    return;
                }
                Ok(n) => {
                    if tx.send(Some(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

async fn relay_streams<IO>(client: IO, monitor: UnixStream, relay: Relay, exits: Exits, id: String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (c_read, mut c_write) = tokio::io::split(client);
    let Ok(mut m_read) = monitor.try_clone() else { return };
    let mut m_write = monitor;
    // Monitor → client: frames read on a blocking thread.
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    // Input goes in only once the program runs: the monitor has no stdin for it before.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        while let Ok(Some(f)) = attach::read(&mut m_read) {
            let bytes = match f {
                Frame::Started => {
                    let _ = started_tx.send(());
                    continue;
                }
                Frame::Stdout(d) if relay.stdout => framed(relay, 1, &d),
                Frame::Stderr(d) if relay.stderr => framed(relay, 2, &d),
                Frame::Exit(r) => {
                    exits.put(&id, r.code.into());
                    break;
                }
                _ => continue,
            };
            if out_tx.blocking_send(bytes).is_err() {
                break;
            }
        }
        let _ = m_read.shutdown(std::net::Shutdown::Read);
    });
    // Client → monitor: input, then its end.
    if relay.stdin {
        let mut in_rx = client_input(c_read);
        tokio::task::spawn_blocking(move || {
            if started_rx.recv().is_err() {
                return; // ended before it started
            }
            while let Some(item) = in_rx.blocking_recv() {
                let f = match item {
                    Some(d) => Frame::Stdin(d),
                    None => Frame::StdinClose,
                };
                let last = f == Frame::StdinClose;
                if attach::write(&mut m_write, &f).is_err() || last {
                    return;
                }
            }
        });
    }
    while let Some(bytes) = out_rx.recv().await {
        if c_write.write_all(&bytes).await.is_err() {
            return;
        }
        let _ = c_write.flush().await;
    }
    let _ = c_write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_waiting() {
        let r = Relay { stdin: false, stdout: true, stderr: true, tty: false };
        assert_eq!(framed(r, 2, b"ab"), [2, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(framed(Relay { tty: true, ..r }, 1, b"ab"), b"ab");
        let w = Waiting::default();
        let e = Exits::default();
        e.put("x", 3);
        assert_eq!((e.get("x"), e.get("y")), (Some(3), None));
        let mut g = w.add("x");
        let g2 = w.add("x");
        assert!(w.any("x"));
        g.done();
        assert!(w.any("x"));
        drop(g2);
        assert!(!w.any("x"));
        drop(g);
        assert!(!w.any("x"));
    }
}
