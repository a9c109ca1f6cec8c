//! Checks of an object beyond its shape: names, references between fields, ranges, and the
//! Kubernetes features ironpod refuses. Every error starts with the path of the field.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use crate::meta::{self, check_label_name, check_subdomain, ObjectMeta};
use crate::object::{Body, Kind, Object};
use crate::pod::{Container, PodSpec, Probe, RestartPolicy, Volume};
use crate::quantity::IntOrString;
use crate::selector::LabelSelector;
use crate::service::ServiceSpec;
use crate::workload::{PodTemplateSpec, StrategyType};

type R = Result<(), String>;

fn at(path: &str, r: R) -> R {
    r.map_err(|e| format!("{path}: {e}"))
}

fn fail(path: &str, msg: impl std::fmt::Display) -> R {
    Err(format!("{path}: {msg}"))
}

/// The pod fields a `fieldRef` may name.
pub const FIELD_PATHS: [&str; 6] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "status.podIP",
    "status.hostIP",
    "spec.nodeName",
];

/// Checks an object read from a manifest.
pub fn check(o: &Object) -> R {
    check_meta(o.kind(), &o.metadata)?;
    match &o.body {
        Body::Namespace => Ok(()),
        Body::ConfigMap(d) => at("data", d.check()),
        Body::Secret(d) => at("data", d.check()),
        Body::Service(s) => check_service(s),
        Body::Endpoints(subsets) => {
            for (i, s) in subsets.iter().enumerate() {
                for (j, a) in s.addresses.iter().chain(&s.not_ready_addresses).enumerate() {
                    if a.ip.parse::<Ipv4Addr>().is_err() {
                        fail(&format!("subsets[{i}].addresses[{j}].ip"), "not an IPv4 address")?;
                    }
                }
                for (j, p) in s.ports.iter().enumerate() {
                    port_range(&format!("subsets[{i}].ports[{j}].port"), p.port)?;
                }
            }
            Ok(())
        }
        Body::Pod(spec) => check_pod(spec, "spec", false),
        Body::ReplicationController(s) => {
            nonneg("spec.replicas", s.replicas)?;
            nonneg("spec.minReadySeconds", s.min_ready_seconds)?;
            let selector = match s.selector.is_empty() {
                true => LabelSelector::of(&s.template.metadata.labels),
                false => LabelSelector::of(&s.selector),
            };
            check_template(&s.template, &selector)
        }
        Body::ReplicaSet(s) => {
            nonneg("spec.replicas", s.replicas)?;
            nonneg("spec.minReadySeconds", s.min_ready_seconds)?;
            check_template(&s.template, &s.selector)
        }
        Body::Deployment(s) => {
            nonneg("spec.replicas", s.replicas)?;
            nonneg("spec.minReadySeconds", s.min_ready_seconds)?;
            nonneg("spec.revisionHistoryLimit", s.revision_history_limit)?;
            if s.progress_deadline_seconds.is_some_and(|p| p < 1) {
                fail("spec.progressDeadlineSeconds", "must be at least 1")?;
            }
            if let Some(st) = &s.strategy {
                let recreate = st.kind == Some(StrategyType::Recreate);
                match &st.rolling_update {
                    Some(_) if recreate => {
                        fail("spec.strategy.rollingUpdate", "may not be given with type Recreate")?
                    }
                    Some(ru) => {
                        let surge =
                            rollout_limit("spec.strategy.rollingUpdate.maxSurge", &ru.max_surge)?;
                        let unavail = rollout_limit(
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            &ru.max_unavailable,
                        )?;
                        if !surge && !unavail {
                            fail(
                                "spec.strategy.rollingUpdate",
                                "maxSurge and maxUnavailable may not both be 0",
                            )?;
                        }
                    }
                    None => {}
                }
            }
            check_template(&s.template, &s.selector)
        }
    }
}

/// Whether a rollout limit is non-zero (checking it).
fn rollout_limit(path: &str, v: &Option<IntOrString>) -> Result<bool, String> {
    match v {
        None => Ok(true),
        Some(v) => v.scaled(100, true).map(|n| n > 0).map_err(|e| format!("{path}: {e}")),
    }
}

/// Kubernetes' int32 fields: at most this.
const INT32_MAX: i64 = i32::MAX as i64;

