//! What is done to a container once it exists: start, stop, kill, wait, delete, logs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ironpod_pods::lifecycle;
use ironpod_pods::logs::{self, Entry, Stream};
use ironpod_pods::spec::RunOptions;
use ironpod_pods::PodError;
use ironpod_state::{status, Record};
use serde::Deserialize;

use crate::attach::Exits;
use crate::containers::truthy;
use crate::error::{blocking, ApiError, ApiResult};
use crate::inspect::find;
use crate::Ctx;

fn conflict(message: String) -> ApiError {
    ApiError::conflict(message)
}

fn pod_error(e: PodError) -> ApiError {
    e.into()
}

/// `POST /containers/{id}/start`: 204; 304 when it runs already.
pub async fn start(State(ctx): State<Ctx>, UrlPath(id): UrlPath<String>) -> ApiResult<StatusCode> {
    let root = ctx.root.clone();
    let waiting = ctx.waiting.clone();
    blocking(move || {
        let r = find(&root, &id)?;
        if lifecycle::is_live(&r) {
            return Ok(StatusCode::NOT_MODIFIED);
        }
        // An attach waiting for this start gets all of the output: the program waits for it.
        lifecycle::start(&root, &r, waiting.any(&r.id)).map_err(pod_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `POST /containers/{id}/restart?t=SECS`: stopped (as stop) and started again; 204.
pub async fn restart(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<StatusCode> {
    let timeout = stop_timeout(&q)?;
    let root = ctx.root.clone();
    blocking(move || {
        let r = find(&root, &id)?;
        lifecycle::restart(&root, &r, timeout).map_err(pod_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Query of stop and restart.
#[derive(Debug, Deserialize)]
pub struct StopQuery {
    t: Option<String>,
}

/// The `t` of stop and restart: seconds before SIGKILL (default 10; negative: a day).
fn stop_timeout(q: &StopQuery) -> ApiResult<Duration> {
    let secs = match q.t.as_deref() {
        None | Some("") => 10,
        Some(t) => {
            t.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid t {t:?}")))?
        }
    };
    Ok(Duration::from_secs(if secs < 0 { 86_400 } else { secs as u64 }))
}

/// `POST /containers/{id}/stop?t=SECS`: 204; 304 when it does not run.
pub async fn stop(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<StatusCode> {
    let timeout = stop_timeout(&q)?;
    let root = ctx.root.clone();
    blocking(move || {
        let r = find(&root, &id)?;
        let running = r.status == status::RUNNING;
        // Not running, it is still marked stopped by its user: a pending restart is off.
        lifecycle::stop(&root, &r, timeout).map_err(pod_error)?;
        Ok(if running { StatusCode::NO_CONTENT } else { StatusCode::NOT_MODIFIED })
    })
    .await
}

/// Query of kill.
#[derive(Debug, Deserialize)]
pub struct KillQuery {
    signal: Option<String>,
}

/// `POST /containers/{id}/kill?signal=SIG`: 204; 409 when it does not run.
pub async fn kill(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<KillQuery>,
) -> ApiResult<StatusCode> {
    let sig = match q.signal.as_deref() {
        None | Some("") => libc::SIGKILL,
        Some(s) => lifecycle::parse_signal(s).map_err(ApiError::bad_request)?,
    };
    let root = ctx.root.clone();
    blocking(move || {
        let r = find(&root, &id)?;
        if r.status != status::RUNNING && !lifecycle::is_restarting(&root, &r.id) {
            return Err(conflict(format!("Container {} is not running", r.id)));
        }
        lifecycle::kill(&root, &r, sig).map_err(pod_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Query of delete.
#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    force: Option<String>,
    link: Option<String>,
}

/// `DELETE /containers/{id}?force=&v=`: 204; 409 while it runs without `force`. (`v`
/// removes a container's anonymous volumes; ironpod containers have none.)
pub async fn delete(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    if truthy(&q.link) {
        return Err(ApiError::bad_request("links are not supported by ironpod"));
    }
    let force = truthy(&q.force);
    let root = ctx.root.clone();
    blocking(move || {
        let r = find(&root, &id)?;
        if lifecycle::is_live(&r) {
            if !force {
                return Err(conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    r.id
                )));
            }
            lifecycle::stop(&root, &r, Duration::ZERO).map_err(pod_error)?;
        }
        let store = ironpod_images::ImageStore::open(&root).map_err(ApiError::internal)?;
        ironpod_pods::pod::remove(&root, &store, &r.id).map_err(pod_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Query of `POST /containers/{id}/rename`.
#[derive(Debug, Deserialize)]
pub struct RenameQuery {
    name: Option<String>,
}

/// `POST /containers/{id}/rename?name=`: 204; 409 when the name is taken.
pub async fn rename(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RenameQuery>,
) -> ApiResult<StatusCode> {
    let name = q.name.unwrap_or_default();
    let name = name.strip_prefix('/').unwrap_or(&name).to_string();
    if !ironpod_ids::valid_name(&name) {
        return Err(ApiError::bad_request(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    let root = ctx.root.clone();
    blocking(move || {
        let r = find(&root, &id)?;
        lifecycle::rename(&root, &r, &name).map_err(|e| match e {
            ironpod_pods::PodError::State(ironpod_state::StateError::NameInUse(n)) => conflict(format!(
                "Conflict. The container name \"/{n}\" is already in use. You have to remove (or rename) that container to be able to reuse that name."
            )),
            e => pod_error(e),
        })?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `POST /containers/prune`: removes every container that does not run (filters `label`,
/// `label!`, `until`).
pub async fn prune(
    State(ctx): State<Ctx>,
    Query(q): Query<crate::volumes::FilterQuery>,
) -> ApiResult<axum::Json<bollard_stubs::models::ContainerPruneResponse>> {
    let f = crate::filters::Filters::parse(q.filters.as_deref())?;
    f.only(&["label", "label!", "until"])?;
    let until = f.until()?;
    let root = ctx.root.clone();
    blocking(move || {
        let images = crate::images::ImageIndex::load(&root)?;
        let store = ironpod_images::ImageStore::open(&root).map_err(ApiError::internal)?;
        let (mut deleted, mut space) = (Vec::new(), 0u64);
        for r in crate::containers::records(&root)? {
            if lifecycle::is_live(&r) {
                continue;
            }
            let labels = crate::containers::labels_of(&r, &images);
            let created = ironpod_images::time::parse_rfc3339(&r.created).unwrap_or(0) as f64;
            let kept = f.prune_labels(|k| labels.get(k).map(String::as_str));
            if !kept || until.is_some_and(|u| created >= u) {
                continue;
            }
            let size =
                crate::volumes::disk_usage(&ironpod_pods::paths::container_dir(&root, &r.id));
            match ironpod_pods::pod::remove(&root, &store, &r.id) {
                Ok(()) => {
                    space += size;
                    deleted.push(r.id);
                }
                Err(e) => tracing::warn!(id = %r.id, "prune: {e}"),
            }
        }
        Ok(axum::Json(bollard_stubs::models::ContainerPruneResponse {
            containers_deleted: Some(deleted),
            space_reclaimed: Some(space as i64),
        }))
    })
    .await
}

/// Query of wait.
#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    condition: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Condition {
    NotRunning,
    NextExit,
    Removed,
}

/// One look at the container (blocking): `Some(code)` when the wait is over. A started
/// container's end is learned from its monitor (its exit report, sent before a removal), so
/// one removed on exit still tells its code; one that ended unseen reports Docker's -1.
fn step(
    root: &std::path::Path,
    exits: &Exits,
    first: &Record,
    cond: Condition,
    code: &mut Option<i64>,
) -> Result<Option<i64>, ApiError> {
    let id = &first.id;
    let r = match lifecycle::find(root, id) {
        Ok(r) => r,
        Err(PodError::State(ironpod_state::StateError::NotFound(_))) => {
            // Removed. An attach may still be reading the exit report: a moment for it.
            for _ in 0..20 {
                if let Some(c) = code.or_else(|| exits.get(id)) {
                    return Ok(Some(c));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(Some(-1));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    if r.status == status::EXITED {
        *code = Some(r.exit_code.unwrap_or(-1).into());
        lifecycle::exit_logged(id);
    }
    match cond {
        Condition::NotRunning if !lifecycle::is_live(&r) => {
            return Ok(Some(r.exit_code.unwrap_or(0).into()))
        }
        Condition::NextExit if r.status == status::EXITED && r.finished_at != first.finished_at => {
            return Ok(Some(r.exit_code.unwrap_or(-1).into()))
        }
        _ => {}
    }
    if r.status == status::RUNNING && code.is_none() {
        // Follow the monitor to the end (this blocks until the container ends).
        if let Some(c) =
            crate::attach::connect_started(id).as_mut().and_then(crate::attach::exit_code_from)
        {
            exits.put(id, c);
            *code = Some(c);
            if cond != Condition::Removed {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`: the headers at
/// once (`docker run` waits for them before it starts the container), the body
/// `{"StatusCode": N}` when the condition holds.
pub async fn wait(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    let cond = match q.condition.as_deref() {
        None | Some("") | Some("not-running") => Condition::NotRunning,
        Some("next-exit") => Condition::NextExit,
        Some("removed") => Condition::Removed,
        Some(c) => return Err(ApiError::bad_request(format!("invalid condition: {c:?}"))),
    };
    let root: Arc<PathBuf> = ctx.root.clone();
    let first = {
        let (root, id) = (root.clone(), id.clone());
        blocking(move || find(&root, &id)).await?
    };
    let exits = ctx.exits.clone();
    // One look per step on a blocking thread; a client that leaves drops the stream, and
    // the looking stops.
    let body = futures_util::stream::once(async move {
        let mut code = None;
        let v = loop {
            let (root, exits, first) = (root.clone(), exits.clone(), first.clone());
            let done = tokio::task::spawn_blocking(move || {
                let r = step(&root, &exits, &first, cond, &mut code);
                (r, code)
            })
            .await;
            match done {
                Ok((Ok(Some(c)), _)) => break serde_json::json!({ "StatusCode": c, "Error": null }),
                Ok((Ok(None), c)) => code = c,
                Ok((Err(e), _)) => {
                    break serde_json::json!({ "StatusCode": -1, "Error": { "Message": e.message } })
                }
                Err(e) => {
                    break serde_json::json!({ "StatusCode": -1, "Error": { "Message": e.to_string() } })
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("{v}\n")))
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response())
}

/// Query of logs.
#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    since: Option<String>,
    until: Option<String>,
    timestamps: Option<String>,
    tail: Option<String>,
}

/// A time bound of logs: seconds (`1700000000`, `1700000000.5`) or RFC 3339; 0 is none.
fn time_bound(v: Option<&str>) -> ApiResult<Option<f64>> {
    match v {
        None | Some("") | Some("0") => Ok(None),
        Some(s) => s
            .parse::<f64>()
            .ok()
            .or_else(|| ironpod_images::time::parse_rfc3339(s).map(|t| t as f64))
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("invalid time {s:?}"))),
    }
}

/// What logs shows, and how.
#[derive(Clone, Copy)]
struct LogView {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    tty: bool,
    since: Option<f64>,
    until: Option<f64>,
}

impl LogView {
    /// Entries as the wire wants them: raw for a TTY, else with Docker's 8-byte stream
    /// headers.
    fn frame(&self, entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            let wanted = match e.stream {
                Stream::Stdout => self.stdout,
                Stream::Stderr => self.stderr,
            };
            let t = ironpod_images::time::parse_rfc3339(&e.time).map(|s| s as f64 + frac(&e.time));
            let in_time = t.is_none_or(|t| {
                self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
            });
            if !wanted || !in_time {
                continue;
            }
            let mut payload = Vec::new();
            if self.timestamps {
                payload.extend_from_slice(e.time.as_bytes());
                payload.push(b' ');
            }
            payload.extend(e.output());
            if self.tty {
                out.extend(payload);
            } else {
                out.push(if e.stream == Stream::Stdout { 1 } else { 2 });
                out.extend([0, 0, 0]);
                out.extend((payload.len() as u32).to_be_bytes());
                out.extend(payload);
            }
        }
        out
    }
}

/// The fraction of a second of an RFC 3339 time (`….123Z`).
fn frac(t: &str) -> f64 {
    t.split_once('.')
        .map(|(_, f)| f.trim_end_matches('Z'))
        .and_then(|f| format!("0.{f}").parse().ok())
        .unwrap_or(0.0)
}

/// `GET /containers/{id}/logs`.
pub async fn logs(
    State(ctx): State<Ctx>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let (stdout, stderr) = (truthy(&q.stdout), truthy(&q.stderr));
    if !stdout && !stderr {
        return Err(ApiError::bad_request("Bad parameters: you must choose at least one stream"));
    }
    let tail = match q.tail.as_deref() {
        None | Some("") | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid tail {n:?}")))?,
        ),
    };
    let follow = truthy(&q.follow);
    let root = ctx.root.clone();
    let (since, until) = (time_bound(q.since.as_deref())?, time_bound(q.until.as_deref())?);
    let timestamps = truthy(&q.timestamps);
    let (r, first, follower, view) = blocking(move || {
        let r = find(&root, &id)?;
        let o: RunOptions = serde_json::from_str(&r.options).unwrap_or_default();
        let path = ironpod_pods::paths::log_path(&root, &r.id);
        let (data, follower) = logs::Follower::read_all(&path)
            .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
        let entries = logs::read_entries(&data[..]).map_err(ApiError::internal)?;
        let shown = match tail {
            Some(n) => logs::tail(&entries, n),
            None => &entries[..],
        };
        let view = LogView { stdout, stderr, timestamps, tty: o.tty, since, until };
        Ok((r, view.frame(shown), follower, view))
    })
    .await?;
    let content_type = if view.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let head = [(header::CONTENT_TYPE, content_type)];
    if !follow {
        return Ok((head, first).into_response());
    }
    // Follow: what comes, until the container stops and its log is read to the end.
    let root = ctx.root.clone();
    let state = (Some(first), follower, false);
    let body = futures_util::stream::unfold(state, move |(pending, mut follower, done)| {
        let (root, id) = (root.clone(), r.id.clone());
        async move {
            if let Some(p) = pending.filter(|p| !p.is_empty()) {
                return Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(p)),
                    (None, follower, false),
                ));
            }
            if done {
                return None;
            }
            loop {
                let (root, id) = (root.clone(), id.clone());
                // Liveness first: what the pod wrote before it ended is read after.
                let (out, f, live) = tokio::task::spawn_blocking(move || {
                    let live = lifecycle::find(&root, &id).is_ok_and(|r| lifecycle::is_live(&r));
                    let data = follower.poll().unwrap_or_default();
                    let entries = logs::read_entries(&data[..]).unwrap_or_default();
                    (view.frame(&entries), follower, live)
                })
                .await
                .ok()?;
                follower = f;
                match (out.is_empty(), live) {
                    (false, _) => return Some((Ok(Bytes::from(out)), (None, follower, !live))),
                    (true, false) => return None,
                    (true, true) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    });
    Ok((head, Body::from_stream(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: Stream, text: &str, time: &str) -> Entry {
        Entry { time: time.into(), stream, full: true, bytes: text.as_bytes().to_vec() }
    }

    #[test]
    fn log_frames() {
        let e = [
            entry(Stream::Stdout, "out", "2026-01-01T00:00:00.5Z"),
            entry(Stream::Stderr, "err", "2026-01-01T00:00:01Z"),
        ];
        let v = LogView {
            stdout: true,
            stderr: true,
            timestamps: false,
            tty: false,
            since: None,
            until: None,
        };
        let f = v.frame(&e);
        assert_eq!(&f[..8], &[1, 0, 0, 0, 0, 0, 0, 4]);
        assert_eq!(&f[8..12], b"out\n");
        assert_eq!(f[12], 2);
        let tty = LogView { tty: true, stderr: false, ..v };
        assert_eq!(tty.frame(&e), b"out\n");
        let since = LogView { since: Some(1_767_225_600.9), ..v };
        assert_eq!(since.frame(&e)[0], 2, "the first entry is before `since`");
        let ts = LogView { timestamps: true, tty: true, ..v };
        assert!(ts.frame(&e).starts_with(b"2026-01-01T00:00:00.5Z out"));
    }

    #[test]
    fn time_bounds() {
        assert_eq!(time_bound(None).unwrap(), None);
        assert_eq!(time_bound(Some("0")).unwrap(), None);
        assert_eq!(time_bound(Some("10.5")).unwrap(), Some(10.5));
        assert_eq!(time_bound(Some("1970-01-01T00:01:00Z")).unwrap(), Some(60.0));
        assert!(time_bound(Some("soon")).is_err());
        assert!((frac("2026-01-01T00:00:00.25Z") - 0.25).abs() < 1e-9);
    }
}
