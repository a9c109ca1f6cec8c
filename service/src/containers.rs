//! Container routes: `GET /containers/json` (Docker's list, with `all`, `limit`, `size` and
//! filters).

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::Json;
use bollard_stubs::models::{
    ContainerSummary, ContainerSummaryHostConfig, ContainerSummaryStateEnum, PortSummary,
    PortSummaryTypeEnum,
};
use ironpod_images::time::parse_rfc3339;
use ironpod_pods::spec::RunOptions;
use ironpod_state::{describe, status, Record};
use serde::Deserialize;

use crate::error::{blocking, ApiError, ApiResult};
use crate::filters::Filters;
use crate::images::ImageIndex;
use crate::Ctx;

/// Every container, its state brought up to date (a pod whose monitor died is exited).
pub fn records(root: &Path) -> ApiResult<Vec<Record>> {
    let state = ironpod_state::State::open(root).map_err(ApiError::internal)?;
    let mut out = Vec::new();
    for r in state.list().map_err(ApiError::internal)? {
        out.push(ironpod_pods::pod::reconcile(&state, r).map_err(ApiError::internal)?);
    }
    Ok(out)
}

/// Docker's boolean query values: `1`, `true`, `True`…; anything else is false.
pub fn truthy(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// Query of `GET /containers/json`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    all: Option<String>,
    limit: Option<String>,
    size: Option<String>,
    filters: Option<String>,
}

const FILTERS: &[&str] = &[
    "id",
    "name",
    "status",
    "exited",
    "label",
    "ancestor",
    "before",
    "since",
    "network",
    "publish",
    "expose",
    "volume",
    "health",
    "isolation",
    "is-task",
];

const STATUSES: &[&str] =
    &["created", "restarting", "running", "removing", "paused", "exited", "dead"];

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn state_of(r: &Record) -> ContainerSummaryStateEnum {
    match r.status.as_str() {
        status::RUNNING if ironpod_pods::lifecycle::is_paused(&r.id) => {
            ContainerSummaryStateEnum::PAUSED
        }
        status::RUNNING => ContainerSummaryStateEnum::RUNNING,
        status::EXITED | status::CREATED if r.restart.restarting => {
            ContainerSummaryStateEnum::RESTARTING
        }
        status::EXITED => ContainerSummaryStateEnum::EXITED,
        _ => ContainerSummaryStateEnum::CREATED,
    }
}

/// A container's labels: its image's, overlaid with its own.
pub fn labels_of(r: &Record, images: &ImageIndex) -> HashMap<String, String> {
    let mut l = images.by_manifest(&r.image_digest).map(|i| i.labels.clone()).unwrap_or_default();
    l.extend(options_of(r).labels);
    l
}

fn options_of(r: &Record) -> RunOptions {
    serde_json::from_str(&r.options).unwrap_or_default()
}

fn ports_of(o: &RunOptions) -> Vec<PortSummary> {
    o.publish
        .iter()
        .map(|p| PortSummary {
            ip: Some(p.host_ip.to_string()),
            private_port: p.pod_port,
            public_port: Some(p.host_port),
            typ: Some(match p.protocol {
                ironpod_net::Protocol::Tcp => PortSummaryTypeEnum::TCP,
                ironpod_net::Protocol::Udp => PortSummaryTypeEnum::UDP,
            }),
        })
        .collect()
}

/// The container as `GET /containers/json` shows it.
fn summary(root: &Path, r: &Record, images: &ImageIndex, size: bool, now: u64) -> ContainerSummary {
    let o = options_of(r);
    let disk = size.then(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(ironpod_pods::paths::writable_disk(root, &r.id))
            .map_or(0, |m| (m.blocks() * 512) as i64)
    });
    let image = images.by_manifest(&r.image_digest);
    ContainerSummary {
        id: Some(r.id.clone()),
        names: Some(vec![format!("/{}", r.name)]),
        image: Some(r.image.clone()),
        image_id: Some(image.map(|i| i.id.clone()).unwrap_or_else(|| r.image_digest.clone())),
        command: Some(describe::command_line(r)),
        created: Some(parse_rfc3339(&r.created).unwrap_or(0) as i64),
        ports: Some(ports_of(&o)),
        size_rw: disk,
        size_root_fs: size.then(|| image.map_or(0, |i| i.size as i64)),
        labels: Some(labels_of(r, images)),
        state: Some(state_of(r)),
        status: Some({
            let text = describe::status_text(r, now);
            if r.status == status::RUNNING && ironpod_pods::lifecycle::is_paused(&r.id) {
                format!("{text} (Paused)")
            } else {
                text
            }
        }),
        host_config: Some(ContainerSummaryHostConfig {
            network_mode: Some(o.network.clone().unwrap_or_else(|| "default".into())),
            annotations: None,
        }),
        ..Default::default()
    }
}

