//! ReplicationControllers and ReplicaSets: each keeps `replicas` active pods that match its
//! selector, made from its template and owned by it (a matching pod that no one owns is
//! adopted); failed pods are replaced; a deleted one deletes its pods first. Also the
//! garbage collector: a pod or ReplicaSet whose owner is gone is deleted.

use std::collections::BTreeMap;

use ironpod_kube::meta::{ObjectMeta, OwnerReference};
use ironpod_kube::object::{Body, Kind, Object};
use ironpod_kube::pod::PodStatus;
use ironpod_kube::selector::LabelSelector;
use ironpod_kube::store::generate_name;
use ironpod_kube::workload::{PodTemplateSpec, ReplicaStatus};
use ironpod_kube::{KubeStore, StoreError, Stored};

use crate::ControllerError;

/// Most pods one owner makes or deletes in one pass.
pub const BURST: usize = 500;

/// What RCs and ReplicaSets have in common.
pub struct Owner {
    /// The stored object.
    pub stored: Stored,
    /// Pods wanted.
    pub replicas: i64,
    /// Which pods are its.
    pub selector: LabelSelector,
    /// Its pods' template.
    pub template: PodTemplateSpec,
    /// Seconds a pod must be ready to count as available.
    pub min_ready: i64,
}

impl Owner {
    /// The owner of a stored RC or ReplicaSet.
    pub fn of(s: &Stored) -> Option<Owner> {
        let (replicas, selector, template, min_ready) = match &s.object.body {
            Body::ReplicaSet(r) => {
                (r.replicas, r.selector.clone(), r.template.clone(), r.min_ready_seconds)
            }
            Body::ReplicationController(r) => {
                let sel = match r.selector.is_empty() {
                    true => &r.template.metadata.labels,
                    false => &r.selector,
                };
                (r.replicas, LabelSelector::of(sel), r.template.clone(), r.min_ready_seconds)
            }
            _ => return None,
        };
        Some(Owner {
            stored: s.clone(),
            replicas: replicas.unwrap_or(1),
            selector,
            template,
            min_ready: min_ready.unwrap_or(0),
        })
    }

