//! `ironpod kube` on the host with no controller running: what is stored and shown. The
//! objects are only stored here (no pod runs on the host); pods run in the rig's tests.

mod common;

use std::path::Path;

use common::*;

fn kube(root: &Path, args: &[&str]) -> std::process::Output {
    let mut a = vec!["kube"];
    a.extend_from_slice(args);
    ironpod(root, &a)
}

fn write(root: &Path, name: &str, text: &str) -> String {
    let p = root.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {tier: front}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: demo, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: shop}
stringData: {password: hunter2}
"#;

#[test]
fn apply_get_describe_delete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let f = write(root, "app.yaml", APP);
    let out = kube(root, &["apply", "-f", &f]);
    let text = ok(&out);
    assert_eq!(
        text,
        "namespace/shop created\nsecret/db created\nservice/web created\ndeployment.apps/web created\n"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no ironpod controller is running") && err.contains("ironpod system service"),
        "{err}"
    );
    // Again: unchanged; a change: configured.
    assert!(ok(&kube(root, &["apply", "-f", &f])).contains("deployment.apps/web unchanged"));
    let changed = write(root, "app2.yaml", &APP.replace("replicas: 2", "replicas: 3"));
    assert!(ok(&kube(root, &["apply", "-f", &changed])).contains("deployment.apps/web configured"));
    // Tables.
    let deps = ok(&kube(root, &["get", "deployments", "-n", "shop"]));
    let header: Vec<&str> = deps.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(deps.lines().nth(1).unwrap().starts_with("web "), "{deps}");
    assert!(deps.contains("0/3"), "{deps}");
    let svc = ok(&kube(root, &["get", "svc", "-n", "shop", "-o", "wide"]));
    assert!(
        svc.contains("NodePort")
            && svc.contains("10.96.0.1")
            && svc.contains("80:30000/TCP")
            && svc.contains("app=web"),
        "{svc}"
    );
    let none = kube(root, &["get", "pods"]);
    assert_eq!(ok(&none), "");
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("No resources found in default namespace.")
    );
    let all = ok(&kube(root, &["get", "deploy", "-A", "-l", "tier=front"]));
    assert!(all.starts_with("NAMESPACE") && all.contains("shop"), "{all}");
    assert_eq!(ok(&kube(root, &["get", "deploy", "-A", "-l", "tier!=front"])), "");
    // -o yaml of one object; -o json of a list; -o name.
    let y = ok(&kube(root, &["get", "deployment/web", "-n", "shop", "-o", "yaml"]));
    assert!(
        y.contains("kind: Deployment") && y.contains("generation: 2") && y.contains("uid:"),
        "{y}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&kube(root, &["get", "svc", "-n", "shop", "-o", "json"])))
            .unwrap();
    assert_eq!(j["kind"], "List");
    assert_eq!(j["items"][0]["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(
        ok(&kube(root, &["get", "ns", "-o", "name"])),
        "namespace/default\nnamespace/shop\n"
    );
    // What get -o yaml gives can be applied again.
    let again = write(root, "again.yaml", &y);
    assert!(ok(&kube(root, &["apply", "-f", &again])).contains("deployment.apps/web unchanged"));
    // Secrets: sizes only, unless -o yaml asks.
    let d = ok(&kube(root, &["describe", "secret", "db", "-n", "shop"]));
    assert!(d.contains("password:  7 bytes") && !d.contains("hunter2"), "{d}");
    let t = ok(&kube(root, &["get", "secret", "db", "-n", "shop"]));
    assert!(!t.contains("aHVudGVyMg"), "{t}");
    assert!(ok(&kube(root, &["get", "secret", "db", "-n", "shop", "-o", "yaml"]))
        .contains("aHVudGVyMg=="));
    // Scale and describe.
    assert_eq!(
        ok(&kube(root, &["scale", "deployment/web", "--replicas", "5", "-n", "shop"])),
        "deployment.apps/web scaled\n"
    );
    let d = ok(&kube(root, &["describe", "deploy", "web", "-n", "shop"]));
    assert!(
        d.contains("Replicas:         5 desired") && d.contains("StrategyType:     RollingUpdate"),
        "{d}"
    );
    // ReplicationControllers: their selector defaults to the template's labels.
    let rc = write(root, "rc.yaml", "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc}\nspec:\n  replicas: 2\n  template:\n    metadata: {labels: {app: rc}}\n    spec: {containers: [{name: a, image: demo}]}\n");
    ok(&kube(root, &["apply", "-f", &rc]));
    let t = ok(&kube(root, &["get", "rc", "-o", "wide"]));
    let row: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[1], row[2]), ("rc", "2", "0"), "{t}");
    assert!(t.contains("app=rc"), "{t}");
    let d = ok(&kube(root, &["describe", "rc", "rc"]));
    assert!(d.contains("0 current / 2 desired") && d.contains("Selector:         app=rc"), "{d}");
    // Errors as kubectl's, exit 1.
    let missing = kube(root, &["get", "pod", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("Error from server (NotFound): pods \"nope\" not found"));
    let bad_kind = kube(root, &["get", "widgets"]);
    assert_eq!(bad_kind.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_kind.stderr)
        .contains("doesn't have a resource type \"widgets\""));
    // Deletion: the Service and Secret go at once; the deployment waits for a controller.
    let out = kube(root, &["delete", "-f", &f]);
    assert_eq!(ok(&out), "namespace \"shop\" deleted\nsecret \"db\" deleted\nservice \"web\" deleted\ndeployment \"web\" deleted\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ironpod controller is running"));
    assert!(ok(&kube(root, &["get", "ns", "shop"])).contains("Terminating"));
    let def = kube(root, &["delete", "ns", "default"]);
    assert!(
        String::from_utf8_lossy(&def.stderr).contains("the default namespace cannot be deleted")
    );
}

