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
            // The controllers' warnings show in the test's output.
            .env("RUST_LOG", "warn")
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

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: demo
        imagePullPolicy: IfNotPresent
        env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        command: ["sh", "-c", "mkdir -p /www && echo $POD > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          tcpSocket: {port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http, nodePort: 30080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - name: client
    image: demo
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

/// Names of the ready pods behind a Service, from its Endpoints.
fn endpoint_pods(root: &TestRoot, svc: &str) -> Vec<String> {
    let out = kube(root, &["get", "endpoints", svc, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut names: Vec<String> = v["subsets"]
        .as_array()
        .map(|s| {
            s.iter()
                .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["targetRef"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn pods_of(root: &TestRoot, selector: &str) -> Vec<String> {
    let out = kube_ok(root, &["get", "pods", "-l", selector, "-o", "name"]);
    let mut v: Vec<String> =
        out.lines().map(|l| l.trim_start_matches("pod/").to_string()).collect();
    v.sort();
    v
}

/// The VMM process under a pod's kubelet.
fn vmm_of(root: &TestRoot, pod: &str) -> i32 {
    let uid = pod_json(root, pod)["metadata"]["uid"].as_str().unwrap().to_string();
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.path().join("kube/pods").join(&uid).join("kubelet.json")).unwrap(),
    )
    .unwrap();
    let kubelet = info["pid"].as_i64().unwrap() as i32;
    let ppid = |pid: i32| -> i32 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        s.rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim()
            != "ironpod-vmm"
        {
            continue;
        }
        let mut p = pid;
        for _ in 0..8 {
            p = ppid(p);
            if p == kubelet {
                return pid;
            }
            if p <= 1 {
                break;
            }
        }
    }
    panic!("no VMM under kubelet {kubelet} of pod {pod}");
}

/// A Deployment of three behind a Service: requests to its name reach all three; a killed
/// VMM's pod is back in the endpoints within 10 s and requests keep getting through;
/// scaling; a rolling update keeps a ready pod throughout; the node port on the host.
#[test]
fn deployment_behind_a_service() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let _svc = Service::start(&root);
    apply(&root, WEB);
    wait_for(&root, "three ready web pods", Duration::from_secs(180), "client", || {
        endpoint_pods(&root, "web").len() == 3
    });
    wait_for(&root, "the client", Duration::from_secs(120), "client", || ready(&root, "client"));
    let pods = pods_of(&root, "app=web");
    assert_eq!(endpoint_pods(&root, "web"), pods);
    let table = kube_ok(&root, &["get", "deployments"]);
    assert!(table.lines().any(|l| l.starts_with("web ") && l.contains("3/3")), "{table}");
    // The pods find the service by its names in /etc/hosts (the demo image's static
    // busybox resolves no names itself: the test looks them up with awk).
    let svc: serde_json::Value =
        serde_json::from_str(&kube_ok(&root, &["get", "svc", "web", "-o", "json"])).unwrap();
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let hosts = kube_ok(&root, &["exec", "client", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!(
            "{ip}\tweb web.default web.default.svc web.default.svc.cluster.local"
        )),
        "{hosts}"
    );
    let lookup = "IP=$(awk '$2==\"web\"{print $1}' /etc/hosts);";
    // 30 requests to the service reach every pod.
    let answers = kube_ok(
        &root,
        &[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            &format!("{lookup} for i in $(seq 30); do wget -qO- http://$IP:80/; done"),
        ],
    );
    let mut seen: Vec<&str> = answers.lines().collect();
    assert_eq!(seen.len(), 30, "{answers}");
    seen.sort();
    seen.dedup();
    assert_eq!(seen, pods.iter().map(String::as_str).collect::<Vec<_>>(), "{answers}");
    // Other names of the service, and the node port on the host.
    let port = kube(
        &root,
        &["exec", "client", "--", "wget", "-qO-", "-T", "5", &format!("http://{ip}:81/")],
    );
    assert!(!port.status.success(), "a port the service does not have is refused");
    let host = ironpod_tests::web::http_get(30080, "/");
    assert!(pods.iter().any(|p| host.contains(p.as_str())), "{host}");
    // A VMM killed: requests keep getting through; its pod is back within 10 s.
    let prober = Command::new(bin("ironpod"))
        .env("IRONPOD_ROOT", root.path())
        .args(["kube", "exec", "client", "--", "sh", "-c", &format!("{lookup} for i in $(seq 60); do if timeout 2 wget -qO- http://$IP:80/ >/dev/null 2>&1; then echo ok $(date +%s); else echo fail $(date +%s); fi; sleep 0.2; done")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let victim = pods[0].clone();
    let pid = vmm_of(&root, &victim);
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let t = Instant::now();
    let back_in = |root: &TestRoot| {
        let v = pod_json(root, &victim);
        let restarted = v["status"]["containerStatuses"][0]["restartCount"] == 1;
        restarted && ready(root, &victim) && endpoint_pods(root, "web").len() == 3
    };
    while !back_in(&root) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the pod was not back within 10 s: {:?}",
            endpoint_pods(&root, "web")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(vmm_of(&root, &victim), pid, "a new VM");
    let back = killed.elapsed();
    let log = text(&prober.wait_with_output().unwrap().stdout);
    let mut streak = 0;
    let mut worst = 0;
    for l in log.lines() {
        if l.starts_with("fail") {
            streak += 1;
            worst = worst.max(streak);
        } else {
            streak = 0;
        }
    }
    // Each failed request takes up to 2 s plus the 0.2 s pause: a streak of 5 is 11 s.
    assert!(worst < 5, "requests failed in a row {worst} times:\n{log}");
    eprintln!("killed VMM: pod back in {back:?}, longest failure streak {worst}");
    let st = pod_json(&root, &victim);
    assert_eq!(st["status"]["containerStatuses"][0]["restartCount"], 1, "{st}");
    // Scale 3 → 1 → 2.
    kube_ok(&root, &["scale", "deployment/web", "--replicas", "1"]);
    wait_for(&root, "one pod", Duration::from_secs(60), "client", || {
        pods_of(&root, "app=web").len() == 1 && endpoint_pods(&root, "web").len() == 1
    });
    kube_ok(&root, &["scale", "deployment", "web", "--replicas", "2"]);
    wait_for(&root, "two pods", Duration::from_secs(120), "client", || {
        endpoint_pods(&root, "web").len() == 2
    });
    // A rolling update to another image keeps a ready pod throughout.
    root.ok(&["tag", "demo", "demo:v2"]);
    let before = pods_of(&root, "app=web");
    apply(
        &root,
        &WEB.replace("replicas: 3", "replicas: 2").replacen("image: demo\n", "image: demo:v2\n", 1),
    );
    let t = Instant::now();
    loop {
        let ready = endpoint_pods(&root, "web");
        assert!(!ready.is_empty(), "no ready pod during the rollout");
        let now = pods_of(&root, "app=web");
        if ready.len() == 2 && now.iter().all(|p| !before.contains(p)) && now.len() == 2 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "the rollout did not finish: {now:?} {ready:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = kube_ok(&root, &["rollout", "status", "deployment/web", "--timeout", "60"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let history = kube_ok(&root, &["rollout", "history", "deployment/web"]);
    assert!(history.contains("\n1 ") && history.contains("\n2 "), "{history}");
    let rs = kube_ok(&root, &["get", "rs"]);
    assert_eq!(rs.lines().count(), 3, "{rs}");
    kube_ok(
        &root,
        &["delete", "-f", &{
            let f = root.path().join("web.yaml");
            std::fs::write(&f, WEB).unwrap();
            f.to_string_lossy().into_owned()
        }],
    );
    assert_eq!(count_vmms(root.path()), 0);
    assert!(kube_ok(&root, &["get", "rs"]).is_empty());
}
