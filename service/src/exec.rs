//! Exec instances: `POST /containers/{id}/exec` (create), `POST /exec/{id}/start` (hijacked
//! like attach, or detached), `GET /exec/{id}/json`, `POST /exec/{id}/resize`, and the
//! container's own `POST /containers/{id}/resize`. A process runs through the pod's agent
//! with its stdio on streams of their own, as `ironpod exec` runs it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::rt::TokioIo;
use ironpod_pods::agent_client::{AgentClient, ClientError};
use ironpod_pods::lifecycle;
use ironpod_protocol::{ErrorKind, ExecProcess, ProcessRef, RequestBody, StdioStream};
use ironpod_state::{status, Record};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::body::DockerJson;
use crate::error::{blocking, ApiError, ApiResult};
use crate::inspect::find;
use crate::Ctx;

/// Exec instances kept (finished ones go first once there are more).
const KEPT: usize = 1024;

/// What `POST /containers/{id}/exec` asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    #[serde(default)]
    attach_stdin: bool,
    #[serde(default)]
    attach_stdout: bool,
    #[serde(default)]
    attach_stderr: bool,
    #[serde(default)]
    detach_keys: Option<String>,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    console_size: Option<Vec<u32>>,
}

/// One exec instance.
#[derive(Debug, Clone)]
struct Instance {
    container: String,
    vsock: String,
    config: ExecConfig,
    started: bool,
    running: bool,
    exit_code: Option<i64>,
    pid: i64,
    /// The agent's name for the process.
    agent_id: String,
    /// A terminal size asked for before the process ran (applied once it runs).
    size: Option<(u16, u16)>,
}

/// The service's exec instances, by id.
#[derive(Debug, Default, Clone)]
pub struct Execs(Arc<Mutex<HashMap<String, Instance>>>);

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instance>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> ApiResult<Instance> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Instance)) {
        if let Some(i) = self.lock().get_mut(id) {
            f(i);
        }
    }
}

fn agent_error(e: ClientError) -> ApiError {
    match e {
        ClientError::Agent(a) => ApiError::internal(a.message),
        e => ApiError::internal(e),
    }
}

/// `POST /containers/{id}/exec`: 201 `{"Id"}`; 409 when the container does not run.
pub async fn create(
    State(ctx): State<Ctx>,
    UrlPath(key): UrlPath<String>,
    DockerJson(cfg): DockerJson<ExecConfig>,
) -> ApiResult<Response> {
    if cfg.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    if cfg.privileged {
        return Err(ApiError::bad_request(
            "privileged exec is not supported by ironpod: a process gets the container's privileges",
        ));
    }
    if cfg.detach_keys.as_deref().is_some_and(|k| !k.is_empty()) {
        return Err(ApiError::bad_request("detach keys are not supported by ironpod"));
    }
    if let Some(w) = cfg.working_dir.as_deref().filter(|w| !w.is_empty()) {
        if !w.starts_with('/') {
            return Err(ApiError::bad_request(format!(
                "the working directory {w:?} is not absolute"
            )));
        }
    }
    if cfg.user.as_deref().is_some_and(|u| u.contains(['\0', '/'])) {
        return Err(ApiError::bad_request("invalid user"));
    }
    let root = ctx.root.clone();
    let r = blocking(move || find(&root, &key)).await?;
    if r.status != status::RUNNING {
        return Err(ApiError::conflict(format!("Container {} is not running", r.id)));
    }
    let id = ironpod_ids::random_hex(32).map_err(ApiError::internal)?;
    let agent_id = id[..16].to_string();
    let inst = Instance {
        container: r.id.clone(),
        vsock: r.vsock.clone().unwrap_or_default(),
        config: cfg,
        started: false,
        running: false,
        exit_code: None,
        pid: 0,
        agent_id,
        size: None,
    };
    {
        let mut m = ctx.execs.lock();
        if m.len() >= KEPT {
            m.retain(|_, i| i.running || !i.started);
        }
        if m.len() >= KEPT {
            return Err(ApiError::conflict("too many exec instances"));
        }
        m.insert(id.clone(), inst);
    }
    let e = ironpod_pods::events::container_event(
        &r,
        &format!("exec_create: {}", exec_line(&ctx, &id)),
    )
    .with("execID", id.clone());
    ironpod_pods::events::emit(&ctx.root, &e);
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "Id": id }))).into_response())
}

