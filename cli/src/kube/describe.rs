//! `kube describe`: an object in kubectl's layout, with its events. Secret values are never
//! shown (their sizes are).

use std::fmt::Write;
use std::path::Path;

use ironpod_kube::object::Body;
use ironpod_kube::pod::{Container, PodStatus, Probe};
use ironpod_kube::quantity::IntOrString;
use ironpod_kube::workload::{DeploymentStatus, PodTemplateSpec, ReplicaStatus};
use ironpod_kube::{KubeStore, Stored};

use super::table::age;
use super::{kind_and_names, open, store_err, NamespaceArgs};
use crate::Failure;

/// Arguments of `kube describe`.
#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// KIND NAME… or KIND/NAME…
    #[arg(required = true)]
    args: Vec<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

fn field(out: &mut String, indent: usize, name: &str, value: impl std::fmt::Display) {
    let label = format!("{}{name}:", " ".repeat(indent));
    let _ = writeln!(out, "{label:<18}{value}");
}

fn map_text(m: &std::collections::BTreeMap<String, String>, indent: usize) -> String {
    if m.is_empty() {
        return "<none>".into();
    }
    let pad = " ".repeat(18 + indent);
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(&format!("\n{pad}"))
}

fn probe_text(p: &Probe) -> String {
    let how = if let Some(e) = &p.exec {
        format!("exec {:?}", e.command)
    } else if let Some(h) = &p.http_get {
        format!(
            "http-get http://{}:{}{}",
            h.host.clone().unwrap_or_default(),
            h.port,
            h.path.clone().unwrap_or_else(|| "/".into())
        )
    } else if let Some(t) = &p.tcp_socket {
        format!("tcp-socket {}:{}", t.host.clone().unwrap_or_default(), t.port)
    } else {
        String::new()
    };
    let t = ironpod_kubelet::probe::Timing::of(p);
    format!(
        "{how} delay={}s timeout={}s period={}s #success={} #failure={}",
        t.initial_delay.as_secs(),
        t.timeout.as_secs(),
        t.period.as_secs(),
        t.success_threshold,
        t.failure_threshold
    )
}

fn state_text(out: &mut String, title: &str, s: &ironpod_kube::pod::ContainerState) {
    if let Some(r) = &s.running {
        field(out, 4, title, "Running");
        field(out, 6, "Started", r.started_at.clone().unwrap_or_default());
    } else if let Some(t) = &s.terminated {
        field(out, 4, title, "Terminated");
        field(out, 6, "Reason", t.reason.clone().unwrap_or_default());
        if let Some(m) = &t.message {
            field(out, 6, "Message", m);
        }
        field(out, 6, "Exit Code", t.exit_code);
        field(out, 6, "Started", t.started_at.clone().unwrap_or_default());
        field(out, 6, "Finished", t.finished_at.clone().unwrap_or_default());
    } else if let Some(w) = &s.waiting {
        field(out, 4, title, "Waiting");
        field(out, 6, "Reason", w.reason.clone().unwrap_or_default());
        if let Some(m) = &w.message {
            field(out, 6, "Message", m);
        }
    } else {
        field(out, 4, title, "<none>");
    }
}