#[test]
fn bad_manifests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cases = [
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, resource: {}}]}\n", "spec.containers[0].resource: not a field ironpod supports"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeSelector: {a: b}, containers: [{name: a, image: x}]}\n", "spec.nodeSelector"),
        ("apiVersion: v1\nkind: CronJob\nmetadata: {name: p}\n", "kind \"CronJob\" is not supported"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: P}\nspec: {containers: [{name: a, image: x}]}\n", "metadata.name"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, livenessProbe: {exec: {command: [t]}, httpGet: {port: 80}}}]}\n", "spec.containers[0].livenessProbe: give exactly one"),
        ("key: [unclosed\n", "document 1"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = write(root, &format!("bad{i}.yaml"), text);
        let out = kube(root, &["apply", "-f", &f]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want) && err.contains(&f), "{want}: {err}");
    }
    // One bad document stores none of the others.
    let f = write(root, "mixed.yaml", &format!("{APP}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: x}}\nspec: {{containers: []}}\n"));
    assert_eq!(kube(root, &["apply", "-f", &f]).status.code(), Some(1));
    assert_eq!(ok(&kube(root, &["get", "ns", "-o", "name"])), "namespace/default\n");
    // Objects from stdin and a directory, and a namespace mismatch.
    let sub = root.join("dir");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(
        sub.join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n",
    )
    .unwrap();
    std::fs::write(sub.join("notes.txt"), "not a manifest").unwrap();
    assert_eq!(ok(&kube(root, &["apply", "-f", &sub.to_string_lossy()])), "configmap/a created\n");
    let mismatch = write(
        root,
        "ns.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: other}\n",
    );
    let out = kube(root, &["apply", "-f", &mismatch, "-n", "default"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match the namespace"));
    let out = kube(root, &["apply", "-f", &mismatch]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespaces \"other\" not found"));
}

/// `get -w` follows a named object (and only it) and a selection; `-o yaml` separates its
/// documents.
#[test]
fn get_watch_follows_changes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pod = |label: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {{v: '{label}'}}}}\nspec: {{containers: [{{name: c, image: demo}}]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: q, labels: {{v: '{label}'}}}}\nspec: {{containers: [{{name: c, image: demo}}]}}\n")
    };
    ok(&kube(root, &["apply", "-f", &write(root, "a.yaml", &pod("1"))]));
    let watch = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ironpod"))
            .env("IRONPOD_ROOT", root)
            .arg("kube")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = c.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        (c, rx)
    };
    let (mut named, named_rx) = watch(&["get", "pod", "p", "-w"]);
    let (mut yaml, yaml_rx) = watch(&["get", "pods", "-w", "-o", "yaml"]);
    let next = |rx: &std::sync::mpsc::Receiver<String>| {
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("a line")
    };
    assert!(next(&named_rx).starts_with("NAME "));
    assert!(next(&named_rx).starts_with("p "));
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(&kube(root, &["apply", "-f", &write(root, "b.yaml", &pod("2"))]));
    let row = next(&named_rx);
    assert!(row.starts_with("p ") && row.contains("Pending"), "{row}");
    let mut docs = Vec::new();
    while let Ok(l) = yaml_rx.recv_timeout(std::time::Duration::from_secs(3)) {
        docs.push(l);
    }
    let text = docs.join("\n");
    assert_eq!(text.matches("\n---").count(), 2, "{text}");
    assert_eq!(text.matches("name: p\n").count(), 2, "{text}");
    assert_eq!(text.matches("name: q\n").count(), 2, "{text}");
    for c in [&mut named, &mut yaml] {
        let _ = c.kill();
        let _ = c.wait();
    }
    // The named watch showed nothing of q.
    assert!(named_rx.recv_timeout(std::time::Duration::from_millis(200)).is_err());
    // A name with a selector, a watch of two kinds: refused before anything is printed.
    let both = kube(root, &["get", "pod", "p", "-l", "v=2"]);
    assert!(!both.status.success() && both.stdout.is_empty());
    assert!(String::from_utf8_lossy(&both.stderr).contains("name cannot be provided"));
    let kinds = kube(root, &["get", "pod/p", "configmap/x", "-w"]);
    assert!(!kinds.status.success() && kinds.stdout.is_empty());
    assert!(String::from_utf8_lossy(&kinds.stderr).contains("a single resource type"));
}