fn exec_line(ctx: &Ctx, id: &str) -> String {
    ctx.execs.get(id).map(|i| i.config.cmd.unwrap_or_default().join(" ")).unwrap_or_default()
}

/// The process to run: the container's, with the exec's command, terminal, env and cwd.
fn process_of(r: &Record, c: &ExecConfig) -> ApiResult<oci_spec::runtime::Process> {
    let spec: oci_spec::runtime::Spec = serde_json::from_str(&r.spec)
        .map_err(|e| ApiError::internal(format!("bad spec record: {e}")))?;
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(c.cmd.clone());
    p.set_terminal(Some(c.tty));
    let base = p.env().clone().unwrap_or_default();
    let mut extra = c.env.clone().unwrap_or_default();
    if c.tty && !extra.iter().any(|e| e.starts_with("TERM=")) {
        extra.insert(0, "TERM=xterm".into());
    }
    p.set_env(Some(ironpod_pods::spec::merge_env(&[&base, &extra])));
    if let Some(w) = c.working_dir.as_deref().filter(|w| !w.is_empty()) {
        p.set_cwd(w.into());
    }
    if let Some(&[h, w]) = c.console_size.as_deref() {
        if h > 0 && w > 0 {
            let b = oci_spec::runtime::BoxBuilder::default().height(h).width(w).build();
            p.set_console_size(b.ok());
        }
    }
    Ok(p)
}

/// The process's streams, opened before it starts.
struct Streams {
    stdout: Option<UnixStream>,
    stderr: Option<UnixStream>,
    stdin: Option<UnixStream>,
    /// Fires once its exit code is recorded.
    exited: tokio::sync::oneshot::Receiver<()>,
}

/// Creates and starts the process (blocking): its streams, or the exit code of a start
/// that failed (126: cannot run, 127: not found) with the message.
fn launch(ctx: &Ctx, id: &str, detach: bool) -> ApiResult<Result<Streams, (i64, String)>> {
    let inst = ctx.execs.get(id)?;
    let r = find(&ctx.root, &inst.container)?;
    if r.status != status::RUNNING {
        return Err(ApiError::conflict(format!("Container {} is not running", r.id)));
    }
    let c = &inst.config;
    let pref = ProcessRef::exec(&r.id, &inst.agent_id);
    let mut ctl = lifecycle::agent(&r)?;
    let pid = ctl
        .exec(ExecProcess {
            container: r.id.clone(),
            exec_id: inst.agent_id.clone(),
            process: Box::new(process_of(&r, c)?),
            stdin: c.attach_stdin && !detach,
            user: c.user.clone().filter(|u| !u.is_empty()),
        })
        .map_err(agent_error)?;
    let uds = Path::new(&inst.vsock);
    let open = |which| {
        AgentClient::open(uds, Duration::from_secs(30))
            .and_then(|a| {
                a.into_stream(RequestBody::OpenStdio { process: pref.clone(), stream: which })
            })
            .map_err(agent_error)
    };
    let (exited_tx, exited) = tokio::sync::oneshot::channel();
    let streams = Streams {
        exited,
        stdout: if !detach && (c.attach_stdout || c.tty) {
            Some(open(StdioStream::Stdout)?)
        } else {
            None
        },
        stderr: if !detach && c.attach_stderr && !c.tty {
            Some(open(StdioStream::Stderr)?)
        } else {
            None
        },
        stdin: if !detach && c.attach_stdin { Some(open(StdioStream::Stdin)?) } else { None },
    };
    if let Err(e) = ctl.start(&pref) {
        return Ok(Err(match e {
            ClientError::Agent(a) => {
                (if a.kind == ErrorKind::NotFound { 127 } else { 126 }, a.message)
            }
            e => (126, e.to_string()),
        }));
    }
    ctx.execs.update(id, |i| {
        i.started = true;
        i.running = true;
        i.pid = pid.into();
    });
    // A resize that came while it started (`docker exec -t` sends one at once).
    if let Some((rows, cols)) = ctx.execs.get(id).ok().and_then(|i| i.size) {
        let _ = ctl.resize(&pref, rows, cols);
    }
    let e = ironpod_pods::events::container_event(
        &r,
        &format!("exec_start: {}", c.cmd.clone().unwrap_or_default().join(" ")),
    )
    .with("execID", id.to_string());
    ironpod_pods::events::emit(&ctx.root, &e);
    // The exit code, once it comes.
    let (execs, id2, vsock) = (ctx.execs.clone(), id.to_string(), inst.vsock.clone());
    std::thread::spawn(move || {
        let code = AgentClient::open(Path::new(&vsock), Duration::from_secs(30))
            .and_then(|mut w| {
                w.set_timeout(Duration::from_secs(60 * 60 * 24 * 365))?;
                w.wait(&pref)
            })
            .map(|s| i64::from(s.code))
            .unwrap_or(137);
        execs.update(&id2, |i| {
            i.running = false;
            i.exit_code = Some(code);
        });
        let _ = exited_tx.send(());
    });
    Ok(Ok(streams))
}

