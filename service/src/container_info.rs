//! What a running container is doing, and what it becomes: `GET /containers/{id}/top`,
//! `GET /containers/{id}/stats` (one sample or a stream), `POST /containers/{id}/pause` and
//! `/unpause` (the guest's freezer), and `POST /commit` (its changes as a new image).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ironpod_pods::lifecycle;
use ironpod_protocol::ContainerStats;
use ironpod_state::Record;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::containers::truthy;
use crate::error::{blocking, ApiError, ApiResult};
use crate::inspect::find;
use crate::Ctx;

/// Query of top.
#[derive(Debug, Deserialize)]
pub struct TopQuery {
    ps_args: Option<String>,
}

fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `GET /containers/{id}/top`: the processes of the container, as `ps -ef` titles them.
pub async fn top(
    State(ctx): State<Ctx>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<TopQuery>,
) -> ApiResult<Json<Value>> {
    if q.ps_args.as_deref().is_some_and(|a| !a.is_empty() && a != "-ef") {
        return Err(ApiError::bad_request(
            "ps options are not supported: the processes are listed by the pod's agent (ps -ef columns)",
        ));
    }
    let root = ctx.root.clone();
    blocking(move || {
        let r = find(&root, &key)?;
        let procs = lifecycle::agent(&r)?.processes(&r.id).map_err(ApiError::internal)?;
        let rows: Vec<Vec<String>> = procs
            .iter()
            .map(|p| {
                vec![
                    p.uid.to_string(),
                    p.pid.to_string(),
                    p.ppid.to_string(),
                    "0".into(),
                    hms(p.start_ms),
                    "?".into(),
                    hms(p.cpu_ms),
                    p.cmd.clone(),
                ]
            })
            .collect();
        Ok(Json(json!({
            "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "Processes": rows,
        })))
    })
    .await
}

/// Query of stats.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    stream: Option<String>,
    #[serde(rename = "one-shot")]
    one_shot: Option<String>,
}

/// The memory a pod's guest has when no limit is set (what the VM was given).
fn vm_memory(r: &Record) -> u64 {
    let o: ironpod_pods::spec::RunOptions = serde_json::from_str(&r.options).unwrap_or_default();
    o.memory.unwrap_or(ironpod_pods::launch::DEFAULT_MEMORY_MIB << 20)
}

fn cpu_stats(s: &ContainerStats) -> Value {
    // Docker's CPU % is usage delta / system delta × CPUs: the system's time here is the
    // guest's wall clock times its CPUs.
    let cpus = u64::from(s.online_cpus.max(1));
    json!({
        "cpu_usage": {"total_usage": s.cpu_usage_usec * 1000, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "system_cpu_usage": s.sampled_usec * 1000 * cpus,
        "online_cpus": cpus,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    })
}

/// Docker's stats document from two samples.
fn document(r: &Record, pre: Option<&ContainerStats>, s: &ContainerStats) -> Value {
    let stamp = |usec: u64| {
        let secs = usec / 1_000_000;
        let t = ironpod_images::time::format_rfc3339(secs);
        format!("{}.{:06}Z", t.trim_end_matches('Z'), usec % 1_000_000)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let host = ironpod_pods::cgroup::PodCgroup::usage_of(&r.id);
    json!({
        "read": stamp(now),
        "preread": pre.map(|_| stamp(now.saturating_sub(s.sampled_usec.saturating_sub(pre.map_or(0, |p| p.sampled_usec))))).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "id": r.id,
        "name": format!("/{}", r.name),
        "pids_stats": {"current": s.pids, "limit": s.pids_limit.unwrap_or(0)},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 0, "minor": 0, "op": "read", "value": s.io_read_bytes},
            {"major": 0, "minor": 0, "op": "write", "value": s.io_write_bytes},
        ]},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_stats(s),
        "precpu_stats": pre.map(cpu_stats).unwrap_or_else(|| json!({"cpu_usage": {"total_usage": 0}, "throttling_data": {}})),
        "memory_stats": {
            "usage": s.memory_bytes,
            "limit": s.memory_limit.unwrap_or_else(|| vm_memory(r)),
            "stats": {},
            // The pod's host side: its VMM and file server, in its host cgroup.
            "ironpod_host_usage": host.as_ref().map(|u| u.memory),
            "ironpod_host_limit": host.as_ref().map(|u| u.memory_limit),
        },
    })
}

fn sample(r: &Record) -> ApiResult<ContainerStats> {
    lifecycle::agent(r)?.stats(&r.id).map_err(ApiError::internal)
}

