//! Container events in the state root's event log (`ironpod events`, the Docker API's
//! `/events`): what the record says about the container goes with each.

use std::path::Path;

use ironpod_events::Event;
use ironpod_state::Record;

use crate::spec::RunOptions;

/// An event about the container of `r`: its name, image and labels as attributes.
pub fn container_event(r: &Record, action: &str) -> Event {
    let labels =
        serde_json::from_str::<RunOptions>(&r.options).map(|o| o.labels).unwrap_or_default();
    Event::now("container", action, &r.id)
        .with_all(labels)
        .with("name", r.name.clone())
        .with("image", r.image.clone())
}

/// Logs `e` (a failure to log is only traced: it never fails what happened).
pub fn emit(root: &Path, e: &Event) {
    if let Err(err) = ironpod_events::record(root, e) {
        tracing::debug!(action = %e.action, "event log: {err}");
    }
}

/// Logs `action` about the container of `r`.
pub fn container(root: &Path, r: &Record, action: &str) {
    emit(root, &container_event(r, action));
}
