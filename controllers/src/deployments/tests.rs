use super::*;
use crate::replicas;
use ironpod_kube::parse_manifest;
use ironpod_kube::pod::PodStatus;

const DEP: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: demo:1}]}\n";

fn apply(s: &mut KubeStore, text: &str) {
    s.apply(parse_manifest(text, "t").unwrap().remove(0)).unwrap();
}

fn live_pods(s: &KubeStore) -> Vec<Stored> {
    s.list(Kind::Pod, Some("default")).unwrap().into_iter().filter(|p| !p.deleting()).collect()
}

/// One pass of the controllers, with every pod becoming ready (a kubelet's work) and
/// deleted pods going away.
fn pass(s: &mut KubeStore) {
    sync(s).unwrap();
    replicas::sync(s).unwrap();
    for p in s.list(Kind::Pod, None).unwrap() {
        if p.deleting() {
            s.finalize(Kind::Pod, "default", p.name(), p.uid()).unwrap();
        } else if !p.status_as::<PodStatus>().is_ready() {
            replicas::tests_ready(s, &p);
        }
    }
    replicas::sync(s).unwrap();
}

fn rss(s: &KubeStore) -> Vec<Stored> {
    let mut v = s.list(Kind::ReplicaSet, Some("default")).unwrap();
    v.sort_by_key(revision);
    v
}

#[test]
fn rolls_within_limits_and_rolls_back() {
    let d = tempfile::tempdir().unwrap();
    let mut s = KubeStore::open(d.path()).unwrap();
    apply(&mut s, DEP);
    for _ in 0..4 {
        pass(&mut s);
    }
    let first = rss(&s);
    assert_eq!(first.len(), 1);
    assert_eq!(revision(&first[0]), 1);
    assert_eq!(live_pods(&s).len(), 3);
    let hash = first[0].object.metadata.labels[HASH_LABEL].clone();
    assert!(live_pods(&s).iter().all(|p| p.object.metadata.labels[HASH_LABEL] == hash));
    // A new image: never fewer than 3 available (maxUnavailable 25% of 3 is 0), never
    // more than 4 pods (maxSurge rounds up to 1).
    apply(&mut s, &DEP.replace("demo:1", "demo:2"));
    for _ in 0..20 {
        pass(&mut s);
        let ready = live_pods(&s).iter().filter(|p| p.status_as::<PodStatus>().is_ready()).count();
        assert!(ready >= 3, "ready {ready}");
        assert!(live_pods(&s).len() <= 4);
    }
    let now = rss(&s);
    assert_eq!(now.len(), 2);
    assert_eq!(rs_replicas(&now[0]), 0);
    assert_eq!((revision(&now[1]), rs_replicas(&now[1])), (2, 3));
    let st: DeploymentStatus = s.must_get(Kind::Deployment, "default", "web").unwrap().status_as();
    assert_eq!((st.replicas, st.updated_replicas, st.available_replicas), (3, 3, 3));
    assert!(st.conditions.iter().any(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable")));
    // The old template again: its ReplicaSet becomes revision 3.
    apply(&mut s, DEP);
    for _ in 0..20 {
        pass(&mut s);
    }
    let back = rss(&s);
    assert_eq!(back.last().unwrap().object.metadata.labels[HASH_LABEL], hash);
    assert_eq!(revision(back.last().unwrap()), 3);
    assert_eq!(rs_replicas(back.last().unwrap()), 3);
    // Scaling and Recreate.
    apply(&mut s, &DEP.replace("replicas: 3", "replicas: 1"));
    for _ in 0..5 {
        pass(&mut s);
    }
    assert_eq!(live_pods(&s).len(), 1);
    let recreate = DEP
        .replace("replicas: 3", "replicas: 2\n  strategy: {type: Recreate}")
        .replace("demo:1", "demo:3");
    apply(&mut s, &recreate);
    sync(&mut s).unwrap();
    replicas::sync(&mut s).unwrap();
    let newest = rss(&s).pop().unwrap();
    assert_eq!(rs_replicas(&newest), 0, "Recreate waits for the old pods to go");
    for _ in 0..6 {
        pass(&mut s);
    }
    assert_eq!(live_pods(&s).len(), 2);
    assert!(
        live_pods(&s)
            .iter()
            .all(|p| p.object.metadata.labels[HASH_LABEL]
                == newest.object.metadata.labels[HASH_LABEL])
    );
}

#[test]
fn limits_and_hash() {
    let spec = |surge: &str, unavail: &str| {
        let t = format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  selector: {{matchLabels: {{a: b}}}}\n  strategy: {{rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavail}}}}}\n  template:\n    metadata: {{labels: {{a: b}}}}\n    spec: {{containers: [{{name: a, image: x}}]}}\n");
        match parse_manifest(&t, "t").unwrap().remove(0).body {
            Body::Deployment(d) => d,
            _ => unreachable!(),
        }
    };
    assert_eq!(limits(&spec("25%", "25%"), 3), (1, 0));
    assert_eq!(limits(&spec("1", "1"), 3), (1, 1));
    assert_eq!(limits(&spec("50%", "50%"), 10), (5, 5));
    let d = spec("1", "1");
    let h = template_hash(&d.template);
    assert_eq!(h.len(), 10);
    let mut t = d.template.clone();
    t.metadata.labels.insert(HASH_LABEL.into(), h.clone());
    assert_eq!(template_hash(&t), h, "the hash label does not change the hash");
}

#[test]
fn scale_then_roll_with_explicit_limits() {
    let d = tempfile::tempdir().unwrap();
    let mut s = KubeStore::open(d.path()).unwrap();
    let dep = DEP.replace(
        "  selector:",
        "  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}\n  selector:",
    );
    apply(&mut s, &dep);
    for _ in 0..4 {
        pass(&mut s);
    }
    // `kube scale`: the spec's replicas, written over what was read.
    for n in [1, 2] {
        let cur = s.must_get(Kind::Deployment, "default", "web").unwrap();
        let mut o = cur.object.clone();
        if let Body::Deployment(spec) = &mut o.body {
            spec.replicas = Some(n);
        }
        s.update(o, &cur).unwrap();
        for _ in 0..6 {
            pass(&mut s);
        }
        assert_eq!(live_pods(&s).len(), n as usize);
    }
    apply(&mut s, &dep.replace("replicas: 3", "replicas: 2").replace("demo:1", "demo:2"));
    for _ in 0..10 {
        pass(&mut s);
    }
    let now = rss(&s);
    assert_eq!(now.len(), 2, "{:?}", now.iter().map(|r| r.name().to_string()).collect::<Vec<_>>());
    assert_eq!(rs_replicas(now.last().unwrap()), 2);
    assert!(live_pods(&s).iter().all(|p| p.object.metadata.labels[HASH_LABEL]
        == now.last().unwrap().object.metadata.labels[HASH_LABEL]));
}
