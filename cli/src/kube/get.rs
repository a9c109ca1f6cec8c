//! `kube get`: tables (kubectl's columns), `-o wide|json|yaml|name`, `-l`, `-A`, `-w`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use ironpod_kube::object::{Body, Kind};
use ironpod_kube::selector::LabelSelector;
use ironpod_kube::service::ServiceType;
use ironpod_kube::workload::{DeploymentStatus, ReplicaStatus};
use ironpod_kube::{KubeStore, Stored};
use serde_json::{json, Value};

use super::table::{age, pod_ready_restarts, pod_status_word, print};
use super::{kind, kind_and_names, open, store_err, NamespaceArgs};
use crate::Failure;

/// Arguments of `kube get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// KIND [NAME…], or KIND/NAME…
    #[arg(required = true)]
    args: Vec<String>,
    /// Only objects with these labels (`a=b,c!=d,e in (x,y)`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Output: wide, json, yaml or name.
    #[arg(short = 'o', long)]
    output: Option<String>,
    /// After listing, print objects again as they change.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Objects of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// A LABELS column.
    #[arg(long)]
    show_labels: bool,
    #[command(flatten)]
    ns: NamespaceArgs,
}

#[derive(Clone, Copy, PartialEq)]
enum Output {
    Table,
    Wide,
    Json,
    Yaml,
    Name,
}

fn output(o: Option<&str>) -> Result<Output, Failure> {
    Ok(match o {
        None => Output::Table,
        Some("wide") => Output::Wide,
        Some("json") => Output::Json,
        Some("yaml") => Output::Yaml,
        Some("name") => Output::Name,
        Some(o) => {
            return Err(Failure::Other(format!(
                "error: unable to match a printer suitable for the output format \"{o}\", allowed formats are: json,name,wide,yaml"
            )))
        }
    })
}

/// The table columns of a kind (wide adds some).
fn header(k: Kind, wide: bool) -> Vec<&'static str> {
    let mut h: Vec<&str> = match k {
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        Kind::Deployment => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        Kind::ReplicaSet | Kind::ReplicationController => {
            vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
        }
        Kind::Service => vec!["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        Kind::Endpoints => vec!["NAME", "ENDPOINTS", "AGE"],
        Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
        Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
        Kind::Namespace => vec!["NAME", "STATUS", "AGE"],
    };
    if wide {
        match k {
            Kind::Pod => h.extend(["IP", "NODE"]),
            Kind::Deployment | Kind::ReplicaSet | Kind::ReplicationController => {
                h.extend(["CONTAINERS", "IMAGES", "SELECTOR"])
            }
            Kind::Service => h.push("SELECTOR"),
            _ => {}
        }
    }
    h
}

/// A selector as kubectl prints it.
pub fn selector_text(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for r in &s.match_expressions {
        use ironpod_kube::selector::Operator::*;
        parts.push(match r.operator {
            In => format!("{} in ({})", r.key, r.values.join(",")),
            NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
            Exists => r.key.clone(),
            DoesNotExist => format!("!{}", r.key),
        });
    }
    parts.join(",")
}