/// `GET /containers/{id}/stats?stream=`: one document (two samples half a second apart),
/// or one a second until the client leaves or the container stops.
pub async fn stats(
    State(ctx): State<Ctx>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Response> {
    let stream = q.stream.as_deref().is_none_or(|v| truthy(&Some(v.to_string())));
    let one_shot = truthy(&q.one_shot);
    let root = ctx.root.clone();
    let r = blocking(move || find(&root, &key)).await?;
    if r.status != ironpod_state::status::RUNNING {
        return Err(ApiError::conflict(format!("Container {} is not running", r.id)));
    }
    if !stream {
        let doc = blocking(move || {
            let first = if one_shot { None } else { Some(sample(&r)?) };
            if first.is_some() {
                std::thread::sleep(Duration::from_millis(500));
            }
            let s = sample(&r)?;
            Ok(document(&r, first.as_ref(), &s))
        })
        .await?;
        return Ok(Json(doc).into_response());
    }
    let body = futures_util::stream::unfold(
        (r, None::<ContainerStats>, true),
        |(r, pre, first)| async move {
            if !first {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let r2 = r.clone();
            let s = tokio::task::spawn_blocking(move || sample(&r2)).await.ok()?.ok()?;
            let line = Bytes::from(format!("{}\n", document(&r, pre.as_ref(), &s)));
            Some((Ok::<_, std::convert::Infallible>(line), (r, Some(s), false)))
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
}

/// `POST /containers/{id}/pause`.
pub async fn pause(State(ctx): State<Ctx>, UrlPath(key): UrlPath<String>) -> ApiResult<StatusCode> {
    freeze(ctx.root.clone(), key, true).await
}

/// `POST /containers/{id}/unpause`.
pub async fn unpause(
    State(ctx): State<Ctx>,
    UrlPath(key): UrlPath<String>,
) -> ApiResult<StatusCode> {
    freeze(ctx.root.clone(), key, false).await
}

async fn freeze(
    root: std::sync::Arc<std::path::PathBuf>,
    key: String,
    on: bool,
) -> ApiResult<StatusCode> {
    blocking(move || {
        let r = find(&root, &key)?;
        if r.status != ironpod_state::status::RUNNING {
            return Err(ApiError::conflict(format!("Container {} is not running", r.id)));
        }
        if lifecycle::is_paused(&r.id) == on {
            let what = if on { "already paused" } else { "not paused" };
            return Err(ApiError::conflict(format!("Container {} is {what}", r.id)));
        }
        lifecycle::pause(&root, &r, on)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Config keys a commit's body may set on the new image.
const COMMIT_KEYS: [&str; 9] = [
    "Cmd",
    "Entrypoint",
    "Env",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
];

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`: 201 `{"Id"}`.
pub async fn commit(
    State(ctx): State<Ctx>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let params: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| {
        params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
    };
    let container =
        get("container").ok_or_else(|| ApiError::bad_request("container is required"))?;
    let repo = get("repo").ok_or_else(|| {
        ApiError::bad_request("a repository name is required: ironpod keeps no unnamed images")
    })?;
    let image = match get("tag") {
        Some(t) => format!("{repo}:{t}"),
        None => repo,
    };
    let overrides: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    let changes: Vec<String> =
        params.iter().filter(|(k, _)| k == "changes").map(|(_, v)| v.clone()).collect();
    let (comment, author) = (get("comment"), get("author"));
    // Docker pauses the container while it commits unless told not to.
    let hold = get("pause").is_none_or(|p| truthy(&Some(p)));
    let root = ctx.root.clone();
    blocking(move || {
        let r = find(&root, &container)?;
        let mut config = ironpod_pods::commit::config_of(&r);
        for k in COMMIT_KEYS {
            match overrides.get(k) {
                None | Some(Value::Null) => {}
                Some(v) if v.as_array().is_some_and(|a| a.is_empty()) || v.as_str() == Some("") => {
                }
                Some(v) => {
                    config.insert(k.to_string(), v.clone());
                }
            }
        }
        for c in &changes {
            ironpod_images::change::apply(&mut config, c)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        let store = ironpod_images::ImageStore::open(&root).map_err(ApiError::internal)?;
        let info = ironpod_images::CommitInfo {
            comment,
            author,
            created_by: format!("docker commit {}", &r.id[..12.min(r.id.len())]),
            config,
        };
        let frozen = hold
            && r.status == ironpod_state::status::RUNNING
            && !lifecycle::is_paused(&r.id)
            && lifecycle::pause(&root, &r, true).is_ok();
        let made = ironpod_pods::commit::commit(&root, &store, &r, &image, &info);
        if frozen {
            let _ = lifecycle::pause(&root, &r, false);
        }
        let s = made.map_err(|e| match e {
            ironpod_pods::PodError::Image(i) => crate::image_ops::image_error(&image, i),
            e => ApiError::from(e),
        })?;
        Ok((StatusCode::CREATED, Json(json!({"Id": s.id}))).into_response())
    })
    .await
}