/// Body of `POST /exec/{id}/start`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartConfig {
    #[serde(default)]
    detach: bool,
}

/// `POST /exec/{id}/start`: detached (200 once it runs), or hijacked like attach.
pub async fn start(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, crate::body::MAX_JSON)
        .await
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    let sc: StartConfig = crate::body::parse(&bytes)?;
    let inst = ctx.execs.get(&id)?;
    if inst.started {
        return Err(ApiError::conflict(format!("Exec {id} has already been started")));
    }
    ctx.execs.update(&id, |i| i.started = true);
    if sc.detach {
        let (ctx2, id2) = (ctx.clone(), id.clone());
        return match blocking(move || launch(&ctx2, &id2, true)).await? {
            Ok(_) => Ok(StatusCode::OK.into_response()),
            Err((code, message)) => {
                ctx.execs.update(&id, |i| i.exit_code = Some(code));
                Err(ApiError::internal(message))
            }
        };
    }
    let mut req = Request::from_parts(parts, Body::empty());
    let upgrade = hyper::upgrade::on(&mut req);
    let tty = inst.config.tty;
    let (ctx2, id2) = (ctx.clone(), id.clone());
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut client = TokioIo::new(upgraded);
        let (ctx3, id3) = (ctx2.clone(), id2.clone());
        let launched = tokio::task::spawn_blocking(move || launch(&ctx3, &id3, false)).await;
        let (code, message) = match launched {
            Ok(Ok(Ok(streams))) => return relay(client, streams, tty).await,
            Ok(Ok(Err(failed))) => failed,
            Ok(Err(e)) => (126, e.message),
            Err(_) => (126, "the exec worker failed".to_string()),
        };
        // Docker's way: the message on the stream, the code in the exec's inspect.
        ctx2.execs.update(&id2, |i| i.exit_code = Some(code));
        let text = format!("{message}\n");
        let _ = client.write_all(&crate::attach::frame(tty, 2, text.as_bytes())).await;
        let _ = client.shutdown().await;
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