fn labels_text(o: &Stored) -> String {
    let l = &o.object.metadata.labels;
    if l.is_empty() {
        return "<none>".into();
    }
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// One object's table row.
fn row(o: &Stored, wide: bool) -> Vec<String> {
    let name = o.name().to_string();
    let created = o.object.metadata.creation_timestamp.as_deref();
    let template_cols = |t: &ironpod_kube::workload::PodTemplateSpec, sel: String| {
        let names: Vec<&str> = t.spec.containers.iter().map(|c| c.name.as_str()).collect();
        let images: Vec<&str> = t.spec.containers.iter().map(|c| c.image.as_str()).collect();
        vec![names.join(","), images.join(","), sel]
    };
    let mut r = match &o.object.body {
        Body::Pod(_) => {
            let (ready, restarts) = pod_ready_restarts(o);
            let mut r = vec![name, ready, pod_status_word(o), restarts.to_string(), age(created)];
            if wide {
                let st: ironpod_kube::pod::PodStatus = o.status_as();
                r.push(st.pod_ip.unwrap_or_else(|| "<none>".into()));
                r.push("localhost".into());
            }
            r
        }
        Body::Deployment(d) => {
            let st: DeploymentStatus = o.status_as();
            let want = d.replicas.unwrap_or(1);
            let mut r = vec![
                name,
                format!("{}/{want}", st.ready_replicas),
                st.updated_replicas.to_string(),
                st.available_replicas.to_string(),
                age(created),
            ];
            if wide {
                r.extend(template_cols(&d.template, selector_text(&d.selector)));
            }
            r
        }
        Body::ReplicaSet(_) | Body::ReplicationController(_) => {
            let Some(owner) = ironpod_controllers::replicas::Owner::of(o) else {
                return vec![name];
            };
            let st: ReplicaStatus = o.status_as();
            let mut r = vec![
                name,
                owner.replicas.to_string(),
                st.replicas.to_string(),
                st.ready_replicas.to_string(),
                age(created),
            ];
            if wide {
                r.extend(template_cols(&owner.template, selector_text(&owner.selector)));
            }
            r
        }
        Body::Service(s) => {
            let kind = match s.kind {
                Some(ServiceType::NodePort) => "NodePort",
                _ => "ClusterIP",
            };
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| {
                    let proto = match p.protocol.unwrap_or_default() {
                        ironpod_kube::pod::PortProtocol::TCP => "TCP",
                        ironpod_kube::pod::PortProtocol::UDP => "UDP",
                    };
                    match p.node_port {
                        Some(n) => format!("{}:{n}/{proto}", p.port),
                        None => format!("{}/{proto}", p.port),
                    }
                })
                .collect();
            let ip = s.cluster_ip.clone().unwrap_or_else(|| "<pending>".into());
            let mut r = vec![name, kind.into(), ip, "<none>".into(), ports.join(","), age(created)];
            if wide {
                r.push(match s.selector.is_empty() {
                    true => "<none>".into(),
                    false => selector_text(&LabelSelector::of(&s.selector)),
                });
            }
            r
        }
        Body::Endpoints(subsets) => {
            let eps: Vec<String> = subsets
                .iter()
                .flat_map(|s| {
                    s.addresses.iter().flat_map(move |a| {
                        s.ports.iter().map(move |p| format!("{}:{}", a.ip, p.port))
                    })
                })
                .collect();
            let shown = match eps.len() {
                0 => "<none>".to_string(),
                n if n > 3 => format!("{} + {} more...", eps[..3].join(","), n - 3),
                _ => eps.join(","),
            };
            vec![name, shown, age(created)]
        }
        Body::ConfigMap(d) => {
            vec![name, (d.data.len() + d.binary_data.len()).to_string(), age(created)]
        }
        Body::Secret(d) => vec![
            name,
            d.kind.clone().unwrap_or_else(|| "Opaque".into()),
            d.data.len().to_string(),
            age(created),
        ],
        Body::Namespace => {
            vec![name, if o.deleting() { "Terminating" } else { "Active" }.into(), age(created)]
        }
    };
    if r.is_empty() {
        r.push(String::new());
    }
    r
}

/// An object as `-o json|yaml` shows it.
pub fn document(o: &Stored) -> Value {
    o.to_value()
}

fn emit(values: Vec<Value>, single: bool, out: Output) -> Result<(), Failure> {
    let v = match single {
        true => values.into_iter().next().unwrap_or(Value::Null),
        false => {
            json!({"apiVersion": "v1", "kind": "List", "items": values, "metadata": {"resourceVersion": ""}})
        }
    };
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        _ => print!("{}", serde_yaml_ng::to_string(&v).map_err(|e| Failure::Other(e.to_string()))?),
    }
    Ok(())
}

fn list(
    store: &KubeStore,
    k: Kind,
    ns: Option<&str>,
    sel: Option<&LabelSelector>,
) -> Result<Vec<Stored>, Failure> {
    let all = store.list(k, ns).map_err(store_err)?;
    Ok(all
        .into_iter()
        .filter(|o| sel.is_none_or(|s| s.matches(&o.object.metadata.labels)))
        .collect())
}

