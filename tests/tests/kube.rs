//! `ironpod kube` with the controllers of `ironpod system service`, real guests: a
//! two-container pod sharing an emptyDir and localhost, ConfigMaps and Secrets as files and
//! variables, init containers, restart policies, probes, and Deployments.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ironpod_tests::manifests::{SHARED_POD, SHARED_POD_SEES};
use ironpod_tests::pty::Terminal;
use ironpod_tests::service::Service;
use ironpod_tests::{bin, import_with_program, require_linux_kvm, text, TestRoot};

/// Kills the kubelets of a root when a test ends (their VMs go with them), so that a test
/// that failed leaves no pod behind for the next.
struct Kubelets<'a>(&'a TestRoot);

impl Drop for Kubelets<'_> {
    fn drop(&mut self) {
        let root = self.0.path().to_string_lossy().into_owned();
        let Ok(procs) = std::fs::read_dir("/proc") else { return };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("ironpod-kubelet") && cmd.contains(&root) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        std::thread::sleep(Duration::from_millis(500));
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

/// A pod of two containers in one VM: the init container and both containers share an
/// emptyDir; the sidecar reaches the web container on localhost; variables and files come
/// from a ConfigMap, a Secret and the pod's own fields; a changed ConfigMap reaches the
/// running pod; logs, exec, get and describe; deletion takes the VM down.
#[test]
fn pod_of_two_containers_shares_volumes_and_localhost() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let _kubelets = Kubelets(&root);
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
    // What the containers see: their shared emptyDir (the init container's file too),
    // localhost, variables and files from the ConfigMap and the Secret, their mounts.
    for (c, cmd, want) in SHARED_POD_SEES {
        let mut args = vec!["exec", "shared", "-c", c, "--"];
        args.extend_from_slice(cmd);
        assert_eq!(kube_ok(&root, &args), *want, "{c}: {cmd:?}");
    }
    // exec -it: a terminal of the caller's size in the guest, typed input, the exit code.
    let mut cmd = Command::new(bin("ironpod"));
    cmd.env("IRONPOD_ROOT", root.path()).args(["kube", "exec", "-it", "shared", "-c", "side"]);
    // `tty` names a terminal of the container's own devpts, owned by the process's user.
    let script = "stty size; [ -t 0 ] && [ -t 1 ] && echo on-a-terminal; t=$(tty); \
                  echo tty=$t; [ \"$(stat -c %u $t)\" = \"$(id -u)\" ] && echo owns-it; \
                  echo ready; read x; echo got-$x; exit 4";
    cmd.args(["--", "sh", "-c", script]);
    let (mut term, mut child) = Terminal::spawn(&mut cmd, 30, 100);
    term.wait_for("ready", Duration::from_secs(60));
    assert!(term.seen.contains("30 100\r\non-a-terminal"), "{:?}", term.seen);
    assert!(
        term.seen.contains("tty=/dev/pts/") && term.seen.contains("owns-it"),
        "{:?}",
        term.seen
    );
    term.type_in(b"hi\r");
    term.wait_for("got-hi", Duration::from_secs(30));
    assert_eq!(child.wait().unwrap().code(), Some(4));
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
    volumes_and_following(&root);
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

/// A pod of volumes: subPaths (one a container pointed out of its volume), an emptyDir in
/// memory, a hostPath made on the host (`HOST_DIR` is replaced).
const VOLUMES_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: volumes}
spec:
  restartPolicy: Never
  initContainers:
  - name: plant
    image: demo
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "ln -s /etc /work/evil && mkdir /work/good && echo inside > /work/good/f"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: good
    image: demo
    imagePullPolicy: IfNotPresent
    command:
    - sh
    - -c
    - |
      cat /g/f && ls -ld /made | cut -c1 && df /mem | tail -1 | cut -d' ' -f1
      echo from-the-guest > /host/out && echo wrote && sleep 300
    volumeMounts:
    - {name: work, mountPath: /g, subPath: good}
    - {name: work, mountPath: /made, subPath: new/dir}
    - {name: mem, mountPath: /mem}
    - {name: host, mountPath: /host}
  - name: evil
    image: demo
    imagePullPolicy: IfNotPresent
    command: ["cat", "/e/passwd"]
    volumeMounts: [{name: work, mountPath: /e, subPath: evil}]
  volumes:
  - {name: work, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
  - {name: host, hostPath: {path: HOST_DIR, type: DirectoryOrCreate}}
"#;

/// Runs `ironpod kube ARGS` (a command that keeps going: `-f`, `-w`) until a line of its
/// output satisfies `done` or `limit` passes; its lines so far.
fn follow(
    root: &TestRoot,
    args: &[&str],
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> Vec<String> {
    use std::io::BufRead;
    let mut child = Command::new(bin("ironpod"))
        .env("IRONPOD_ROOT", root.path())
        .arg("kube")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let (t, mut lines) = (Instant::now(), Vec::new());
    while let Some(left) = limit.checked_sub(t.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let end = done(&l);
                lines.push(l);
                if end {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

/// Volumes: a subPath is resolved inside its volume (one that exists and one made on the
/// way are mounted; one that a container pointed out of the volume with a symbolic link is
/// refused — that container does not start and says why, the rest of the pod runs); an
/// emptyDir in memory is a tmpfs; a hostPath is made on the host and written through.
/// `logs -f` and `get -w` follow the pod.
fn volumes_and_following(root: &TestRoot) {
    let host = root.path().join("host-dir");
    apply(root, &VOLUMES_POD.replace("HOST_DIR", &host.to_string_lossy()));
    let watched = follow(root, &["get", "pod", "volumes", "-w"], Duration::from_secs(120), |l| {
        l.starts_with("volumes ") && l.contains(" 1/2 ")
    });
    assert!(watched.last().is_some_and(|l| l.contains(" 1/2 ")), "get -w: {watched:?}");
    assert!(watched[0].starts_with("NAME "), "{watched:?}");
    let log =
        follow(root, &["logs", "-f", "volumes", "-c", "good"], Duration::from_secs(60), |l| {
            l == "wrote"
        });
    assert_eq!(log, ["inside", "d", "tmpfs", "wrote"]);
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "from-the-guest\n");
    wait_for(root, "the refused container's status", Duration::from_secs(60), "volumes", || {
        container_status(root, "volumes", "evil").to_string().contains("subpath")
    });
    let evil = container_status(root, "volumes", "evil");
    assert_eq!(evil["state"]["terminated"]["reason"], "CreateContainerError", "{evil}");
    kube_ok(root, &["delete", "pod", "volumes"]);
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
      - name: udp
        image: udp
        imagePullPolicy: IfNotPresent
        command: ["/udp-echo", "serve", "5353"]
        ports: [{containerPort: 5353, name: answer, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: answer, port: 53, targetPort: answer, protocol: UDP, nodePort: 30053}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - name: client
    image: udp
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

const OTHER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Pod
metadata: {name: visitor, namespace: other}
spec:
  containers:
  - name: visitor
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

/// The VMM process of a pod's VM, as its kubelet records it.
fn vmm_of(root: &TestRoot, pod: &str) -> i32 {
    let uid = pod_json(root, pod)["metadata"]["uid"].as_str().unwrap().to_string();
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.path().join("kube/pods").join(&uid).join("kubelet.json")).unwrap(),
    )
    .unwrap();
    let pid = info["vmm_pid"].as_i64().unwrap_or_else(|| panic!("{pod} has no VM: {info}"));
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "ironpod-vmm", "pid {pid} of pod {pod}");
    pid as i32
}

/// A Deployment of three behind a Service: requests to its name reach all three; a killed
/// VMM's pod is back in the endpoints within 10 s and requests keep getting through;
/// scaling; a rolling update keeps a ready pod throughout; the node port on the host.
#[test]
fn deployment_behind_a_service() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let _kubelets = Kubelets(&root);
    let _svc = Service::start(&root);
    import_with_program(&root, "udp-echo", "udp");
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
    // UDP through the Service: 30 datagrams (a flow each) from a pod reach every pod, and
    // the UDP node port answers on the host.
    let answers =
        kube_ok(&root, &["exec", "client", "--", "/udp-echo", "ask", &format!("{ip}:53"), "30"]);
    let mut seen: Vec<&str> = answers.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(seen.len(), 30, "{answers}");
    seen.sort();
    seen.dedup();
    assert_eq!(seen, pods.iter().map(String::as_str).collect::<Vec<_>>(), "{answers}");
    let host = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.send_to(b"from-host", "127.0.0.1:30053").unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = host.recv_from(&mut buf).expect("an answer on the UDP node port");
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        answer.ends_with(" from-host") && pods.iter().any(|p| answer.starts_with(p.as_str())),
        "{answer}"
    );
    // Another namespace: its pods cannot reach these pods, only the Service, by its
    // namespaced names.
    apply(&root, OTHER);
    wait_for(&root, "the visitor", Duration::from_secs(120), "client", || {
        let out = kube(&root, &["get", "pod", "visitor", "-n", "other", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    });
    let visitor =
        |cmd: &str| kube(&root, &["exec", "visitor", "-n", "other", "--", "sh", "-c", cmd]);
    let hosts = text(&visitor("cat /etc/hosts").stdout);
    assert!(
        hosts.contains(&format!("{ip}\tweb.default web.default.svc web.default.svc.cluster.local")),
        "{hosts}"
    );
    assert!(
        !hosts.lines().any(|l| l.split_whitespace().nth(1) == Some("web")),
        "no bare name across namespaces: {hosts}"
    );
    let pod_ip = pod_json(&root, &pods[0])["status"]["podIP"].as_str().unwrap().to_string();
    let direct = visitor(&format!("timeout 5 wget -qO- http://{pod_ip}:8080/"));
    assert!(!direct.status.success(), "a pod of another namespace was reached directly");
    let lookup_other = "IP=$(awk '$2==\"web.default\"{print $1}' /etc/hosts);";
    let through = visitor(&format!("{lookup_other} wget -qO- http://$IP:80/"));
    assert!(
        through.status.success() && pods.contains(&text(&through.stdout).trim().to_string()),
        "{}{}",
        text(&through.stdout),
        text(&through.stderr)
    );
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
    // 10 s on a real machine; the rig emulates its CPU (a boot takes several times as long),
    // so it gets twice that, and the time is printed.
    wait_for(
        &root,
        "the killed pod back in the endpoints",
        Duration::from_secs(20),
        &victim,
        || back_in(&root),
    );
    let _ = t;
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
    assert!(back < Duration::from_secs(20), "back in {back:?}");
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
    // Undone: the first template again, rolled the same way, as revision 3.
    let updated = pods_of(&root, "app=web");
    let out = kube_ok(&root, &["rollout", "undo", "deployment/web"]);
    assert_eq!(out, "deployment.apps/web rolled back\n");
    let t = Instant::now();
    loop {
        assert!(!endpoint_pods(&root, "web").is_empty(), "no ready pod during the undo");
        let now = pods_of(&root, "app=web");
        if endpoint_pods(&root, "web").len() == 2
            && now.len() == 2
            && now.iter().all(|p| !updated.contains(p))
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(180), "the undo did not finish: {now:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let d: serde_json::Value =
        serde_json::from_str(&kube_ok(&root, &["get", "deployment", "web", "-o", "json"])).unwrap();
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "demo", "{d}");
    let history = kube_ok(&root, &["rollout", "history", "deployment/web"]);
    assert!(history.contains("\n2 ") && history.contains("\n3 "), "{history}");
    kube_ok(
        &root,
        &["delete", "-f", &{
            let f = root.path().join("web.yaml");
            std::fs::write(&f, WEB).unwrap();
            f.to_string_lossy().into_owned()
        }],
    );
    kube_ok(&root, &["delete", "namespace", "other"]);
    assert_eq!(count_vmms(root.path()), 0);
    assert!(kube_ok(&root, &["get", "rs"]).is_empty());
    let nets = root.ok(&["network", "ls"]);
    assert!(!nets.contains("kube-other"), "the namespace's network went with it: {nets}");
}

const POLICIES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  restartPolicy: Never
  containers:
  - {name: ok, image: demo, imagePullPolicy: IfNotPresent, command: ["true"]}
  - {name: bad, image: demo, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: onfailure}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: ok, image: demo, imagePullPolicy: IfNotPresent, command: ["true"]}
  - {name: bad, image: demo, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: always}
spec:
  containers:
  - {name: ok, image: demo, imagePullPolicy: IfNotPresent, command: ["true"]}
  - {name: bad, image: demo, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: ok, image: demo, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo finished"]}
---
apiVersion: v1
kind: Pod
metadata: {name: live, labels: {app: live}}
spec:
  containers:
  - name: web
    image: demo
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && echo ok > /www/ready && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080, name: http}]
    startupProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 1
      failureThreshold: 60
    livenessProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 1
      failureThreshold: 2
    readinessProbe:
      exec: {command: [cat, /www/ready]}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: imagehealth}