fn nonneg(path: &str, v: Option<i64>) -> R {
    match v {
        Some(n) if n < 0 => fail(path, "must not be negative"),
        Some(n) if n > INT32_MAX => fail(path, format!("must be at most {INT32_MAX}")),
        _ => Ok(()),
    }
}

fn check_meta(kind: Kind, m: &ObjectMeta) -> R {
    if m.name.is_empty() {
        return fail("metadata.name", "required");
    }
    match kind {
        Kind::Namespace | Kind::Service => at("metadata.name", check_label_name("name", &m.name))?,
        _ => at("metadata.name", check_subdomain("name", &m.name))?,
    }
    match (&m.namespace, kind.namespaced()) {
        (Some(_), false) => fail("metadata.namespace", format!("a {} has none", kind.name()))?,
        (Some(ns), true) => at("metadata.namespace", check_label_name("namespace", ns))?,
        _ => {}
    }
    at("metadata.labels", meta::check_labels(&m.labels))?;
    for k in m.annotations.keys() {
        at("metadata.annotations", meta::check_key(k))?;
    }
    Ok(())
}

fn check_template(t: &PodTemplateSpec, selector: &LabelSelector) -> R {
    if selector.is_empty() {
        return fail("spec.selector", "required (and not empty)");
    }
    at("spec.selector", selector.check())?;
    at("spec.template.metadata.labels", meta::check_labels(&t.metadata.labels))?;
    if !t.metadata.name.is_empty() {
        fail("spec.template.metadata.name", "pods of a template are named by their owner")?;
    }
    if !selector.matches(&t.metadata.labels) {
        fail("spec.template.metadata.labels", "must match the selector")?;
    }
    check_pod(&t.spec, "spec.template.spec", true)
}

/// Checks a pod spec at `p` (`workload`: a template, whose pods must restart `Always`).
pub fn check_pod(s: &PodSpec, p: &str, workload: bool) -> R {
    if s.containers.is_empty() {
        fail(&format!("{p}.containers"), "a pod needs at least one container")?;
    }
    if workload && s.restart_policy.is_some_and(|r| r != RestartPolicy::Always) {
        fail(&format!("{p}.restartPolicy"), "a workload's pods must restart Always")?;
    }
    nonneg(&format!("{p}.terminationGracePeriodSeconds"), s.termination_grace_period_seconds)?;
    if let Some(rc) = &s.runtime_class_name {
        if rc != "ironpod" {
            fail(
                &format!("{p}.runtimeClassName"),
                format!("{rc:?}: every pod here is an ironpod microVM (use \"ironpod\" or leave it out)"),
            )?;
        }
    }
    if let Some(h) = &s.hostname {
        at(&format!("{p}.hostname"), check_label_name("hostname", h))?;
    }
    if let Some(sc) = &s.security_context {
        for (f, v) in [("runAsUser", sc.run_as_user), ("runAsGroup", sc.run_as_group)] {
            nonneg(&format!("{p}.securityContext.{f}"), v)?;
        }
    }
    let mut vols = HashSet::new();
    for (i, v) in s.volumes.iter().enumerate() {
        let vp = format!("{p}.volumes[{i}]");
        at(&format!("{vp}.name"), check_label_name("volume name", &v.name))?;
        if !vols.insert(v.name.as_str()) {
            fail(&format!("{vp}.name"), format!("{:?} is given twice", v.name))?;
        }
        check_volume(v, &vp)?;
    }
    let mut names = HashSet::new();
    let all = s.init_containers.iter().map(|c| (c, "initContainers", true));
    let all = all.chain(s.containers.iter().map(|c| (c, "containers", false)));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (c, list, init) in all {
        let n = counts.entry(list).or_default();
        let cp = format!("{p}.{list}[{n}]");
        *n += 1;
        at(&format!("{cp}.name"), check_label_name("container name", &c.name))?;
        if !names.insert(c.name.as_str()) {
            fail(&format!("{cp}.name"), format!("{:?} is used by another container", c.name))?;
        }
        check_container(c, &cp, &vols, init)?;
    }
    Ok(())
}