/// `kube get`.
pub fn get(root: &Path, a: GetArgs) -> Result<i32, Failure> {
    let out = output(a.output.as_deref())?;
    let store = open(root)?;
    let sel = a
        .selector
        .as_deref()
        .map(LabelSelector::parse)
        .transpose()
        .map_err(|e| Failure::Other(format!("error: {e}")))?;
    let ns = (!a.all_namespaces).then(|| a.ns.get().to_string());
    let named = a.args.len() > 1 || a.args[0].contains('/');
    let requested = if named { kind_and_names(&a.args)?.len() } else { 0 };
    if named && sel.is_some() {
        return Err(Failure::Other(
            "error: name cannot be provided when a selector is specified".into(),
        ));
    }
    if named && a.watch {
        let asked = kind_and_names(&a.args)?;
        if asked.iter().any(|(k, _)| *k != asked[0].0) {
            return Err(Failure::Other(
                "error: you may only specify a single resource type".into(),
            ));
        }
    }
    let mut groups: Vec<(Kind, Vec<Stored>)> = Vec::new();
    let mut failed = false;
    if named {
        for (k, n) in kind_and_names(&a.args)? {
            match store.get(k, a.ns.get(), &n).map_err(store_err)? {
                Some(o) => match groups.last_mut() {
                    Some((gk, v)) if *gk == k => v.push(o),
                    _ => groups.push((k, vec![o])),
                },
                None => {
                    eprintln!("Error from server (NotFound): {} \"{n}\" not found", k.plural());
                    failed = true;
                }
            }
        }
    } else {
        let k = kind(&a.args[0])?;
        groups.push((k, list(&store, k, ns.as_deref(), sel.as_ref())?));
    }
    let count: usize = groups.iter().map(|(_, v)| v.len()).sum();
    match out {
        Output::Json | Output::Yaml => {
            let values: Vec<Value> =
                groups.iter().flat_map(|(_, v)| v.iter().map(document)).collect();
            if count > 0 || !named {
                emit(values, requested == 1, out)?;
            }
        }
        Output::Name => {
            for (_, v) in &groups {
                for o in v {
                    println!("{}", o.object.reference());
                }
            }
        }
        Output::Table | Output::Wide => {
            if count == 0 && !named {
                match &ns {
                    Some(n) if groups[0].0.namespaced() => {
                        eprintln!("No resources found in {n} namespace.")
                    }
                    _ => eprintln!("No resources found"),
                }
            }
            for (k, v) in &groups {
                print_table(*k, v, out == Output::Wide, a.show_labels, a.all_namespaces, true);
            }
        }
    }
    if a.watch {
        // Named objects are watched by name, of one kind (as kubectl's field selector).
        let names: Option<Vec<String>> = named
            .then(|| kind_and_names(&a.args))
            .transpose()?
            .map(|asked| asked.into_iter().map(|(_, n)| n).collect());
        let k = match named {
            true => kind_and_names(&a.args)?[0].0,
            false => groups[0].0,
        };
        let first: Vec<Stored> = groups.into_iter().flat_map(|(_, v)| v).collect();
        let ns = if named { Some(a.ns.get().to_string()) } else { ns };
        // Whether a YAML document was printed already (an empty list is one).
        let printed = !named || count > 0;
        watch(
            &store,
            (k, ns.as_deref(), sel.as_ref(), names.as_deref()),
            (&first, printed),
            (out, a.show_labels, a.all_namespaces),
        )?;
    }
    Ok(i32::from(failed))
}

fn print_table(k: Kind, v: &[Stored], wide: bool, labels: bool, all_ns: bool, with_header: bool) {
    if v.is_empty() {
        return;
    }
    let mut h = header(k, wide);
    if labels {
        h.push("LABELS");
    }
    if all_ns && k.namespaced() {
        h.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|o| {
            let mut r = row(o, wide);
            if labels {
                r.push(labels_text(o));
            }
            if all_ns && k.namespaced() {
                r.insert(0, o.namespace().to_string());
            }
            r
        })
        .collect();
    print(&h, &rows, with_header);
}

/// Prints objects again whenever they change, until interrupted.
/// What a watch follows: a kind, in a namespace (or all), with a selector, by name.
type Watched<'a> = (Kind, Option<&'a str>, Option<&'a LabelSelector>, Option<&'a [String]>);

fn watch(
    store: &KubeStore,
    (k, ns, sel, names): Watched<'_>,
    (first, mut printed): (&[Stored], bool),
    (out, labels, all_ns): (Output, bool, bool),
) -> Result<(), Failure> {
    let mut seen: HashMap<String, i64> =
        first.iter().map(|o| (o.uid().to_string(), o.version())).collect();
    let mut header_done = !first.is_empty();
    let mut version = store.version().map_err(store_err)?;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let v = store.version().map_err(store_err)?;
        if v == version {
            continue;
        }
        version = v;
        let mut now = list(store, k, ns, sel)?;
        if let Some(names) = names {
            now.retain(|o| names.contains(&o.object.metadata.name));
        }
        let changed: Vec<Stored> =
            now.into_iter().filter(|o| seen.get(o.uid()) != Some(&o.version())).collect();
        for o in &changed {
            seen.insert(o.uid().to_string(), o.version());
        }
        if changed.is_empty() {
            continue;
        }
        match out {
            Output::Json | Output::Yaml => {
                for o in &changed {
                    // YAML documents one after another need their separator.
                    if out == Output::Yaml && printed {
                        println!("---");
                    }
                    printed = true;
                    emit(vec![document(o)], true, out)?;
                }
            }
            Output::Name => changed.iter().for_each(|o| println!("{}", o.object.reference())),
            Output::Table | Output::Wide => {
                print_table(k, &changed, out == Output::Wide, labels, all_ns, !header_done);
                header_done = true;
            }
        }
    }
}