fn containers(
    out: &mut String,
    title: &str,
    list: &[Container],
    statuses: &[ironpod_kube::pod::ContainerStatus],
) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for c in list {
        let st = statuses.iter().find(|s| s.name == c.name);
        let _ = writeln!(out, "  {}:", c.name);
        if let Some(s) = st {
            field(out, 4, "Container ID", s.container_id.clone().unwrap_or_default());
        }
        field(out, 4, "Image", &c.image);
        if let Some(s) = st {
            field(out, 4, "Image ID", &s.image_id);
        }
        for p in &c.ports {
            let proto = format!("{:?}", p.protocol.unwrap_or_default());
            field(out, 4, "Port", format!("{}/{proto}", p.container_port));
            field(out, 4, "Host Port", format!("{}/{proto}", p.host_port.unwrap_or(0)));
        }
        if let Some(cmd) = &c.command {
            field(out, 4, "Command", cmd.join(" "));
        }
        if let Some(args) = &c.args {
            field(out, 4, "Args", args.join(" "));
        }
        if let Some(s) = st {
            state_text(out, "State", &s.state);
            state_text(out, "Last State", &s.last_state);
            field(out, 4, "Ready", if s.ready { "True" } else { "False" });
            field(out, 4, "Restart Count", s.restart_count);
        }
        if let Some(r) = &c.resources {
            for (which, m) in [("Limits", &r.limits), ("Requests", &r.requests)] {
                if !m.is_empty() {
                    let _ = writeln!(out, "    {which}:");
                    for (k, v) in m {
                        field(out, 6, k, v);
                    }
                }
            }
        }
        for (name, p) in [
            ("Liveness", &c.liveness_probe),
            ("Readiness", &c.readiness_probe),
            ("Startup", &c.startup_probe),
        ] {
            if let Some(p) = p {
                field(out, 4, name, probe_text(p));
            }
        }
        if c.env.is_empty() && c.env_from.is_empty() {
            field(out, 4, "Environment", "<none>");
        } else {
            let _ = writeln!(out, "    Environment:");
            for e in &c.env {
                let v = match (&e.value, &e.value_from) {
                    (_, Some(f)) => {
                        match (&f.config_map_key_ref, &f.secret_key_ref, &f.field_ref) {
                            (Some(k), _, _) => {
                                format!("<set to the key '{}' of config map '{}'>", k.key, k.name)
                            }
                            (_, Some(k), _) => {
                                format!("<set to the key '{}' in secret '{}'>", k.key, k.name)
                            }
                            (_, _, Some(r)) => format!(
                                "({}:{})",
                                r.api_version.clone().unwrap_or_else(|| "v1".into()),
                                r.field_path
                            ),
                            _ => String::new(),
                        }
                    }
                    (Some(v), None) => v.clone(),
                    (None, None) => String::new(),
                };
                let _ = writeln!(out, "      {}:  {v}", e.name);
            }
        }
        if c.volume_mounts.is_empty() {
            field(out, 4, "Mounts", "<none>");
        } else {
            let _ = writeln!(out, "    Mounts:");
            for m in &c.volume_mounts {
                let ro = if m.read_only == Some(true) { "ro" } else { "rw" };
                let _ = writeln!(out, "      {} from {} ({ro})", m.mount_path, m.name);
            }
        }
    }
}

fn template(out: &mut String, t: &PodTemplateSpec) {
    let _ = writeln!(out, "Pod Template:");
    field(out, 2, "Labels", map_text(&t.metadata.labels, 2));
    containers(out, "  Containers", &t.spec.containers, &[]);
}

fn events(out: &mut String, store: &KubeStore, o: &Stored) -> Result<(), Failure> {
    let evs = store.events(o.uid()).map_err(store_err)?;
    if evs.is_empty() {
        let _ = writeln!(out, "Events:            <none>");
        return Ok(());
    }
    let _ = writeln!(out, "Events:");
    let rows: Vec<Vec<String>> = evs
        .iter()
        .map(|e| {
            let when = match e.count {
                1 => age(Some(&e.last)),
                n => format!("{} (x{n} over {})", age(Some(&e.last)), age(Some(&e.first))),
            };
            vec![e.kind.clone(), e.reason.clone(), when, e.source.clone(), e.message.clone()]
        })
        .collect();
    let mut w = [4usize, 6, 4, 4];
    for r in &rows {
        for (i, c) in r.iter().take(4).enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |c: [&str; 5]| {
        format!(
            "  {:<a$}  {:<b$}  {:<d$}  {:<e$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            a = w[0],
            b = w[1],
            d = w[2],
            e = w[3]
        )
    };
    let _ = writeln!(out, "{}", line(["Type", "Reason", "Age", "From", "Message"]).trim_end());
    let _ = writeln!(out, "{}", line(["----", "------", "----", "----", "-------"]).trim_end());
    for r in rows {
        let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]).trim_end());
    }
    Ok(())
}

