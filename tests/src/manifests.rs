//! Manifests that run through both of ironpod's Kubernetes paths — `ironpod kube apply`
//! (tests/kube.rs) and containerd's CRI with the shim (tests/cri.rs, through
//! [`crate::kubelet_cri`]) — and what their containers must see in either.

/// A pod of two containers and an init container sharing an emptyDir and localhost, with a
/// ConfigMap and a Secret as variables and files; unchanged from what a cluster with the
/// `ironpod` runtime class takes.
pub const SHARED_POD: &str = r#"
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
  runtimeClassName: ironpod
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

/// What the shared pod's containers see, the same through either path: (container,
/// command, its output).
pub const SHARED_POD_SEES: &[(&str, &[&str], &str)] = &[
    ("web", &["cat", "/work/init.txt", "/work/side.txt"], "prepared\nfrom-side\n"),
    ("side", &["wget", "-qO-", "http://127.0.0.1:8080/"], "served-by-shared\n"),
    ("side", &["sh", "-c", "echo $GREETING/$PASSWORD"], "hello from a configmap/hunter2\n"),
    ("side", &["cat", "/etc/app/app.conf", "/etc/creds/password"], "mode=fast\nhunter2"),
    ("side", &["stat", "-L", "-c", "%a", "/etc/creds/password"], "400\n"),
    ("web", &["hostname"], "shared\n"),
    ("web", &["sh", "-c", "echo $POD_NAME; id -u"], "shared\n0\n"),
    (
        "side",
        &["sh", "-c", "awk '$2 ~ /^\\/(work|etc\\/app|etc\\/creds)$/ {split($4, o, \",\"); print $2, o[1]}' /proc/mounts | sort"],
        "/etc/app ro\n/etc/creds ro\n/work rw\n",
    ),
];