fn check_volume(v: &Volume, vp: &str) -> R {
    let sources =
        [v.empty_dir.is_some(), v.config_map.is_some(), v.secret.is_some(), v.host_path.is_some()];
    if sources.iter().filter(|s| **s).count() != 1 {
        fail(vp, "give exactly one of emptyDir, configMap, secret, hostPath")?;
    }
    if let Some(e) = &v.empty_dir {
        match e.medium.as_deref() {
            None | Some("") | Some("Memory") => {}
            Some(m) => {
                fail(&format!("{vp}.emptyDir.medium"), format!("{m:?}: use \"\" or Memory"))?
            }
        }
    }
    if let Some(h) = &v.host_path {
        if !h.path.starts_with('/') {
            fail(&format!("{vp}.hostPath.path"), "must be absolute")?;
        }
        let kinds = ["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File"];
        if let Some(k) = h.kind.as_deref().filter(|k| !kinds.contains(k)) {
            fail(
                &format!("{vp}.hostPath.type"),
                format!("{k:?}: use one of {}", kinds[1..].join(", ")),
            )?;
        }
    }
    let items = match (&v.config_map, &v.secret) {
        (Some(c), _) => Some((&c.items, c.default_mode, "configMap")),
        (_, Some(s)) => Some((&s.items, s.default_mode, "secret")),
        _ => None,
    };
    if let Some((items, mode, f)) = items {
        if mode.is_some_and(|m| m > 0o777) {
            fail(&format!("{vp}.{f}.defaultMode"), "must be at most 0777")?;
        }
        for (i, it) in items.iter().enumerate() {
            let ip = format!("{vp}.{f}.items[{i}]");
            at(&format!("{ip}.key"), crate::config::check_data_key(&it.key))?;
            at(&format!("{ip}.path"), relative_path(&it.path))?;
            if it.mode.is_some_and(|m| m > 0o777) {
                fail(&format!("{ip}.mode"), "must be at most 0777")?;
            }
        }
    }
    Ok(())
}

fn relative_path(s: &str) -> R {
    if s.is_empty() || s.starts_with('/') || s.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(format!("{s:?} must be a relative path without '..'"));
    }
    Ok(())
}

fn port_range(path: &str, p: i64) -> R {
    match (1..=65535).contains(&p) {
        true => Ok(()),
        false => fail(path, format!("{p} is not a port (1-65535)")),
    }
}