    fn reference(&self) -> OwnerReference {
        let k = self.stored.object.kind();
        OwnerReference {
            api_version: k.api_version().into(),
            kind: k.name().into(),
            name: self.stored.name().into(),
            uid: self.stored.uid().into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The pod's status.
pub fn pod_status(p: &Stored) -> PodStatus {
    p.status_as::<PodStatus>()
}

/// Whether a pod has ended for good.
pub fn ended(p: &Stored) -> bool {
    let phase = pod_status(p).phase;
    phase == "Succeeded" || phase == "Failed"
}

/// Whether a pod is ready, and has been for `min_ready` seconds.
pub fn available(p: &Stored, min_ready: i64) -> bool {
    let s = pod_status(p);
    let Some(c) = s.conditions.iter().find(|c| c.kind == "Ready" && c.status == "True") else {
        return false;
    };
    if min_ready <= 0 {
        return true;
    }
    let since = c.last_transition_time.as_deref().and_then(ironpod_images::time::parse_rfc3339);
    let now =
        ironpod_images::time::parse_rfc3339(&ironpod_images::time::now_rfc3339()).unwrap_or(0);
    since.is_some_and(|t| now >= t + min_ready as u64)
}

/// Pods in the order they are taken away when scaling down: pending before running, not
/// ready before ready, more restarts first, newer first.
pub fn deletion_order(pods: &mut [Stored]) {
    let rank = |p: &Stored| {
        let s = pod_status(p);
        let phase = match s.phase.as_str() {
            "Pending" | "" => 0,
            "Running" => 2,
            _ => 1,
        };
        let restarts: i64 = s.container_statuses.iter().map(|c| c.restart_count).sum();
        (phase, s.is_ready(), -restarts)
    };
    pods.sort_by(|a, b| {
        rank(a).cmp(&rank(b)).then_with(|| {
            let (ca, cb) =
                (&a.object.metadata.creation_timestamp, &b.object.metadata.creation_timestamp);
            cb.cmp(ca)
        })
    });
}

/// A new pod of `owner`'s template.
fn new_pod(owner: &Owner) -> Object {
    let t = &owner.template;
    Object {
        metadata: ObjectMeta {
            name: generate_name(&format!("{}-", owner.stored.name())),
            namespace: Some(owner.stored.namespace().to_string()),
            labels: t.metadata.labels.clone(),
            annotations: t.metadata.annotations.clone(),
            owner_references: vec![owner.reference()],
            ..Default::default()
        },
        body: Body::Pod(t.spec.clone()),
    }
}

/// One pass over the RCs and ReplicaSets.
pub fn sync(store: &mut KubeStore) -> Result<(), ControllerError> {
    let mut owners = store.list(Kind::ReplicationController, None)?;
    owners.extend(store.list(Kind::ReplicaSet, None)?);
    for o in owners.iter().filter_map(Owner::of) {
        crate::each(o.stored.object.kind().name(), o.stored.name(), || sync_one(store, &o));
    }
    Ok(())
}

/// Records an event about the owner.
fn event(store: &mut KubeStore, o: &Owner, reason: &str, message: &str) {
    let _ = store.record_event(o.stored.uid(), "Normal", reason, message, source(o));
}

fn source(o: &Owner) -> &'static str {
    match o.stored.object.kind() {
        Kind::ReplicaSet => "replicaset-controller",
        _ => "replication-controller",
    }
}

fn sync_one(store: &mut KubeStore, o: &Owner) -> Result<(), ControllerError> {
    let ns = o.stored.namespace().to_string();
    let uid = o.stored.uid().to_string();
    let pods = store.list(Kind::Pod, Some(&ns))?;
    let mut owned: Vec<Stored> = pods
        .iter()
        .filter(|p| p.object.metadata.controller_uid() == Some(uid.as_str()))
        .cloned()
        .collect();
    if o.stored.deleting() {
        for p in owned.iter().filter(|p| !p.deleting()) {
            store.delete(Kind::Pod, &ns, p.name())?;
        }
        if owned.is_empty() {
            store.finalize(o.stored.object.kind(), &ns, o.stored.name(), &uid)?;
        }
        return Ok(());
    }
    // Orphans that match are adopted.
    for p in pods.iter().filter(|p| {
        p.object.metadata.controller_uid().is_none()
            && !p.deleting()
            && o.selector.matches(&p.object.metadata.labels)
    }) {
        let mut adopted = p.object.clone();
        adopted.metadata.owner_references.push(o.reference());
        match store.update(adopted, p) {
            Ok(s) => owned.push(s),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Pods that ended for good are replaced.
    for p in owned.iter().filter(|p| !p.deleting() && ended(p)) {
        store.delete(Kind::Pod, &ns, p.name())?;
        event(store, o, "SuccessfulDelete", &format!("Deleted pod: {}", p.name()));
    }
    let mut active: Vec<Stored> =
        owned.iter().filter(|p| !p.deleting() && !ended(p)).cloned().collect();
    let want = o.replicas.max(0) as usize;
    if active.len() < want {
        // At most BURST a pass, as Kubernetes' burstReplicas: a huge count does not hold
        // the controllers up; the rest come in the next passes.
        for _ in active.len()..want.min(active.len() + BURST) {
            let made = create_pod(store, o)?;
            event(store, o, "SuccessfulCreate", &format!("Created pod: {}", made.name()));
            active.push(made);
        }
    } else if active.len() > want {
        deletion_order(&mut active);
        let extra = (active.len() - want).min(BURST);
        for p in active.drain(..extra) {
            store.delete(Kind::Pod, &ns, p.name())?;
            event(store, o, "SuccessfulDelete", &format!("Deleted pod: {}", p.name()));
        }
    }
    let status = ReplicaStatus {
        replicas: active.len() as i64,
        fully_labeled_replicas: active.iter().filter(|p| template_labels_match(o, p)).count()
            as i64,
        ready_replicas: active.iter().filter(|p| pod_status(p).is_ready()).count() as i64,
        available_replicas: active.iter().filter(|p| available(p, o.min_ready)).count() as i64,
        observed_generation: o.stored.object.metadata.generation.unwrap_or(0),
    };
    let v = serde_json::to_value(&status).unwrap_or_default();
    store.set_status(o.stored.object.kind(), &ns, o.stored.name(), &uid, &v)?;
    Ok(())
}

fn template_labels_match(o: &Owner, p: &Stored) -> bool {
    o.template.metadata.labels.iter().all(|(k, v)| p.object.metadata.labels.get(k) == Some(v))
}

fn create_pod(store: &mut KubeStore, o: &Owner) -> Result<Stored, ControllerError> {
    loop {
        match store.create(new_pod(o)) {
            Err(StoreError::Exists { .. }) => continue,
            other => return Ok(other?),
        }
    }
}

/// Deletes pods and ReplicaSets whose managing owner is gone.
pub fn collect_garbage(store: &mut KubeStore) -> Result<(), ControllerError> {
    let mut owners: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for k in [Kind::ReplicationController, Kind::ReplicaSet, Kind::Deployment] {
        for s in store.list(k, None)? {
            owners
                .entry((k.name().to_string(), s.namespace().to_string()))
                .or_default()
                .push(s.uid().to_string());
        }
    }
    for k in [Kind::Pod, Kind::ReplicaSet] {
        for s in store.list(k, None)? {
            if s.deleting() {
                continue;
            }
            let Some(r) =
                s.object.metadata.owner_references.iter().find(|r| r.controller == Some(true))
            else {
                continue;
            };
            let alive = owners
                .get(&(r.kind.clone(), s.namespace().to_string()))
                .is_some_and(|uids| uids.contains(&r.uid));
            if !alive {
                tracing::info!(kind = k.name(), name = %s.name(), "its owner is gone: deleting it");
                store.delete(k, s.namespace(), s.name())?;
            }
        }
    }
    Ok(())
}

/// Marks a pod running and ready, as its kubelet would (for other modules' tests).
#[cfg(test)]
pub fn tests_ready(s: &mut KubeStore, p: &Stored) {
    tests::ready(s, p)
}

#[cfg(test)]
mod tests;