/// Whether `r` passes every filter.
/// `order`: every container's (id, name, position), newest first.
fn passes(
    f: &Filters,
    r: &Record,
    images: &ImageIndex,
    order: &[(&str, &str, usize)],
) -> ApiResult<bool> {
    for s in f.get("status") {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::bad_request(format!("invalid filter 'status={s}'")));
        }
    }
    let mut exited = Vec::new();
    for e in f.get("exited") {
        exited.push(
            e.parse::<i32>()
                .map_err(|_| ApiError::bad_request(format!("invalid filter 'exited={e}'")))?,
        );
    }
    let mut name_res = Vec::new();
    for n in f.get("name") {
        name_res.push(
            regex::Regex::new(n)
                .map_err(|e| ApiError::bad_request(format!("invalid filter 'name={n}': {e}")))?,
        );
    }
    let labels = labels_of(r, images);
    let pos = order.iter().find(|(id, _, _)| *id == r.id).map_or(0, |(_, _, p)| *p);
    let relative = |key: &str, before: bool| -> ApiResult<bool> {
        for v in f.get(key) {
            let other = order
                .iter()
                .find(|(id, name, _)| *name == v.as_str() || *id == v.as_str())
                .or_else(|| {
                    order.iter().find(|(id, _, _)| !v.is_empty() && id.starts_with(v.as_str()))
                })
                .map(|(_, _, p)| *p)
                .ok_or_else(|| ApiError::not_found(format!("No such container: {v}")))?;
            // `order` is newest first: "before X" means created earlier, i.e. later in it.
            if (before && pos <= other) || (!before && pos >= other) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let name_ok =
        name_res.is_empty() || name_res.iter().any(|re| re.is_match(&format!("/{}", r.name)));
    let unsupported = ["network", "publish", "expose", "volume", "health", "isolation", "is-task"];
    if let Some(k) = unsupported.iter().find(|k| !f.get(k).is_empty()) {
        return Err(ApiError::bad_request(format!("the '{k}' filter is not supported yet")));
    }
    Ok(f.any("id", |id| r.id.starts_with(id))
        && name_ok
        && f.any("status", |s| s == r.status)
        && (exited.is_empty()
            || (r.status == status::EXITED && exited.contains(&r.exit_code.unwrap_or(-1))))
        && f.labels_match("label", |k| labels.get(k).map(String::as_str))
        && f.any("ancestor", |a| images.is_ancestor(a, r))
        && relative("before", true)?
        && relative("since", false)?)
}

/// `GET /containers/json`.
pub async fn list(
    State(ctx): State<Ctx>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ContainerSummary>>> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(FILTERS)?;
    let limit = match q.limit.as_deref() {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
    }
    .filter(|l| *l > 0)
    .map(|l| l as usize);
    let (all, size) = (truthy(&q.all) || limit.is_some(), truthy(&q.size));
    let root = ctx.root.clone();
    blocking(move || {
        let mut recs = records(&root)?;
        // Newest first, as Docker lists them.
        recs.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        let images = ImageIndex::load(&root)?;
        let order: Vec<(&str, &str, usize)> =
            recs.iter().enumerate().map(|(i, r)| (r.id.as_str(), r.name.as_str(), i)).collect();
        let now = now();
        let mut out = Vec::new();
        for r in &recs {
            let shown = all || r.status == status::RUNNING || !f.get("status").is_empty();
            if shown && passes(&f, r, &images, &order)? {
                out.push(summary(&root, r, &images, size, now));
            }
        }
        if let Some(l) = limit {
            out.truncate(l);
        }
        Ok(Json(out))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthy_values() {
        for t in ["1", "true", "True", "yes"] {
            assert!(truthy(&Some(t.into())), "{t}");
        }
        for f in ["0", "false", "", "no"] {
            assert!(!truthy(&Some(f.into())), "{f}");
        }
        assert!(!truthy(&None));
    }
}
