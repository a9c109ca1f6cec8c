//! Deployments: one ReplicaSet per pod template (named and labelled with the template's
//! hash, numbered by the `deployment.kubernetes.io/revision` annotation), rolled from the
//! old ones to the new one as the strategy says (RollingUpdate within maxSurge and
//! maxUnavailable, or Recreate), with old ReplicaSets kept (scaled to 0) up to
//! `revisionHistoryLimit` for `kube rollout undo`.

use sha2::{Digest, Sha256};

use ironpod_kube::meta::{ObjectMeta, OwnerReference};
use ironpod_kube::object::{Body, Kind, Object};
use ironpod_kube::pod::Condition;
use ironpod_kube::quantity::IntOrString;
use ironpod_kube::workload::{
    DeploymentSpec, DeploymentStatus, PodTemplateSpec, ReplicaSetSpec, ReplicaStatus, StrategyType,
};
use ironpod_kube::{KubeStore, Stored};

use crate::ControllerError;

/// The annotation that numbers a Deployment's ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label that ties a ReplicaSet and its pods to one template.
pub const HASH_LABEL: &str = "pod-template-hash";

/// A template's hash: ten characters of Kubernetes' name alphabet.
pub fn template_hash(t: &PodTemplateSpec) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut t = t.clone();
    t.metadata.labels.remove(HASH_LABEL);
    let digest = Sha256::digest(serde_json::to_vec(&t).unwrap_or_default());
    digest.iter().take(10).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