fn check_container(c: &Container, cp: &str, vols: &HashSet<&str>, init: bool) -> R {
    if c.image.trim().is_empty() {
        fail(&format!("{cp}.image"), "required")?;
    }
    let mut port_names = HashSet::new();
    for (i, port) in c.ports.iter().enumerate() {
        let pp = format!("{cp}.ports[{i}]");
        port_range(&format!("{pp}.containerPort"), port.container_port)?;
        if let Some(h) = port.host_port {
            port_range(&format!("{pp}.hostPort"), h)?;
        }
        if let Some(ip) = &port.host_ip {
            if ip.parse::<Ipv4Addr>().is_err() {
                fail(&format!("{pp}.hostIP"), format!("{ip:?} is not an IPv4 address"))?;
            }
            if port.host_port.is_none() {
                fail(&format!("{pp}.hostIP"), "needs a hostPort")?;
            }
        }
        if let Some(n) = &port.name {
            at(&format!("{pp}.name"), check_label_name("port name", n))?;
            if n.len() > 15 || !port_names.insert(n.as_str()) {
                fail(&format!("{pp}.name"), format!("{n:?}: at most 15 characters, unique"))?;
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, e) in c.env.iter().enumerate() {
        let ep = format!("{cp}.env[{i}]");
        if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
            fail(&format!("{ep}.name"), "must be non-empty, without '='")?;
        }
        seen.insert(e.name.as_str());
        if let Some(from) = &e.value_from {
            if e.value.is_some() {
                fail(&ep, "value and valueFrom may not both be given")?;
            }
            let n = [
                from.config_map_key_ref.is_some(),
                from.secret_key_ref.is_some(),
                from.field_ref.is_some(),
            ];
            if n.iter().filter(|b| **b).count() != 1 {
                fail(
                    &format!("{ep}.valueFrom"),
                    "give exactly one of configMapKeyRef, secretKeyRef, fieldRef",
                )?;
            }
            if let Some(f) = &from.field_ref {
                let fp = f.field_path.as_str();
                let labelish = ["metadata.labels['", "metadata.annotations['"]
                    .iter()
                    .any(|pre| fp.starts_with(pre) && fp.ends_with("']"));
                if !FIELD_PATHS.contains(&fp) && !labelish {
                    fail(
                        &format!("{ep}.valueFrom.fieldRef.fieldPath"),
                        format!("{fp:?} is not supported (use {}, metadata.labels['KEY'] or metadata.annotations['KEY'])", FIELD_PATHS.join(", ")),
                    )?;
                }
                if f.api_version.as_deref().is_some_and(|v| v != "v1") {
                    fail(&format!("{ep}.valueFrom.fieldRef.apiVersion"), "only v1")?;
                }
            }
            for k in [&from.config_map_key_ref, &from.secret_key_ref].into_iter().flatten() {
                at(&format!("{ep}.valueFrom"), crate::config::check_data_key(&k.key))?;
            }
        }
    }
    for (i, e) in c.env_from.iter().enumerate() {
        if e.config_map_ref.is_some() == e.secret_ref.is_some() {
            fail(&format!("{cp}.envFrom[{i}]"), "give exactly one of configMapRef, secretRef")?;
        }
    }
    if let Some(r) = &c.resources {
        for (which, m) in [("limits", &r.limits), ("requests", &r.requests)] {
            for k in m.keys() {
                if k != "cpu" && k != "memory" {
                    fail(
                        &format!("{cp}.resources.{which}.{k}"),
                        "only cpu and memory are supported",
                    )?;
                }
            }
        }
        for k in ["cpu", "memory"] {
            if let (Some(l), Some(q)) = (r.limits.get(k), r.requests.get(k)) {
                if q.value()? > l.value()? {
                    fail(
                        &format!("{cp}.resources.requests.{k}"),
                        "must not be more than the limit",
                    )?;
                }
            }
        }
    }
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mp = format!("{cp}.volumeMounts[{i}]");
        if !vols.contains(m.name.as_str()) {
            fail(&format!("{mp}.name"), format!("no volume {:?} in the pod", m.name))?;
        }
        if !m.mount_path.starts_with('/') {
            fail(&format!("{mp}.mountPath"), "must be absolute")?;
        }
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            at(&format!("{mp}.subPath"), relative_path(sp))?;
        }
    }
    let probes = [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ];
    for (f, p) in probes {
        if let Some(p) = p {
            if init {
                fail(&format!("{cp}.{f}"), "init containers have no probes")?;
            }
            check_probe(p, &format!("{cp}.{f}"), f != "readinessProbe", c)?;
        }
    }
    if let Some(sc) = &c.security_context {
        for (f, v) in [("runAsUser", sc.run_as_user), ("runAsGroup", sc.run_as_group)] {
            nonneg(&format!("{cp}.securityContext.{f}"), v)?;
        }
    }
    Ok(())
}

fn check_probe(p: &Probe, pp: &str, one_success: bool, c: &Container) -> R {
    let handlers = [p.exec.is_some(), p.http_get.is_some(), p.tcp_socket.is_some()];
    if handlers.iter().filter(|h| **h).count() != 1 {
        fail(pp, "give exactly one of exec, httpGet, tcpSocket")?;
    }
    for (f, v, min) in [
        ("initialDelaySeconds", p.initial_delay_seconds, 0),
        ("periodSeconds", p.period_seconds, 1),
        ("timeoutSeconds", p.timeout_seconds, 1),
        ("successThreshold", p.success_threshold, 1),
        ("failureThreshold", p.failure_threshold, 1),
        ("terminationGracePeriodSeconds", p.termination_grace_period_seconds, 1),
    ] {
        if v.is_some_and(|v| v < min) {
            fail(&format!("{pp}.{f}"), format!("must be at least {min}"))?;
        }
        if v.is_some_and(|v| v > INT32_MAX) {
            fail(&format!("{pp}.{f}"), format!("must be at most {INT32_MAX}"))?;
        }
    }
    if one_success && p.success_threshold.is_some_and(|s| s != 1) {
        fail(&format!("{pp}.successThreshold"), "must be 1 for liveness and startup probes")?;
    }
    if let Some(e) = &p.exec {
        if e.command.is_empty() {
            fail(&format!("{pp}.exec.command"), "required")?;
        }
    }
    if let Some(h) = &p.http_get {
        if h.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            fail(&format!("{pp}.httpGet.scheme"), "only HTTP is supported")?;
        }
        if h.path.as_deref().is_some_and(|s| !s.starts_with('/')) {
            fail(&format!("{pp}.httpGet.path"), "must start with '/'")?;
        }
        probe_port(&h.port, &format!("{pp}.httpGet.port"), c)?;
    }
    if let Some(t) = &p.tcp_socket {
        probe_port(&t.port, &format!("{pp}.tcpSocket.port"), c)?;
    }
    Ok(())
}