fn describe_one(store: &KubeStore, o: &Stored) -> Result<String, Failure> {
    let mut out = String::new();
    let m = &o.object.metadata;
    field(&mut out, 0, "Name", &m.name);
    if o.object.kind().namespaced() {
        field(&mut out, 0, "Namespace", o.namespace());
    }
    field(&mut out, 0, "CreationTimestamp", m.creation_timestamp.clone().unwrap_or_default());
    field(&mut out, 0, "Labels", map_text(&m.labels, 0));
    field(&mut out, 0, "Annotations", map_text(&m.annotations, 0));
    if let Some(r) = m.owner_references.iter().find(|r| r.controller == Some(true)) {
        field(&mut out, 0, "Controlled By", format!("{}/{}", r.kind, r.name));
    }
    match &o.object.body {
        Body::Pod(spec) => {
            let st: PodStatus = o.status_as();
            field(&mut out, 0, "Node", "localhost/127.0.0.1");
            field(
                &mut out,
                0,
                "Start Time",
                st.start_time.clone().unwrap_or_else(|| "<unset>".into()),
            );
            field(
                &mut out,
                0,
                "Status",
                if o.deleting() { "Terminating".to_string() } else { st.phase.clone() },
            );
            field(&mut out, 0, "IP", st.pod_ip.clone().unwrap_or_default());
            if let Some(msg) = &st.message {
                field(&mut out, 0, "Message", msg);
            }
            containers(
                &mut out,
                "Init Containers",
                &spec.init_containers,
                &st.init_container_statuses,
            );
            containers(&mut out, "Containers", &spec.containers, &st.container_statuses);
            let _ = writeln!(out, "Conditions:\n  Type              Status");
            for c in &st.conditions {
                let _ = writeln!(out, "  {:<18}{}", c.kind, c.status);
            }
            if !spec.volumes.is_empty() {
                let _ = writeln!(out, "Volumes:");
                for v in &spec.volumes {
                    let _ = writeln!(out, "  {}:", v.name);
                    let what = if let Some(e) = &v.empty_dir {
                        format!("EmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:     {}", e.medium.clone().unwrap_or_default())
                    } else if let Some(c) = &v.config_map {
                        format!(
                            "ConfigMap (a volume populated by a ConfigMap)\n    Name:       {}",
                            c.name
                        )
                    } else if let Some(s) = &v.secret {
                        format!(
                            "Secret (a volume populated by a Secret)\n    SecretName: {}",
                            s.secret_name
                        )
                    } else if let Some(h) = &v.host_path {
                        format!("HostPath (bare host directory volume)\n    Path:       {}", h.path)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(out, "    Type:       {what}");
                }
            }
        }
        Body::Deployment(d) => {
            let st: DeploymentStatus = o.status_as();
            field(&mut out, 0, "Selector", super::get_selector_text(&d.selector));
            field(
                &mut out,
                0,
                "Replicas",
                format!(
                    "{} desired | {} updated | {} total | {} available | {} unavailable",
                    d.replicas.unwrap_or(1),
                    st.updated_replicas,
                    st.replicas,
                    st.available_replicas,
                    st.unavailable_replicas
                ),
            );
            let strategy = d
                .strategy
                .as_ref()
                .and_then(|s| s.kind)
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|| "RollingUpdate".into());
            field(&mut out, 0, "StrategyType", &strategy);
            field(&mut out, 0, "MinReadySeconds", d.min_ready_seconds.unwrap_or(0));
            if strategy == "RollingUpdate" {
                let ru =
                    d.strategy.as_ref().and_then(|s| s.rolling_update.clone()).unwrap_or_default();
                let q = IntOrString::String("25%".into());
                field(
                    &mut out,
                    0,
                    "RollingUpdateStrategy",
                    format!(
                        "{} max unavailable, {} max surge",
                        ru.max_unavailable.unwrap_or(q.clone()),
                        ru.max_surge.unwrap_or(q)
                    ),
                );
            }
            template(&mut out, &d.template);
            let _ = writeln!(out, "Conditions:\n  Type           Status  Reason");
            for c in &st.conditions {
                let _ = writeln!(
                    out,
                    "  {:<15}{:<8}{}",
                    c.kind,
                    c.status,
                    c.reason.clone().unwrap_or_default()
                );
            }
        }
        Body::ReplicaSet(_) | Body::ReplicationController(_) => {
            if let Some(owner) = ironpod_controllers::replicas::Owner::of(o) {
                let st: ReplicaStatus = o.status_as();
                field(&mut out, 0, "Selector", super::get_selector_text(&owner.selector));
                let replicas = format!("{} current / {} desired", st.replicas, owner.replicas);
                field(&mut out, 0, "Replicas", replicas);
                let pods = format!("{} Running / {} Ready", st.replicas, st.ready_replicas);
                field(&mut out, 0, "Pods Status", pods);
                template(&mut out, &owner.template);
            }
        }
        Body::Service(s) => {
            field(&mut out, 0, "Selector", map_text(&s.selector, 0));
            field(
                &mut out,
                0,
                "Type",
                s.kind.map(|k| format!("{k:?}")).unwrap_or_else(|| "ClusterIP".into()),
            );
            field(&mut out, 0, "IP", s.cluster_ip.clone().unwrap_or_else(|| "<pending>".into()));
            for p in &s.ports {
                let proto = format!("{:?}", p.protocol.unwrap_or_default());
                field(
                    &mut out,
                    0,
                    "Port",
                    format!(
                        "{}  {}/{proto}",
                        p.name.clone().unwrap_or_else(|| "<unset>".into()),
                        p.port
                    ),
                );
                let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
                field(&mut out, 0, "TargetPort", format!("{target}/{proto}"));
                if let Some(n) = p.node_port {
                    field(
                        &mut out,
                        0,
                        "NodePort",
                        format!(
                            "{}  {n}/{proto}",
                            p.name.clone().unwrap_or_else(|| "<unset>".into())
                        ),
                    );
                }
            }
            let eps = store
                .get(ironpod_kube::Kind::Endpoints, o.namespace(), o.name())
                .map_err(store_err)?;
            let list: Vec<String> = match eps.map(|e| e.object.body) {
                Some(Body::Endpoints(subsets)) => subsets
                    .iter()
                    .flat_map(|s| {
                        s.addresses.iter().flat_map(move |a| {
                            s.ports.iter().map(move |p| format!("{}:{}", a.ip, p.port))
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            };
            field(
                &mut out,
                0,
                "Endpoints",
                if list.is_empty() { "<none>".into() } else { list.join(",") },
            );
        }
        Body::ConfigMap(d) => {
            let _ = writeln!(out, "\nData\n====");
            for (k, v) in &d.data {
                let _ = writeln!(out, "{k}:\n----\n{v}\n");
            }
            if !d.binary_data.is_empty() {
                let _ = writeln!(out, "\nBinaryData\n====");
                for (k, v) in d
                    .values()
                    .unwrap_or_default()
                    .iter()
                    .filter(|(k, _)| d.binary_data.contains_key(*k))
                {
                    let _ = writeln!(out, "{k}: {} bytes", v.len());
                }
            }
        }
        Body::Secret(d) => {
            field(&mut out, 0, "Type", d.kind.clone().unwrap_or_else(|| "Opaque".into()));
            let _ = writeln!(out, "\nData\n====");
            for (k, v) in d.values().unwrap_or_default() {
                let _ = writeln!(out, "{k}:  {} bytes", v.len());
            }
        }
        Body::Endpoints(subsets) => {
            let _ = writeln!(out, "Subsets:");
            for s in subsets {
                let ips = |v: &[ironpod_kube::service::EndpointAddress]| {
                    v.iter().map(|a| a.ip.clone()).collect::<Vec<_>>().join(",")
                };
                field(&mut out, 2, "Addresses", ips(&s.addresses));
                field(&mut out, 2, "NotReadyAddresses", ips(&s.not_ready_addresses));
            }
        }
        Body::Namespace => {
            field(&mut out, 0, "Status", if o.deleting() { "Terminating" } else { "Active" })
        }
    }
    events(&mut out, store, o)?;
    Ok(out)
}

/// `kube describe`.
pub fn describe(root: &Path, a: DescribeArgs) -> Result<i32, Failure> {
    let store = open(root)?;
    let targets = if a.args.len() == 1 && !a.args[0].contains('/') {
        let k = super::kind(&a.args[0])?;
        store
            .list(k, Some(a.ns.get()))
            .map_err(store_err)?
            .into_iter()
            .map(|o| (k, o.name().to_string()))
            .collect()
    } else {
        kind_and_names(&a.args)?
    };
    let mut first = true;
    let mut failed = false;
    for (k, n) in targets {
        match store.get(k, a.ns.get(), &n).map_err(store_err)? {
            Some(o) => {
                if !first {
                    println!();
                }
                first = false;
                print!("{}", describe_one(&store, &o)?);
            }
            None => {
                eprintln!("Error from server (NotFound): {} \"{n}\" not found", k.plural());
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}