/// A ReplicaSet's revision.
pub fn revision(rs: &Stored) -> i64 {
    rs.object.metadata.annotations.get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn rs_spec(rs: &Stored) -> Option<&ReplicaSetSpec> {
    match &rs.object.body {
        Body::ReplicaSet(s) => Some(s),
        _ => None,
    }
}

fn rs_replicas(rs: &Stored) -> i64 {
    rs_spec(rs).and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &Stored) -> ReplicaStatus {
    rs.status_as::<ReplicaStatus>()
}

/// One pass over the Deployments.
pub fn sync(store: &mut KubeStore) -> Result<(), ControllerError> {
    for d in store.list(Kind::Deployment, None)? {
        let Body::Deployment(spec) = &d.object.body else { continue };
        crate::each("deployment", d.name(), || sync_one(store, &d, spec));
    }
    Ok(())
}

fn owner_ref(d: &Stored) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.name().into(),
        uid: d.uid().into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Sets a ReplicaSet's replicas (and an event on the Deployment).
fn scale(store: &mut KubeStore, d: &Stored, rs: &Stored, n: i64) -> Result<(), ControllerError> {
    let Some(spec) = rs_spec(rs) else { return Ok(()) };
    let before = spec.replicas.unwrap_or(1);
    if before == n {
        return Ok(());
    }
    let mut o = rs.object.clone();
    if let Body::ReplicaSet(s) = &mut o.body {
        s.replicas = Some(n);
    }
    store.update(o, rs)?;
    let dir = if n > before { "up" } else { "down" };
    let msg = format!("Scaled {dir} replica set {} to {n} from {before}", rs.name());
    let _ =
        store.record_event(d.uid(), "Normal", "ScalingReplicaSet", &msg, "deployment-controller");
    Ok(())
}

fn sync_one(
    store: &mut KubeStore,
    d: &Stored,
    spec: &DeploymentSpec,
) -> Result<(), ControllerError> {
    let ns = d.namespace().to_string();
    let owned: Vec<Stored> = store
        .list(Kind::ReplicaSet, Some(&ns))?
        .into_iter()
        .filter(|r| r.object.metadata.controller_uid() == Some(d.uid()))
        .collect();
    if d.deleting() {
        for r in owned.iter().filter(|r| !r.deleting()) {
            store.delete(Kind::ReplicaSet, &ns, r.name())?;
        }
        if owned.is_empty() {
            store.finalize(Kind::Deployment, &ns, d.name(), d.uid())?;
        }
        return Ok(());
    }
    let hash = template_hash(&spec.template);
    if owned.iter().any(|r| r.deleting() && r.object.metadata.labels.get(HASH_LABEL) == Some(&hash))
    {
        // This template's ReplicaSet is still going (history cleaned, say): its name is
        // taken until its pods are gone; next pass.
        return Ok(());
    }
    // Pods of the old ReplicaSets, those being deleted too (Recreate waits for them).
    let old_pods = |store: &KubeStore, olds: &[Stored]| -> Result<usize, ControllerError> {
        let pods = store.list(Kind::Pod, Some(&ns))?;
        Ok(pods
            .iter()
            .filter(|p| olds.iter().any(|o| p.object.metadata.controller_uid() == Some(o.uid())))
            .filter(|p| !crate::replicas::ended(p))
            .count())
    };
    let mut rss: Vec<Stored> = owned.into_iter().filter(|r| !r.deleting()).collect();
    rss.sort_by_key(revision);
    let max_rev = rss.iter().map(revision).max().unwrap_or(0);
    let paused = spec.paused == Some(true);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let new = rss.iter().find(|r| r.object.metadata.labels.get(HASH_LABEL) == Some(&hash)).cloned();
    let new = match new {
        Some(n) if revision(&n) < max_rev && !paused => {
            // A template of an old revision again (a rollback): it becomes the newest.
            let mut o = n.object.clone();
            o.metadata.annotations.insert(REVISION.into(), (max_rev + 1).to_string());
            Some(store.update(o, &n)?)
        }
        Some(n) => Some(n),
        None if paused => None,
        None => Some(create_rs(store, d, spec, &hash, max_rev + 1)?),
    };
    let olds: Vec<Stored> =
        rss.iter().filter(|r| Some(r.uid()) != new.as_ref().map(Stored::uid)).cloned().collect();
    match (&new, paused) {
        (Some(new), false) => {
            match spec.strategy.as_ref().and_then(|s| s.kind) {
                Some(StrategyType::Recreate) => {
                    let running = old_pods(store, &olds)?;
                    recreate(store, d, new, &olds, replicas, running)?
                }
                _ => rolling(store, d, spec, new, &olds, replicas)?,
            }
            clean_history(store, spec, &olds)?;
        }
        // Paused: no rollout, but scaling goes on (the ReplicaSet that has pods).
        (_, true) => {
            let active: Vec<&Stored> = rss.iter().filter(|r| rs_replicas(r) > 0).collect();
            if let [only] = active.as_slice() {
                scale(store, d, only, replicas)?;
            }
        }
        (None, false) => {}
    }
    write_status(store, d, spec, new.as_ref(), replicas)
}

fn create_rs(
    store: &mut KubeStore,
    d: &Stored,
    spec: &DeploymentSpec,
    hash: &str,
    rev: i64,
) -> Result<Stored, ControllerError> {
    let mut template = spec.template.clone();
    template.metadata.labels.insert(HASH_LABEL.into(), hash.into());
    let mut selector = spec.selector.clone();
    selector.match_labels.insert(HASH_LABEL.into(), hash.into());
    let o = Object {
        metadata: ObjectMeta {
            name: format!("{}-{hash}", d.name()),
            namespace: Some(d.namespace().to_string()),
            labels: template.metadata.labels.clone(),
            annotations: [(REVISION.to_string(), rev.to_string())].into(),
            owner_references: vec![owner_ref(d)],
            ..Default::default()
        },
        body: Body::ReplicaSet(ReplicaSetSpec {
            replicas: Some(0),
            selector,
            template,
            min_ready_seconds: spec.min_ready_seconds,
        }),
    };
    Ok(store.create(o)?)
}

fn recreate(
    store: &mut KubeStore,
    d: &Stored,
    new: &Stored,
    olds: &[Stored],
    replicas: i64,
    old_pods: usize,
) -> Result<(), ControllerError> {
    for o in olds {
        if rs_replicas(o) > 0 {
            scale(store, d, o, 0)?;
        }
    }
    // New pods only once every old one is gone (those in their grace period too).
    if old_pods == 0 {
        scale(store, d, new, replicas)?;
    }
    Ok(())
}

/// The rolling update's limits for `replicas`: (max surge, max unavailable).
pub fn limits(spec: &DeploymentSpec, replicas: i64) -> (i64, i64) {
    let ru = spec.strategy.as_ref().and_then(|s| s.rolling_update.clone()).unwrap_or_default();
    let quarter = IntOrString::String("25%".into());
    let surge = ru.max_surge.unwrap_or(quarter.clone()).scaled(replicas, true).unwrap_or(1);
    let unavail = ru.max_unavailable.unwrap_or(quarter).scaled(replicas, false).unwrap_or(0);
    match (surge, unavail) {
        (0, 0) => (0, 1),
        other => other,
    }
}

fn rolling(
    store: &mut KubeStore,
    d: &Stored,
    spec: &DeploymentSpec,
    new: &Stored,
    olds: &[Stored],
    replicas: i64,
) -> Result<(), ControllerError> {
    let (surge, unavail) = limits(spec, replicas);
    let new_n = rs_replicas(new);
    let total: i64 = olds.iter().map(rs_replicas).sum::<i64>() + new_n;
    // Up: the new ReplicaSet grows within maxSurge.
    let mut target = new_n;
    if new_n < replicas {
        let room = replicas.saturating_add(surge).saturating_sub(total).max(0);
        target = new_n + room.min(replicas - new_n);
    } else if new_n > replicas {
        target = replicas;
    }
    if olds.iter().all(|o| rs_replicas(o) == 0) {
        target = replicas;
    }
    scale(store, d, new, target)?;
    let total = total - new_n + target;
    // Down: old ReplicaSets shrink as long as enough pods stay available.
    let min_available = replicas - unavail;
    let new_unavailable = (target - rs_status(new).available_replicas).max(0);
    let mut budget = total.saturating_sub(min_available).saturating_sub(new_unavailable);
    // Old pods that are not available go first: they count against nothing.
    for o in olds {
        let n = rs_replicas(o);
        let unhealthy = (n - rs_status(o).available_replicas).max(0);
        let cut = unhealthy.min(n);
        if cut > 0 && budget > 0 {
            let cut = cut.min(budget);
            scale(store, d, o, n - cut)?;
            budget -= cut;
        }
    }
    for o in olds {
        if budget <= 0 {
            break;
        }
        let now = store.must_get(Kind::ReplicaSet, o.namespace(), o.name())?;
        let current = rs_replicas(&now);
        let cut = current.min(budget);
        if cut > 0 {
            scale(store, d, &now, current - cut)?;
            budget -= cut;
        }
    }
    Ok(())
}

fn clean_history(
    store: &mut KubeStore,
    spec: &DeploymentSpec,
    olds: &[Stored],
) -> Result<(), ControllerError> {
    let keep = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let idle: Vec<&Stored> =
        olds.iter().filter(|o| rs_replicas(o) == 0 && rs_status(o).replicas == 0).collect();
    if idle.len() > keep {
        for o in &idle[..idle.len() - keep] {
            store.delete(Kind::ReplicaSet, o.namespace(), o.name())?;
        }
    }
    Ok(())
}

fn write_status(
    store: &mut KubeStore,
    d: &Stored,
    spec: &DeploymentSpec,
    new: Option<&Stored>,
    replicas: i64,
) -> Result<(), ControllerError> {
    let ns = d.namespace().to_string();
    let rss: Vec<Stored> = store
        .list(Kind::ReplicaSet, Some(&ns))?
        .into_iter()
        .filter(|r| r.object.metadata.controller_uid() == Some(d.uid()))
        .collect();
    let sum = |f: fn(&ReplicaStatus) -> i64| rss.iter().map(|r| f(&rs_status(r))).sum::<i64>();
    let updated = new
        .and_then(|n| rss.iter().find(|r| r.uid() == n.uid()))
        .map(|n| rs_status(n).replicas)
        .unwrap_or(0);
    let available = sum(|s| s.available_replicas);
    let (_, unavail) = limits(spec, replicas);
    let complete = updated == replicas && sum(|s| s.replicas) == replicas && available == replicas;
    let prev: DeploymentStatus = d.status_as();
    let cond = |kind: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = prev
            .conditions
            .iter()
            .find(|c| c.kind == kind && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(ironpod_images::time::now_rfc3339);
        Condition {
            kind: kind.into(),
            status: status.into(),
            last_transition_time: Some(since),
            reason: Some(reason.into()),
            message: Some(message),
        }
    };
    let status = DeploymentStatus {
        replicas: sum(|s| s.replicas),
        updated_replicas: updated,
        ready_replicas: sum(|s| s.ready_replicas),
        available_replicas: available,
        unavailable_replicas: (replicas - available).max(0),
        observed_generation: d.object.metadata.generation.unwrap_or(0),
        conditions: vec![
            cond(
                "Available",
                available >= replicas - unavail,
                if available >= replicas - unavail {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                },
                format!(
                    "Deployment {} minimum availability.",
                    if available >= replicas - unavail { "has" } else { "does not have" }
                ),
            ),
            cond(
                "Progressing",
                true,
                if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                match new {
                    Some(n) if complete => {
                        format!("ReplicaSet \"{}\" has successfully progressed.", n.name())
                    }
                    Some(n) => format!("ReplicaSet \"{}\" is progressing.", n.name()),
                    None => "Deployment is paused.".into(),
                },
            ),
        ],
    };
    let v = serde_json::to_value(&status).unwrap_or_default();
    store.set_status(Kind::Deployment, &ns, d.name(), d.uid(), &v)?;
    Ok(())
}

#[cfg(test)]
mod tests;
