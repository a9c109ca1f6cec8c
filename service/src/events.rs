//! `GET /events?since=&until=&filters=`: the state root's event log as Docker streams it
//! (one JSON object per line): what happened since `since`, then what happens, until
//! `until` or the client leaves.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use ironpod_events::{Event, Filter, Follower};
use serde::Deserialize;
use serde_json::json;

use crate::error::{blocking, ApiError, ApiResult};
use crate::filters::{time_before, Filters};
use crate::Ctx;

/// How often the log is looked at for new events.
const POLL: Duration = Duration::from_millis(200);

/// Docker's message for one event.
pub fn message(e: &Event) -> serde_json::Value {
    let secs = e.time_nano / 1_000_000_000;
    let mut v = json!({
        "Type": e.kind,
        "Action": e.action,
        "Actor": {"ID": e.id, "Attributes": e.attributes},
        "scope": "local",
        "time": secs,
        "timeNano": e.time_nano,
    });
    if e.kind == "container" || e.kind == "image" {
        v["status"] = json!(e.action);
        v["id"] = json!(e.id);
    }
    if e.kind == "container" {
        v["from"] = json!(e.attributes.get("image").cloned().unwrap_or_default());
    }
    v
}

/// Query of `GET /events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

fn nanos(v: Option<&str>, now: f64) -> ApiResult<Option<i64>> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => Ok(Some((time_before(v, now)? * 1e9) as i64)),
    }
}

fn line(e: &Event) -> Bytes {
    Bytes::from(format!("{}\n", message(e)))
}

/// Hands every event logged from now on to `each`, in order, while the service runs (the
/// log read on a blocking thread every [`POLL`]): what the service's own followers use.
pub(crate) async fn follow_log(mut follower: Follower, mut each: impl FnMut(Event) + Send) {
    loop {
        tokio::time::sleep(POLL).await;
        let Ok((f, events)) = tokio::task::spawn_blocking(move || {
            let events = follower.poll();
            (follower, events)
        })
        .await
        else {
            return;
        };
        follower = f;
        events.into_iter().for_each(&mut each);
    }
}

/// `GET /events`.
pub async fn events(State(ctx): State<Ctx>, Query(q): Query<EventsQuery>) -> ApiResult<Response> {
    let f = Filters::parse(q.filters.as_deref())?;
    let filter = Filter::new(f.into_map()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let now_nanos = ironpod_events::now_nanos();
    let now = now_nanos as f64 / 1e9;
    let (since, until) = (nanos(q.since.as_deref(), now)?, nanos(q.until.as_deref(), now)?);
    let root = ctx.root.clone();
    // Following starts before the past is read; the cut keeps each event once.
    let (follower, history) = blocking(move || {
        let follower = Follower::new(&root);
        let history = match since {
            Some(s) => ironpod_events::read(&root, Some(s), until.map(|u| u.min(now_nanos)))
                .map_err(ApiError::internal)?,
            None => Vec::new(),
        };
        Ok((follower, history))
    })
    .await?;
    let past: Vec<Bytes> =
        history.iter().filter(|e| e.time_nano < now_nanos && filter.matches(e)).map(line).collect();
    let follow = until.is_none_or(|u| u > now_nanos);
    let past = futures_util::stream::iter(past.into_iter().map(Ok::<_, std::convert::Infallible>));
    let live = futures_util::stream::unfold(Some((follower, filter)), move |st| async move {
        let (mut follower, filter) = st?;
        if !follow {
            return None;
        }
        loop {
            if until.is_some_and(|u| ironpod_events::now_nanos() > u) {
                return None;
            }
            let (f, got) = tokio::task::spawn_blocking(move || {
                let got = follower.poll();
                (follower, got)
            })
            .await
            .ok()?;
            follower = f;
            let batch: Vec<u8> = got
                .iter()
                .filter(|e| e.time_nano >= now_nanos || since.is_none())
                .filter(|e| filter.matches(e) && until.is_none_or(|u| e.time_nano <= u))
                .flat_map(|e| line(e).to_vec())
                .collect();
            if !batch.is_empty() {
                return Some((Ok(Bytes::from(batch)), Some((follower, filter))));
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::StreamExt::chain(past, live)))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_shape() {
        let mut e =
            Event::now("container", "die", "abc").with("image", "demo").with("exitCode", "3");
        e.time_nano = 1_700_000_000_123_456_789;
        let v = message(&e);
        assert_eq!(v["status"], "die");
        assert_eq!(v["from"], "demo");
        assert_eq!(v["Actor"]["Attributes"]["exitCode"], "3");
        assert_eq!(v["time"], 1_700_000_000i64);
        assert_eq!(v["timeNano"], 1_700_000_000_123_456_789i64);
        let n = message(&Event::now("network", "create", "n1"));
        assert!(n.get("status").is_none() && n["Type"] == "network");
    }
}
