use super::*;
use crate::object::parse_manifest;

fn store() -> (tempfile::TempDir, KubeStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = KubeStore::open(dir.path()).unwrap();
    (dir, s)
}

fn one(text: &str) -> Object {
    parse_manifest(text, "t").unwrap().remove(0)
}

const DEP: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: demo}]}\n";

#[test]
fn apply_creates_configures_and_keeps_identity() {
    let (_d, mut s) = store();
    let v0 = s.version().unwrap();
    let (a, first) = s.apply(one(DEP)).unwrap();
    assert_eq!(a, Applied::Created);
    assert_eq!(first.namespace(), "default");
    assert_eq!(first.object.metadata.generation, Some(1));
    assert!(s.version().unwrap() > v0);
    let (a, same) = s.apply(one(DEP)).unwrap();
    assert_eq!(a, Applied::Unchanged);
    assert_eq!(same.version(), first.version());
    let (a, scaled) = s.apply(one(&DEP.replace("replicas: 2", "replicas: 3"))).unwrap();
    assert_eq!(a, Applied::Configured);
    assert_eq!(scaled.uid(), first.uid());
    assert_eq!(scaled.object.metadata.generation, Some(2));
    assert_eq!(scaled.object.metadata.creation_timestamp, first.object.metadata.creation_timestamp);
    // A label is metadata: no new generation.
    let (_, labelled) = s
        .apply(one(&DEP
            .replace("{name: web}", "{name: web, labels: {x: y}}")
            .replace("replicas: 2", "replicas: 3")))
        .unwrap();
    assert_eq!(labelled.object.metadata.generation, Some(2));
    assert!(labelled.version() > scaled.version());
    let got = s.must_get(Kind::Deployment, "default", "web").unwrap();
    assert_eq!(got, labelled);
    // The selector cannot change.
    let e = s.apply(one(&DEP.replace("app: web", "app: api"))).unwrap_err();
    assert!(e.to_string().contains("spec.selector cannot be changed"), "{e}");
}

#[test]
fn namespaces_must_exist() {
    let (_d, mut s) = store();
    let e = s.apply(one(&DEP.replace("{name: web}", "{name: web, namespace: shop}"))).unwrap_err();
    assert_eq!(e.to_string(), "namespaces \"shop\" not found");
    s.apply(one("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}")).unwrap();
    s.apply(one(&DEP.replace("{name: web}", "{name: web, namespace: shop}"))).unwrap();
    assert_eq!(s.list(Kind::Deployment, Some("shop")).unwrap().len(), 1);
    assert_eq!(s.list(Kind::Deployment, Some("default")).unwrap().len(), 0);
    assert_eq!(s.list(Kind::Deployment, None).unwrap().len(), 1);
    let ns = s.list(Kind::Namespace, None).unwrap();
    assert_eq!(ns.iter().map(Stored::name).collect::<Vec<_>>(), ["default", "shop"]);
    s.delete(Kind::Namespace, "", "shop").unwrap();
    let e = s
        .apply(one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: shop}"))
        .unwrap_err();
    assert!(e.to_string().contains("being deleted"), "{e}");
}

#[test]
fn status_deletion_and_conflicts() {
    let (_d, mut s) = store();
    let (_, dep) = s.apply(one(DEP)).unwrap();
    assert!(s
        .set_status(
            Kind::Deployment,
            "default",
            "web",
            dep.uid(),
            &serde_json::json!({"replicas": 2})
        )
        .unwrap());
    assert!(!s
        .set_status(Kind::Deployment, "default", "web", "other", &serde_json::json!({}))
        .unwrap());
    let got = s.must_get(Kind::Deployment, "default", "web").unwrap();
    assert_eq!(got.status["replicas"], 2);
    assert!(got.version() > dep.version());
    assert_eq!(got.to_value()["status"]["replicas"], 2);
    // A write from a stale read conflicts.
    let mut changed = got.object.clone();
    if let Body::Deployment(d) = &mut changed.body {
        d.replicas = Some(5);
    }
    assert!(matches!(s.update(changed.clone(), &dep).unwrap_err(), StoreError::Conflict(_)));
    s.update(changed.clone(), &got).unwrap();
    changed.metadata.labels.insert("x".into(), "y".into());
    assert!(matches!(s.update(changed, &got).unwrap_err(), StoreError::Conflict(_)));
    // Deleting a workload marks it; finalize removes it and its events.
    s.record_event(got.uid(), "Normal", "ScalingReplicaSet", "Scaled up", "deployment-controller")
        .unwrap();
    s.record_event(got.uid(), "Normal", "ScalingReplicaSet", "Scaled up", "deployment-controller")
        .unwrap();
    let ev = s.events(got.uid()).unwrap();
    assert_eq!((ev.len(), ev[0].count), (1, 2));
    s.delete(Kind::Deployment, "default", "web").unwrap();
    let marked = s.must_get(Kind::Deployment, "default", "web").unwrap();
    assert!(marked.deleting());
    assert!(s.apply(one(DEP)).unwrap_err().to_string().contains("being deleted"));
    assert!(s.finalize(Kind::Deployment, "default", "web", marked.uid()).unwrap());
    assert!(s.get(Kind::Deployment, "default", "web").unwrap().is_none());
    assert!(s.events(got.uid()).unwrap().is_empty());
    // A ConfigMap goes at once.
    s.apply(one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}")).unwrap();
    s.delete(Kind::ConfigMap, "default", "c").unwrap();
    assert!(s.get(Kind::ConfigMap, "default", "c").unwrap().is_none());
    assert_eq!(
        s.delete(Kind::ConfigMap, "default", "c").unwrap_err().to_string(),
        "configmaps \"c\" not found"
    );
}

#[test]
fn secrets_are_stored_as_data_and_private() {
    let (d, mut s) = store();
    let (_, sec) = s.apply(one("apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\nimmutable: true")).unwrap();
    let Body::Secret(data) = &sec.object.body else { panic!() };
    assert_eq!(data.values().unwrap()["password"], b"hunter2");
    assert!(data.string_data.is_empty());
    let mode = std::fs::metadata(d.path().join("kube.db")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let e = s.apply(one("apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: other}\nimmutable: true")).unwrap_err();
    assert!(e.to_string().contains("immutable"), "{e}");
}

#[test]
fn names_and_uids() {
    let n = generate_name("web-");
    assert_eq!(n.len(), 9);
    assert!(crate::meta::check_subdomain("n", &n).is_ok());
    let u = new_uid();
    assert_eq!(u.len(), 36);
    assert_ne!(u, new_uid());
}

#[test]
fn pod_specs_are_immutable() {
    let (_d, mut s) = store();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: demo}]}\n";
    s.apply(one(pod)).unwrap();
    let e = s.apply(one(&pod.replace("image: demo", "image: other"))).unwrap_err();
    assert!(e.to_string().contains("a pod's spec"), "{e}");
    let (a, _) = s.apply(one(&pod.replace("{name: p}", "{name: p, labels: {x: y}}"))).unwrap();
    assert_eq!(a, Applied::Configured, "metadata may change");
}
