//! `ironpod kube` with the controllers of `ironpod system service`, real guests: a
//! two-container pod sharing an emptyDir and localhost, ConfigMaps and Secrets as files and
//! variables, init containers, restart policies, probes, and Deployments.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ironpod_tests::{bin, require_linux_kvm, text, TestRoot};

/// The service (its controllers run the objects) on a private socket of the root.
struct Service {
    child: Child,
}

impl Service {
    fn start(root: &TestRoot) -> Service {
        let socket = root.path().join("docker.sock");
        let child = Command::new(bin("ironpod"))
            .env("IRONPOD_ROOT", root.path())
            .args(["system", "service", "--socket"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "the service did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Service { child }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kube(root: &TestRoot, args: &[&str]) -> Output {
    let mut a = vec!["kube"];
    a.extend_from_slice(args);
    root.ironpod(&a)
}

fn kube_ok(root: &TestRoot, args: &[&str]) -> String {
    let out = kube(root, args);
    assert!(out.status.success(), "kube {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn apply(root: &TestRoot, manifest: &str) -> String {
    let f = root.path().join(format!("m{}.yaml", ironpod_tests_rand()));
    std::fs::write(&f, manifest).unwrap();
    kube_ok(root, &["apply", "-f", &f.to_string_lossy()])
}

fn ironpod_tests_rand() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// A pod's status field (a JSON pointer into `kube get pod NAME -o json`).
fn pod_json(root: &TestRoot, name: &str) -> serde_json::Value {
    serde_json::from_str(&kube_ok(root, &["get", "pod", name, "-o", "json"])).unwrap()
}

/// Waits until `f` holds, showing `what` and the pod's description when it does not.
fn wait_for(root: &TestRoot, what: &str, limit: Duration, pod: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            let d = kube(root, &["describe", "pod", pod]);
            let log = std::fs::read_dir(root.path().join("kube/pods"))
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            std::fs::read_to_string(e.path().join("kubelet.log"))
                                .unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            panic!(
                "timed out waiting for {what}:\n{}{}\nkubelet logs:\n{log}",
                text(&d.stdout),
                text(&d.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn phase(root: &TestRoot, pod: &str) -> String {
    pod_json(root, pod)["status"]["phase"].as_str().unwrap_or_default().to_string()
}

fn ready(root: &TestRoot, pod: &str) -> bool {
    let v = pod_json(root, pod);
    v["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

const SHARED_POD: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data:
  greeting: hello from a configmap
  app.conf: |
    mode=fast
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata:
  name: shared
  labels: {app: shared}
spec:
  initContainers:
  - name: prepare
    image: demo
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo prepared > /work/init.txt"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: web
    image: demo
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo served-by-$(POD_NAME) > /www/index.html && echo web up && exec httpd -f -p 8080 -h /www"]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    ports: [{containerPort: 8080, name: http}]
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
    volumeMounts: [{name: work, mountPath: /work}]
  - name: side
    image: demo
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo from-side > /work/side.txt; while true; do sleep 1; done"]
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    volumeMounts:
    - {name: work, mountPath: /work}
    - {name: config, mountPath: /etc/app}
    - {name: secret, mountPath: /etc/creds}
  volumes:
  - {name: work, emptyDir: {}}
  - {name: config, configMap: {name: settings}}
  - {name: secret, secret: {secretName: creds, defaultMode: 0400}}
"#;

/// A pod of two containers in one VM: the init container and both containers share an
/// emptyDir; the sidecar reaches the web container on localhost; variables and files come
/// from a ConfigMap, a Secret and the pod's own fields; a changed ConfigMap reaches the
/// running pod; logs, exec, get and describe; deletion takes the VM down.
#[test]
fn pod_of_two_containers_shares_volumes_and_localhost() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let out = apply(&root, SHARED_POD);
    assert!(
        out.contains("configmap/settings created") && out.contains("pod/shared created"),
        "{out}"
    );
    let _svc = Service::start(&root);
    wait_for(&root, "the pod to be ready", Duration::from_secs(120), "shared", || {
        ready(&root, "shared")
    });
    assert_eq!(phase(&root, "shared"), "Running");
    let table = kube_ok(&root, &["get", "pods"]);
    let row = table.lines().find(|l| l.starts_with("shared ")).unwrap_or_default();
    assert!(row.contains("2/2") && row.contains("Running"), "{table}");
    // One VM for both containers.
    let v = pod_json(&root, "shared");
    let ids: Vec<&str> = v["status"]["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["containerID"].as_str().unwrap())
        .collect();
    let vm_of = |id: &str| id.rsplit_once('/').unwrap().0.to_string();
    assert_eq!(vm_of(ids[0]), vm_of(ids[1]), "{ids:?}");
    // The emptyDir is shared, init container's file included.
    let files = kube_ok(
        &root,
        &["exec", "shared", "-c", "web", "--", "cat", "/work/init.txt", "/work/side.txt"],
    );
    assert_eq!(files, "prepared\nfrom-side\n");
    // localhost is the pod's.
    let page = kube_ok(
        &root,
        &["exec", "shared", "-c", "side", "--", "wget", "-qO-", "http://127.0.0.1:8080/"],
    );
    assert_eq!(page, "served-by-shared\n");
    let env = kube_ok(
        &root,
        &["exec", "shared", "-c", "side", "--", "sh", "-c", "echo $GREETING/$PASSWORD"],
    );
    assert_eq!(env, "hello from a configmap/hunter2\n");
    let conf = kube_ok(
        &root,
        &["exec", "shared", "-c", "side", "--", "cat", "/etc/app/app.conf", "/etc/creds/password"],
    );
    assert_eq!(conf, "mode=fast\nhunter2");
    let mode = kube_ok(
        &root,
        &["exec", "shared", "-c", "side", "--", "stat", "-L", "-c", "%a", "/etc/creds/password"],
    );
    assert_eq!(mode.trim(), "400");
    // A changed ConfigMap reaches the running pod's files.
    apply(&root, &SHARED_POD.replace("mode=fast", "mode=slow"));
    let t = Instant::now();
    loop {
        let c = kube_ok(&root, &["exec", "shared", "-c", "side", "--", "cat", "/etc/app/app.conf"]);
        if c == "mode=slow\n" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the ConfigMap's change did not arrive: {c}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(kube_ok(&root, &["logs", "shared", "-c", "web"]), "web up\n");
    let code = kube(&root, &["exec", "shared", "-c", "side", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code.status.code(), Some(3));
    let d = kube_ok(&root, &["describe", "pod", "shared"]);
    for want in [
        "Init Containers:",
        "prepare:",
        "Started container web",
        "Ready",
        "<set to the key 'password' in secret 'creds'>",
    ] {
        assert!(d.contains(want), "describe lacks {want:?}:\n{d}");
    }
    assert!(!d.contains("hunter2"), "describe shows a secret:\n{d}");
    let secret_table = kube_ok(&root, &["get", "secret", "creds"]);
    assert!(
        !secret_table.contains("hunter2") && !secret_table.contains("aHVudGVyMg"),
        "{secret_table}"
    );
    // Deletion: the VM goes, then the object.
    let vmms_before = count_vmms(root.path());
    assert_eq!(vmms_before, 1);
    let out = kube_ok(&root, &["delete", "pod", "shared"]);
    assert_eq!(out, "pod \"shared\" deleted\n");
    let gone = kube(&root, &["get", "pod", "shared"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(text(&gone.stderr).contains("pods \"shared\" not found"));
    assert_eq!(count_vmms(root.path()), 0);
}

/// Running VMMs (the tests of this file run one at a time).
fn count_vmms(_root: &Path) -> usize {
    let out = Command::new("pgrep").args(["-c", "-x", "ironpod-vmm"]).output().unwrap();
    text(&out.stdout).trim().parse().unwrap_or(0)
}
