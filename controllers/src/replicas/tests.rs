use super::*;
use ironpod_kube::parse_manifest;

fn store() -> (tempfile::TempDir, KubeStore) {
    let d = tempfile::tempdir().unwrap();
    let s = KubeStore::open(d.path()).unwrap();
    (d, s)
}

const RS: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: demo}]}\n";

fn apply(s: &mut KubeStore, text: &str) -> Stored {
    s.apply(parse_manifest(text, "t").unwrap().remove(0)).unwrap().1
}

fn pods(s: &KubeStore) -> Vec<Stored> {
    s.list(Kind::Pod, Some("default")).unwrap().into_iter().filter(|p| !p.deleting()).collect()
}

/// Marks a pod running and ready, as its kubelet would.
pub fn ready(s: &mut KubeStore, p: &Stored) {
    let status = serde_json::json!({"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
    s.set_status(Kind::Pod, p.namespace(), p.name(), p.uid(), &status).unwrap();
}

#[test]
fn keeps_replicas_scales_and_adopts() {
    let (_d, mut s) = store();
    let rs = apply(&mut s, RS);
    sync(&mut s).unwrap();
    let made = pods(&s);
    assert_eq!(made.len(), 3);
    for p in &made {
        assert!(p.name().starts_with("web-"), "{}", p.name());
        assert_eq!(p.object.metadata.controller_uid(), Some(rs.uid()));
        assert_eq!(p.object.metadata.labels["app"], "web");
    }
    sync(&mut s).unwrap();
    assert_eq!(pods(&s).len(), 3, "a second pass makes nothing");
    ready(&mut s, &made[0]);
    apply(&mut s, &RS.replace("replicas: 3", "replicas: 1"));
    sync(&mut s).unwrap();
    let left = pods(&s);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name(), made[0].name(), "the ready pod stays");
    let st: ReplicaStatus = s.must_get(Kind::ReplicaSet, "default", "web").unwrap().status_as();
    assert_eq!((st.replicas, st.ready_replicas, st.available_replicas), (1, 1, 1));
    // An orphan that matches is adopted instead of a new pod made.
    apply(&mut s, "apiVersion: v1\nkind: Pod\nmetadata: {name: stray, labels: {app: web}}\nspec: {containers: [{name: a, image: demo}]}");
    apply(&mut s, &RS.replace("replicas: 3", "replicas: 2"));
    sync(&mut s).unwrap();
    let now = pods(&s);
    assert_eq!(now.len(), 2);
    assert!(now
        .iter()
        .any(|p| p.name() == "stray" && p.object.metadata.controller_uid() == Some(rs.uid())));
}

#[test]
fn failed_pods_are_replaced_and_deletion_cascades() {
    let (_d, mut s) = store();
    apply(&mut s, &RS.replace("replicas: 3", "replicas: 1"));
    sync(&mut s).unwrap();
    let first = pods(&s).remove(0);
    s.set_status(
        Kind::Pod,
        "default",
        first.name(),
        first.uid(),
        &serde_json::json!({"phase": "Failed"}),
    )
    .unwrap();
    sync(&mut s).unwrap();
    let now = pods(&s);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].name(), first.name());
    s.delete(Kind::ReplicaSet, "default", "web").unwrap();
    sync(&mut s).unwrap();
    assert!(pods(&s).is_empty(), "its pods are being deleted");
    assert!(s.get(Kind::ReplicaSet, "default", "web").unwrap().is_some(), "it waits for them");
    for p in s.list(Kind::Pod, None).unwrap() {
        s.finalize(Kind::Pod, "default", p.name(), p.uid()).unwrap();
    }
    sync(&mut s).unwrap();
    assert!(s.get(Kind::ReplicaSet, "default", "web").unwrap().is_none());
}

#[test]
fn replication_controllers_and_garbage() {
    let (_d, mut s) = store();
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc}\nspec:\n  replicas: 2\n  template:\n    metadata: {labels: {app: rc}}\n    spec: {containers: [{name: a, image: demo}]}\n";
    apply(&mut s, rc);
    sync(&mut s).unwrap();
    assert_eq!(pods(&s).len(), 2);
    // The owner vanishes without a cascade (finalized directly): its pods are garbage.
    let owner = s.must_get(Kind::ReplicationController, "default", "rc").unwrap();
    s.finalize(Kind::ReplicationController, "default", "rc", owner.uid()).unwrap();
    collect_garbage(&mut s).unwrap();
    assert!(pods(&s).is_empty());
}

#[test]
fn scale_down_order() {
    let (_d, mut s) = store();
    apply(&mut s, RS);
    sync(&mut s).unwrap();
    let mut all = pods(&s);
    ready(&mut s, &all[1]);
    all = pods(&s);
    deletion_order(&mut all);
    assert!(!pod_status(&all[0]).is_ready());
    assert!(pod_status(&all[2]).is_ready());
}