fn probe_port(port: &IntOrString, path: &str, c: &Container) -> R {
    match port {
        IntOrString::Int(n) => port_range(path, *n),
        IntOrString::String(s) if c.ports.iter().any(|p| p.name.as_deref() == Some(s)) => Ok(()),
        IntOrString::String(s) => fail(path, format!("the container has no port named {s:?}")),
    }
}

fn check_service(s: &ServiceSpec) -> R {
    use crate::service::ServiceType;
    if s.ports.is_empty() {
        fail("spec.ports", "a service needs at least one port")?;
    }
    at("spec.selector", meta::check_labels(&s.selector))?;
    let ips = s.cluster_ip.iter().chain(&s.cluster_ips);
    for ip in ips {
        if ip == "None" {
            fail("spec.clusterIP", "headless services (None) are not supported")?;
        }
        if ip.parse::<Ipv4Addr>().is_err() {
            fail("spec.clusterIP", format!("{ip:?} is not an IPv4 address"))?;
        }
    }
    if let (Some(a), Some(b)) = (&s.cluster_ip, s.cluster_ips.first()) {
        if a != b || s.cluster_ips.len() > 1 {
            fail("spec.clusterIPs", "must be the one clusterIP")?;
        }
    }
    if s.session_affinity.as_deref().is_some_and(|a| a != "None") {
        fail("spec.sessionAffinity", "only None is supported")?;
    }
    let node_port = s.kind == Some(ServiceType::NodePort);
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        port_range(&format!("{pp}.port"), p.port)?;
        match &p.name {
            Some(n) => {
                at(&format!("{pp}.name"), check_label_name("port name", n))?;
                if !names.insert(n.as_str()) {
                    fail(&format!("{pp}.name"), format!("{n:?} is given twice"))?;
                }
            }
            None if s.ports.len() > 1 => {
                fail(&format!("{pp}.name"), "required when there are several ports")?
            }
            None => {}
        }
        if !seen.insert((p.port, p.protocol.unwrap_or_default())) {
            fail(&format!("{pp}.port"), format!("{} is given twice", p.port))?;
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) => port_range(&format!("{pp}.targetPort"), *n)?,
            Some(IntOrString::String(n)) => {
                at(&format!("{pp}.targetPort"), check_label_name("port name", n))?
            }
            None => {}
        }
        match p.node_port {
            Some(_) if !node_port => fail(&format!("{pp}.nodePort"), "only for type NodePort")?,
            Some(n) if !(30000..=32767).contains(&n) => {
                fail(&format!("{pp}.nodePort"), format!("{n} is outside 30000-32767"))?
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::object::parse_manifest;

    fn pod(spec: &str) -> Result<(), String> {
        let doc = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {spec}");
        parse_manifest(&doc, "t").map(drop)
    }

    fn err(spec: &str) -> String {
        pod(spec).unwrap_err()
    }

    #[test]
    fn pod_checks() {
        assert!(pod("{containers: [{name: a, image: x}]}").is_ok());
        assert!(err("{containers: []}").contains("spec.containers: a pod needs"));
        assert!(err("{containers: [{name: a, image: x}, {name: a, image: y}]}")
            .contains("spec.containers[1].name"));
        assert!(err("{initContainers: [{name: a, image: x}], containers: [{name: a, image: y}]}")
            .contains("spec.containers[0].name"));
        assert!(err("{containers: [{name: A, image: x}]}").contains("spec.containers[0].name"));
        assert!(err("{runtimeClassName: kata, containers: [{name: a, image: x}]}")
            .contains("runtimeClassName"));
        assert!(err(
            "{containers: [{name: a, image: x, volumeMounts: [{name: v, mountPath: /v}]}]}"
        )
        .contains("spec.containers[0].volumeMounts[0].name: no volume"));
        assert!(err("{volumes: [{name: v}], containers: [{name: a, image: x}]}")
            .contains("spec.volumes[0]: give exactly one"));
        assert!(err(
            "{volumes: [{name: v, emptyDir: {medium: Disk}}], containers: [{name: a, image: x}]}"
        )
        .contains("medium"));
        assert!(err("{containers: [{name: a, image: x, livenessProbe: {periodSeconds: 1}}]}")
            .contains("livenessProbe: give exactly one"));
        assert!(err(
            "{containers: [{name: a, image: x, readinessProbe: {tcpSocket: {port: web}}}]}"
        )
        .contains("no port named"));
        assert!(err("{containers: [{name: a, image: x, livenessProbe: {exec: {command: [t]}, successThreshold: 2}}]}").contains("successThreshold"));
        assert!(err("{initContainers: [{name: i, image: x, readinessProbe: {exec: {command: [t]}}}], containers: [{name: a, image: x}]}").contains("init containers have no probes"));
        assert!(err(
            "{containers: [{name: a, image: x, resources: {limits: {nvidia.com/gpu: 1}}}]}"
        )
        .contains("only cpu and memory"));
        assert!(err("{containers: [{name: a, image: x, resources: {limits: {cpu: 1}, requests: {cpu: 2}}}]}").contains("requests.cpu"));
        assert!(err("{containers: [{name: a, image: x, env: [{name: A, value: b, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]}]}").contains("both"));
        assert!(err("{containers: [{name: a, image: x, env: [{name: A, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}]}]}").contains("not supported"));
        assert!(pod("{containers: [{name: a, image: x, env: [{name: A, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}]}]}").is_ok());
        assert!(err("{containers: [{name: a, image: x, ports: [{containerPort: 70000}]}]}")
            .contains("ports[0].containerPort"));
        assert!(err("{volumes: [{name: c, configMap: {name: m, items: [{key: k, path: ../x}]}}], containers: [{name: a, image: x}]}").contains("items[0].path"));
        // Modes as YAML 1.1 reads them (octal with a leading 0), or numbers.
        let modes = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: x}]\n  volumes:\n  - name: s\n    secret: {secretName: s, defaultMode: 0400, items: [{key: k, path: k, mode: 420}]}\n";
        let o = parse_manifest(modes, "t").unwrap().remove(0);
        let crate::object::Body::Pod(p) = o.body else { panic!() };
        let s = p.volumes[0].secret.as_ref().unwrap();
        assert_eq!((s.default_mode, s.items[0].mode), (Some(0o400), Some(0o644)));
        assert!(err("{volumes: [{name: s, secret: {secretName: s, defaultMode: 0999}}], containers: [{name: a, image: x}]}").contains("bad file mode"));
    }

    #[test]
    fn workload_and_service_checks() {
        let dep = |extra: &str| {
            let doc = format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  selector: {{matchLabels: {{app: a}}}}\n  template:\n    metadata: {{labels: {{app: {extra}}}}}\n    spec: {{containers: [{{name: a, image: x}}]}}\n"
            );
            parse_manifest(&doc, "t").map(drop)
        };
        assert!(dep("a").is_ok());
        assert!(dep("b").unwrap_err().contains("must match the selector"));
        let svc = |spec: &str| {
            parse_manifest(
                &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {spec}"),
                "t",
            )
            .map(drop)
        };
        assert!(svc("{selector: {app: a}, ports: [{port: 80, targetPort: http}]}").is_ok());
        assert!(svc("{ports: [{port: 80}, {port: 81}]}")
            .unwrap_err()
            .contains("spec.ports[0].name: required"));
        assert!(svc("{clusterIP: None, ports: [{port: 80}]}").unwrap_err().contains("headless"));
        assert!(svc("{ports: [{port: 80, nodePort: 30001}]}")
            .unwrap_err()
            .contains("only for type NodePort"));
        assert!(svc("{type: NodePort, ports: [{port: 80, nodePort: 80}]}")
            .unwrap_err()
            .contains("30000"));
        let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: r}\nspec: {template: {metadata: {labels: {a: b}}, spec: {restartPolicy: Never, containers: [{name: a, image: x}]}}}";
        assert!(parse_manifest(rc, "t").unwrap_err().contains("restart Always"));
    }
}