/// Relays the process's streams and the client until the process's output ends.
async fn relay<IO>(client: IO, s: Streams, tty: bool)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (c_read, mut c_write) = tokio::io::split(client);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    for (stream, kind) in [(s.stdout, 1u8), (s.stderr, 2u8)] {
        let Some(mut st) = stream else { continue };
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = st.read(&mut buf) {
                if n == 0 || tx.blocking_send(crate::attach::frame(tty, kind, &buf[..n])).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    if let Some(mut stdin) = s.stdin {
        let mut in_rx = crate::attach::client_input(c_read);
        tokio::task::spawn_blocking(move || {
            while let Some(item) = in_rx.blocking_recv() {
                match item {
                    Some(d) if stdin.write_all(&d).is_ok() => {}
                    // The client's half-close is the end of the process's input.
                    _ => {
                        let _ = stdin.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                }
            }
        });
    }
    while let Some(bytes) = rx.recv().await {
        if c_write.write_all(&bytes).await.is_err() {
            return;
        }
        let _ = c_write.flush().await;
    }
    // The client asks for the exit code once the stream ends: it is known by then.
    let _ = s.exited.await;
    let _ = c_write.shutdown().await;
}

/// Docker's exec inspect document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExecInspect {
    #[serde(rename = "ID")]
    id: String,
    running: bool,
    exit_code: Option<i64>,
    process_config: serde_json::Value,
    open_stdin: bool,
    open_stderr: bool,
    open_stdout: bool,
    can_remove: bool,
    #[serde(rename = "ContainerID")]
    container_id: String,
    detach_keys: String,
    pid: i64,
}

/// `GET /exec/{id}/json`.
pub async fn inspect(State(ctx): State<Ctx>, UrlPath(id): UrlPath<String>) -> ApiResult<Response> {
    let i = ctx.execs.get(&id)?;
    let cmd = i.config.cmd.clone().unwrap_or_default();
    Ok(Json(ExecInspect {
        id,
        running: i.running,
        exit_code: i.exit_code,
        process_config: serde_json::json!({
            "privileged": false,
            "user": i.config.user.clone().unwrap_or_default(),
            "tty": i.config.tty,
            "entrypoint": cmd.first().cloned().unwrap_or_default(),
            "arguments": cmd.get(1..).unwrap_or_default(),
        }),
        open_stdin: i.config.attach_stdin,
        open_stderr: i.config.attach_stderr,
        open_stdout: i.config.attach_stdout,
        can_remove: false,
        container_id: i.container,
        detach_keys: String::new(),
        pid: i.pid,
    })
    .into_response())
}

/// Query of the resize routes.
#[derive(Debug, Deserialize)]
pub struct ResizeQuery {
    h: Option<String>,
    w: Option<String>,
}

fn size_of(q: &ResizeQuery) -> ApiResult<(u16, u16)> {
    let num = |v: &Option<String>, what: &str| -> ApiResult<u16> {
        v.as_deref()
            .unwrap_or("0")
            .parse::<u16>()
            .map_err(|_| ApiError::bad_request(format!("invalid {what}: {v:?}")))
    };
    Ok((num(&q.h, "height")?, num(&q.w, "width")?))
}

/// Resizes the terminal of `pref` in the pod behind `vsock` (blocking).
fn resize_process(vsock: &str, pref: &ProcessRef, (rows, cols): (u16, u16)) -> ApiResult<()> {
    let mut a =
        AgentClient::open(Path::new(vsock), Duration::from_secs(10)).map_err(agent_error)?;
    a.resize(pref, rows, cols).map_err(|e| match e {
        ClientError::Agent(ae) if ae.kind == ErrorKind::NotFound => {
            ApiError::conflict(format!("the process has no terminal or is gone: {}", ae.message))
        }
        e => agent_error(e),
    })
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ResizeQuery>,
) -> ApiResult<StatusCode> {
    let size = size_of(&q)?;
    ctx.execs.update(&id, |i| i.size = Some(size));
    let i = ctx.execs.get(&id)?;
    if i.exit_code.is_some() {
        return Err(ApiError::conflict(format!("Exec {id} is not running")));
    }
    if !i.running {
        return Ok(StatusCode::OK); // applied when it starts
    }
    let pref = ProcessRef::exec(&i.container, &i.agent_id);
    blocking(move || resize_process(&i.vsock, &pref, size)).await?;
    Ok(StatusCode::OK)
}

/// `POST /containers/{id}/resize?h=&w=`: the container's terminal.
pub async fn resize_container(
    State(ctx): State<Ctx>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<ResizeQuery>,
) -> ApiResult<StatusCode> {
    let size = size_of(&q)?;
    let root = ctx.root.clone();
    blocking(move || {
        let mut r = find(&root, &key)?;
        // `docker run -t` resizes right after its start: a pod starting is waited for.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lifecycle::is_live(&r)
            && r.status != status::RUNNING
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
            r = find(&root, &key)?;
        }
        let vsock = r
            .vsock
            .clone()
            .filter(|_| r.status == status::RUNNING)
            .ok_or_else(|| ApiError::conflict(format!("Container {} is not running", r.id)))?;
        resize_process(&vsock, &ProcessRef::init(&r.id), size)
    })
    .await?;
    Ok(StatusCode::OK)
}
