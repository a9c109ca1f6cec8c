//! `ironpod system service`: the Docker Engine API (version 1.41, Docker 20.10's) on a unix
//! socket, so the real `docker` CLI, docker-compose and docker-py drive ironpod.
//!
//! Owns: the socket, HTTP, the API's routes and its JSON shapes (Docker's model types from
//! `bollard-stubs`). Everything a container or an image *is* stays in the pods library below
//! (`ironpod-pods`, `ironpod-state`, `ironpod-images`): the service shares the CLI's state
//! root, so what one front end makes the other sees.

mod archive;
mod attach;
mod body;
mod build;
mod container_info;
mod container_ops;
mod containers;
mod create;
pub mod error;
mod events;
mod exec;
mod filters;
mod image_files;
mod image_ops;
mod images;
mod inspect;
pub mod listener;
pub mod metrics;
mod networks;
mod restarts;
mod server;
mod system;
mod transfer;
mod volumes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{any, get, post};
use axum::Router;

pub use error::{ApiError, ServiceError};
pub use server::API_VERSION;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// State root (images, pods), the CLI's `--root`.
    pub root: PathBuf,
    /// The socket's address (`unix:///PATH`); ignored when systemd passes a socket.
    pub socket: String,
    /// Group that may use the socket (default: root only).
    pub group: Option<String>,
    /// Stop after this long without an open connection (`None`: run until stopped).
    pub idle: Option<Duration>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (off when `None`).
    pub metrics: Option<std::net::SocketAddr>,
    /// The Kubernetes controllers' settings.
    pub controllers: ironpod_controllers::Options,
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    root: Arc<PathBuf>,
    /// Attaches waiting for their container's start.
    waiting: attach::Waiting,
    /// Exit codes learned from monitors.
    exits: attach::Exits,
    /// Exec instances.
    execs: exec::Execs,
    metrics: Arc<metrics::Metrics>,
}

/// The routes (unversioned; the server takes `/v1.NN` off the path first).
fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(events::events))
        .route("/containers/json", get(containers::list))
        .route("/containers/create", post(create::create))
        .route("/containers/{id}/json", get(inspect::container))
        .route("/containers/{id}/start", post(container_ops::start))
        .route("/containers/{id}/attach", post(attach::attach))
        .route("/containers/{id}/stop", post(container_ops::stop))
        .route("/containers/{id}/restart", post(container_ops::restart))
        .route("/containers/{id}/kill", post(container_ops::kill))
        .route("/containers/{id}/wait", post(container_ops::wait))
        .route("/containers/{id}/logs", get(container_ops::logs))
        .route("/containers/{id}/rename", post(container_ops::rename))
        .route("/containers/{id}/top", get(container_info::top))
        .route("/containers/{id}/stats", get(container_info::stats))
        .route("/containers/{id}/pause", post(container_info::pause))
        .route("/containers/{id}/unpause", post(container_info::unpause))
        .route("/commit", post(container_info::commit))
        .route("/build", post(build::build))
        .route("/build/prune", post(build::prune))
        .route("/containers/{id}/resize", post(exec::resize_container))
        .route(
            "/containers/{id}/archive",
            get(archive::get_archive).head(archive::head).put(archive::put_archive),
        )
        .route("/containers/{id}/changes", get(archive::changes))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/containers/prune", post(container_ops::prune))
        .route("/containers/{id}", axum::routing::delete(container_ops::delete))
        .route("/images/json", get(images::list))
        .route("/images/create", post(transfer::create))
        .route("/images/load", post(image_files::load))
        .route("/images/get", get(image_files::save_many))
        .route("/images/prune", post(image_ops::prune))
        .route("/auth", post(transfer::auth))
        .route("/images/{*rest}", any(image_ops::route))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route("/networks/{id}", get(networks::inspect).delete(networks::delete))
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route("/volumes/{name}", get(volumes::inspect).delete(volumes::delete))
        .route_layer(axum::middleware::from_fn_with_state(ctx.metrics.clone(), metrics::count))
        .fallback(not_found)
        .with_state(ctx)
}

async fn not_found(
    axum::extract::State(ctx): axum::extract::State<Ctx>,
    method: axum::http::Method,
) -> ApiError {
    ctx.metrics.count_request(method.as_str(), "unmatched", 404);
    ApiError::not_found("page not found")
}

/// Runs the service until SIGINT/SIGTERM (or `idle`); returns once it stopped.
pub fn run(opts: Options) -> Result<(), ServiceError> {
    let (listener, ours) = match listener::from_systemd() {
        Some(l) => (l, false),
        None => {
            (listener::bind(&listener::parse_address(&opts.socket)?, opts.group.as_deref())?, true)
        }
    };
    listener.set_nonblocking(true).map_err(|e| ServiceError::io("socket", e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ironpod-service")
        .build()
        .map_err(|e| ServiceError::io("starting the runtime", e))?;
    let ctx = Ctx {
        root: Arc::new(opts.root.clone()),
        waiting: attach::Waiting::default(),
        exits: attach::Exits::default(),
        execs: exec::Execs::default(),
        metrics: Arc::new(metrics::Metrics::default()),
    };
    let metrics_listener = match opts.metrics {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| ServiceError::io(format!("metrics listener on {addr}"), e))?,
        ),
        None => None,
    };
    image_files::clean_tmp(&opts.root);
    let socket_path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(PathBuf::from));
    let shown = socket_path.clone();
    rt.block_on(async move {
        let l = tokio::net::UnixListener::from_std(listener).map_err(|e| ServiceError::io("socket", e))?;
        tracing::info!(socket = ?shown, activated = !ours, root = %opts.root.display(), "serving the Docker API {}", API_VERSION);
        restarts::spawn(ctx.root.clone());
        // The Kubernetes controllers (`ironpod kube`): on a thread of their own.
        ironpod_controllers::spawn(&ctx.root, opts.controllers.clone());
        ctx.metrics.clone().follow(ctx.root.clone());
        if let Some(l) = metrics_listener {
            let l = tokio::net::TcpListener::from_std(l).map_err(|e| ServiceError::io("metrics listener", e))?;
            tracing::info!(address = ?l.local_addr().ok(), "serving metrics at /metrics");
            let app = metrics::router(ctx.root.clone(), ctx.metrics.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::warn!("metrics listener: {e}");
                }
            });
        }
        server::serve(l, router(ctx), opts.idle).await;
        Ok::<_, ServiceError>(())
    })?;
    // A socket of our own making goes with us (one systemd passed stays systemd's).
    if let Some(p) = socket_path.filter(|_| ours) {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