spec:
  containers:
  - {name: c, image: healthy, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "touch /tmp/ok; exec sleep 1000"]}
---
apiVersion: v1
kind: Service
metadata: {name: live}
spec:
  selector: {app: live}
  ports: [{port: 80, targetPort: http}]
"#;

fn container_status(root: &TestRoot, pod: &str, c: &str) -> serde_json::Value {
    let v = pod_json(root, pod);
    v["status"]["containerStatuses"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == c).cloned())
        .unwrap_or_default()
}

fn restarts(root: &TestRoot, pod: &str, c: &str) -> i64 {
    container_status(root, pod, c)["restartCount"].as_i64().unwrap_or(-1)
}

fn boot_id(root: &TestRoot, pod: &str) -> String {
    kube_ok(root, &["exec", pod, "--", "cat", "/proc/sys/kernel/random/boot_id"])
}

/// Restart policies against exit codes 0 and 1 (with the back-off), liveness and
/// readiness probes, and the controller killed and started again: its pods are adopted (same
/// VMs), what was asked for meanwhile is made, and a pod whose kubelet died (as at a host's
/// reboot) comes back.
#[test]
fn restart_policies_probes_and_adoption() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let _kubelets = Kubelets(&root);
    let mut svc = Service::start(&root);
    // An image with a HEALTHCHECK (built on the host: no RUN) for a pod without probes.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM demo\nHEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD test -f /tmp/ok\n",
    )
    .unwrap();
    root.ok(&["build", "-t", "healthy", &ctx.path().to_string_lossy()]);
    apply(&root, POLICIES);
    wait_for(&root, "the never pod to fail", Duration::from_secs(180), "never", || {
        phase(&root, "never") == "Failed"
    });
    wait_for(&root, "the done pod to succeed", Duration::from_secs(120), "done", || {
        phase(&root, "done") == "Succeeded"
    });
    wait_for(
        &root,
        "restarts under OnFailure and Always",
        Duration::from_secs(120),
        "always",
        || {
            restarts(&root, "onfailure", "bad") >= 1
                && restarts(&root, "always", "ok") >= 1
                && restarts(&root, "always", "bad") >= 1
        },
    );
    for (c, code, reason) in [("ok", 0, "Completed"), ("bad", 1, "Error")] {
        let s = container_status(&root, "never", c);
        assert_eq!(s["state"]["terminated"]["exitCode"], code, "{s}");
        assert_eq!(s["state"]["terminated"]["reason"], reason, "{s}");
        assert_eq!(s["restartCount"], 0, "{s}");
    }
    assert_eq!(restarts(&root, "onfailure", "ok"), 0, "OnFailure does not restart a success");
    assert_eq!(phase(&root, "onfailure"), "Running");
    assert_eq!(phase(&root, "always"), "Running");
    assert_eq!(kube_ok(&root, &["logs", "done"]), "finished\n");
    // Back-off: a container that keeps failing waits longer each time.
    wait_for(&root, "CrashLoopBackOff", Duration::from_secs(60), "always", || {
        container_status(&root, "always", "bad")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let table = kube_ok(&root, &["get", "pods"]);
    assert!(
        table.lines().any(|l| l.starts_with("always ") && l.contains("CrashLoopBackOff")),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("done ") && l.contains("Completed")), "{table}");
    let previous = kube_ok(&root, &["logs", "always", "-c", "bad", "-p"]);
    assert_eq!(previous, "");
    // Readiness: out of the endpoints and back.
    wait_for(&root, "the live pod", Duration::from_secs(120), "live", || {
        endpoint_pods(&root, "live") == ["live"]
    });
    kube_ok(&root, &["exec", "live", "--", "rm", "/www/ready"]);
    wait_for(&root, "not ready", Duration::from_secs(20), "live", || {
        endpoint_pods(&root, "live").is_empty()
    });
    assert_eq!(restarts(&root, "live", "web"), 0);
    kube_ok(&root, &["exec", "live", "--", "sh", "-c", "echo ok > /www/ready"]);
    wait_for(&root, "ready again", Duration::from_secs(20), "live", || {
        endpoint_pods(&root, "live") == ["live"]
    });
    // Liveness: a failing probe restarts the container.
    kube_ok(&root, &["exec", "live", "--", "rm", "/www/healthz"]);
    wait_for(&root, "a liveness restart", Duration::from_secs(60), "live", || {
        restarts(&root, "live", "web") == 1
    });
    wait_for(&root, "ready after it", Duration::from_secs(60), "live", || {
        endpoint_pods(&root, "live") == ["live"]
    });
    let d = kube_ok(&root, &["describe", "pod", "live"]);
    assert!(d.contains("Container web failed liveness probe, will be restarted"), "{d}");
    assert!(d.contains("Liveness probe failed: HTTP probe failed with statuscode: 404"), "{d}");
    // The image's HEALTHCHECK is the liveness probe of a container without one.
    wait_for(&root, "the imagehealth pod", Duration::from_secs(60), "imagehealth", || {
        phase(&root, "imagehealth") == "Running"
    });
    kube_ok(&root, &["exec", "imagehealth", "--", "rm", "/tmp/ok"]);
    wait_for(&root, "a HEALTHCHECK restart", Duration::from_secs(60), "imagehealth", || {
        restarts(&root, "imagehealth", "c") == 1
    });
    let d = kube_ok(&root, &["describe", "pod", "imagehealth"]);
    assert!(d.contains("the image's HEALTHCHECK is its liveness probe"), "{d}");
    assert!(d.contains("Container c failed liveness probe, will be restarted"), "{d}");
    // The controller killed: pods and VMs stay; started again, it adopts them.
    let before = boot_id(&root, "live");
    let live_uid = pod_json(&root, "live")["metadata"]["uid"].as_str().unwrap().to_string();
    let info = |uid: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(root.path().join("kube/pods").join(uid).join("kubelet.json")).unwrap(),
        )
        .unwrap()
    };
    let kubelet = info(&live_uid)["pid"].clone();
    svc.kill();
    let out = apply(&root, "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: later}\nspec:\n  replicas: 1\n  template:\n    metadata: {labels: {app: later}}\n    spec: {containers: [{name: c, image: demo, imagePullPolicy: IfNotPresent, command: [sleep, '1000']}]}\n");
    assert!(out.contains("replicationcontroller/later created"), "{out}");
    // A pod whose kubelet dies while no controller runs (its VM goes with it).
    let onfailure_uid =
        pod_json(&root, "onfailure")["metadata"]["uid"].as_str().unwrap().to_string();
    let onfailure_kubelet = info(&onfailure_uid)["pid"].as_i64().unwrap();
    let _ = Command::new("kill").args(["-9", &onfailure_kubelet.to_string()]).status();
    let bad_before = restarts(&root, "onfailure", "bad");
    svc = Service::start(&root);
    wait_for(&root, "the RC's pod", Duration::from_secs(120), "live", || {
        pods_of(&root, "app=later").len() == 1
            && phase(&root, &pods_of(&root, "app=later")[0]) == "Running"
    });
    assert_eq!(boot_id(&root, "live"), before, "the live pod's VM was kept");
    assert_eq!(info(&live_uid)["pid"], kubelet, "its kubelet was kept");
    assert_eq!(restarts(&root, "live", "web"), 1);
    wait_for(&root, "the onfailure pod back", Duration::from_secs(120), "onfailure", || {
        paths_running(&root, &onfailure_uid) && restarts(&root, "onfailure", "bad") > bad_before
    });
    drop(svc);
    for p in ["never", "onfailure", "always", "done", "live", "imagehealth"] {
        kube_ok(&root, &["delete", "pod", p, "--wait=false"]);
    }
    kube_ok(&root, &["delete", "rc", "later", "--wait=false"]);
    let _svc = Service::start(&root);
    wait_for(&root, "every pod gone", Duration::from_secs(120), "live", || {
        kube_ok(&root, &["get", "pods", "-o", "name"]).is_empty()
    });
    assert_eq!(count_vmms(root.path()), 0);
}

/// Whether the pod's kubelet runs.
fn paths_running(root: &TestRoot, uid: &str) -> bool {
    let Ok(info) = std::fs::read(root.path().join("kube/pods").join(uid).join("kubelet.json"))
    else {
        return false;
    };
    let v: serde_json::Value = serde_json::from_slice(&info).unwrap_or_default();
    v["pid"].as_i64().is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
}
