//! One object of any supported kind, and reading manifests: multi-document YAML or JSON
//! (also `kind: List`), each document strictly (an unknown or unsupported field is an error
//! naming its path), then checked ([`crate::validate`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::{ConfigMapData, SecretData};
use crate::meta::ObjectMeta;
use crate::pod::PodSpec;
use crate::service::{EndpointSubset, ServiceSpec};
use crate::workload::{DeploymentSpec, ReplicaSetSpec, ReplicationControllerSpec};

/// The kinds ironpod knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// v1 Namespace.
    Namespace,
    /// v1 ConfigMap.
    ConfigMap,
    /// v1 Secret.
    Secret,
    /// v1 Service.
    Service,
    /// v1 Endpoints.
    Endpoints,
    /// v1 Pod.
    Pod,
    /// v1 ReplicationController.
    ReplicationController,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// apps/v1 Deployment.
    Deployment,
}

/// Every kind, in the order `apply` stores them (what others refer to first).
pub const KINDS: [Kind; 9] = [
    Kind::Namespace,
    Kind::ConfigMap,
    Kind::Secret,
    Kind::Service,
    Kind::Endpoints,
    Kind::Pod,
    Kind::ReplicationController,
    Kind::ReplicaSet,
    Kind::Deployment,
];

impl Kind {
    /// Its `kind:` name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Pod => "Pod",
            Kind::ReplicationController => "ReplicationController",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
        }
    }

    /// Its `apiVersion:`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ReplicaSet | Kind::Deployment => "apps/v1",
            _ => "v1",
        }
    }

    /// Its plural resource name (`pods`), as kubectl prints `pod/web`-style names in
    /// lowercase singular.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::Pod => "pods",
            Kind::ReplicationController => "replicationcontrollers",
            Kind::ReplicaSet => "replicasets",
            Kind::Deployment => "deployments",
        }
    }

    /// Whether its objects live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// The lowercase singular (`deployment`), as kubectl names objects (`deployment/web`).
    pub fn singular(self) -> String {
        self.name().to_ascii_lowercase()
    }

    /// A kind as the command line names it: singular, plural, short name or `Kind`, any case;
    /// also `deployment.apps`-style names.
    pub fn parse(s: &str) -> Option<Kind> {
        let l = s.to_ascii_lowercase();
        let l = l.strip_suffix(".apps").or_else(|| l.strip_suffix(".v1")).unwrap_or(&l);
        KINDS.into_iter().find(|k| {
            let short: &[&str] = match k {
                Kind::Namespace => &["ns"],
                Kind::ConfigMap => &["cm"],
                Kind::Secret => &[],
                Kind::Service => &["svc"],
                Kind::Endpoints => &["ep"],
                Kind::Pod => &["po"],
                Kind::ReplicationController => &["rc"],
                Kind::ReplicaSet => &["rs"],
                Kind::Deployment => &["deploy"],
            };
            l == k.singular() || l == k.plural() || short.contains(&l)
        })
    }

    /// The kind of a manifest's `apiVersion` and `kind`.
    pub fn of(api_version: &str, kind: &str) -> Result<Kind, String> {
        let k = KINDS.into_iter().find(|k| k.name() == kind).ok_or_else(|| {
            format!(
                "kind {kind:?} is not supported (ironpod takes {})",
                KINDS.map(Kind::name).join(", ")
            )
        })?;
        if k.api_version() != api_version {
            return Err(format!("{kind} is apiVersion {:?}, not {api_version:?}", k.api_version()));
        }
        Ok(k)
    }
}

/// What an object holds besides its metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A namespace.
    Namespace,
    /// A ConfigMap's data.
    ConfigMap(ConfigMapData),
    /// A Secret's data.
    Secret(SecretData),
    /// A Service's spec.
    Service(ServiceSpec),
    /// An Endpoints' subsets.
    Endpoints(Vec<EndpointSubset>),
    /// A pod's spec.
    Pod(PodSpec),
    /// A ReplicationController's spec.
    ReplicationController(ReplicationControllerSpec),
    /// A ReplicaSet's spec.
    ReplicaSet(ReplicaSetSpec),
    /// A Deployment's spec.
    Deployment(DeploymentSpec),
}

/// One object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Its metadata.
    pub metadata: ObjectMeta,
    /// What it holds.
    pub body: Body,
}

/// A document of a kind with a `spec`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpecDoc<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: S,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigMapDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    binary_data: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    immutable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(rename = "type", default)]
    kind_name: Option<String>,
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    string_data: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    immutable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EndpointsDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    subsets: Vec<EndpointSubset>,
}

/// Deserialises `v` as `T`; an error names the field's path.
fn strict<T: DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let inner = match inner.starts_with("unknown field") {
            true => format!("not a field ironpod supports here ({inner})"),
            false => inner,
        };
        match path.as_str() {
            "." | "" => inner,
            p => format!("{p}: {inner}"),
        }
    })
}

impl Object {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match &self.body {
            Body::Namespace => Kind::Namespace,
            Body::ConfigMap(_) => Kind::ConfigMap,
            Body::Secret(_) => Kind::Secret,
            Body::Service(_) => Kind::Service,
            Body::Endpoints(_) => Kind::Endpoints,
            Body::Pod(_) => Kind::Pod,
            Body::ReplicationController(_) => Kind::ReplicationController,
            Body::ReplicaSet(_) => Kind::ReplicaSet,
            Body::Deployment(_) => Kind::Deployment,
        }
    }

    /// `kind/name`, as kubectl prints it (`deployment.apps/web`).
    pub fn reference(&self) -> String {
        let k = self.kind();
        match k.api_version() {
            "apps/v1" => format!("{}.apps/{}", k.singular(), self.metadata.name),
            _ => format!("{}/{}", k.singular(), self.metadata.name),
        }
    }

    /// Reads one document (its `status` is the system's and is left out).
    pub fn from_value(mut v: Value) -> Result<Object, String> {
        let m = v.as_object_mut().ok_or("a document must be a mapping")?;
        m.remove("status");
        let field = |m: &Map<String, Value>, f: &str| -> Result<String, String> {
            match m.get(f) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("{f}: must be a string")),
                None => Err(format!("{f}: missing")),
            }
        };
        let kind = Kind::of(&field(m, "apiVersion")?, &field(m, "kind")?)?;
        let (metadata, body) = match kind {
            Kind::Namespace => {
                let d: NamespaceDoc = strict(v)?;
                (d.metadata, Body::Namespace)
            }
            Kind::ConfigMap => {
                let d: ConfigMapDoc = strict(v)?;
                let data = ConfigMapData {
                    data: d.data,
                    binary_data: d.binary_data,
                    immutable: d.immutable,
                };
                (d.metadata, Body::ConfigMap(data))
            }
            Kind::Secret => {
                let d: SecretDoc = strict(v)?;
                let data = SecretData {
                    kind: d.kind_name,
                    data: d.data,
                    string_data: d.string_data,
                    immutable: d.immutable,
                };
                (d.metadata, Body::Secret(data))
            }
            Kind::Endpoints => {
                let d: EndpointsDoc = strict(v)?;
                (d.metadata, Body::Endpoints(d.subsets))
            }
            Kind::Service => spec_doc(v, Body::Service)?,
            Kind::Pod => spec_doc(v, Body::Pod)?,
            Kind::ReplicationController => spec_doc(v, Body::ReplicationController)?,
            Kind::ReplicaSet => spec_doc(v, Body::ReplicaSet)?,
            Kind::Deployment => spec_doc(v, Body::Deployment)?,
        };
        Ok(Object { metadata, body })
    }

    /// The object as a document (`apiVersion`, `kind`, `metadata`, its fields), without
    /// status.
    pub fn to_value(&self) -> Value {
        let k = self.kind();
        let mut m = Map::new();
        m.insert("apiVersion".into(), json!(k.api_version()));
        m.insert("kind".into(), json!(k.name()));
        m.insert("metadata".into(), to_json(&self.metadata));
        let mut merge = |v: Value| {
            if let Value::Object(o) = v {
                m.extend(o);
            }
        };
        match &self.body {
            Body::Namespace => {}
            Body::ConfigMap(d) => merge(to_json(d)),
            Body::Secret(d) => merge(to_json(d)),
            Body::Endpoints(s) => merge(json!({ "subsets": s })),
            Body::Service(s) => merge(json!({ "spec": s })),
            Body::Pod(s) => merge(json!({ "spec": s })),
            Body::ReplicationController(s) => merge(json!({ "spec": s })),
            Body::ReplicaSet(s) => merge(json!({ "spec": s })),
            Body::Deployment(s) => merge(json!({ "spec": s })),
        }
        Value::Object(m)
    }

    /// The spec part (what `generation` counts changes of): the body without metadata.
    pub fn spec_value(&self) -> Value {
        let mut v = self.to_value();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
        }
        v
    }
}

fn spec_doc<S: DeserializeOwned>(v: Value, f: fn(S) -> Body) -> Result<(ObjectMeta, Body), String> {
    let d: SpecDoc<S> = strict(v)?;
    Ok((d.metadata, f(d.spec)))
}

fn to_json<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// Reads every document of a manifest (YAML, one or more `---`-separated documents, or
/// JSON; a `kind: List` gives its items). `source` names the input in errors.
pub fn parse_manifest(text: &str, source: &str) -> Result<Vec<Object>, String> {
    let mut out = Vec::new();
    let docs = serde_yaml_ng::Deserializer::from_str(text);
    for (i, doc) in docs.enumerate() {
        let n = i + 1;
        let v = Value::deserialize(doc).map_err(|e| format!("{source}: document {n}: {e}"))?;
        if v.is_null() {
            continue;
        }
        let items = match v.get("kind").and_then(Value::as_str) {
            Some("List") => match v.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => return Err(format!("{source}: document {n}: a List needs items")),
            },
            _ => vec![v],
        };
        for item in items {
            let what = describe(&item);
            let o = Object::from_value(item)
                .and_then(|o| crate::validate::check(&o).map(|()| o))
                .map_err(|e| format!("{source}: document {n}{what}: {e}"))?;
            out.push(o);
        }
    }
    Ok(out)
}

/// ` (Kind name)` of a raw document, for errors.
fn describe(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str);
    let name = v.pointer("/metadata/name").and_then(Value::as_str);
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} {n})"),
        (Some(k), None) => format!(" ({k})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: web
    image: demo
    ports: [{containerPort: 80, name: http}]
    livenessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 2
status:
  phase: Running
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 3
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: demo, resources: {limits: {cpu: 500m, memory: 64Mi}}}]
"#;

    #[test]
    fn reads_documents_and_round_trips() {
        let objs = parse_manifest(POD, "test.yaml").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].kind(), Kind::Pod);
        assert_eq!(objs[0].reference(), "pod/web");
        assert_eq!(objs[1].reference(), "deployment.apps/api");
        let back = Object::from_value(objs[1].to_value()).unwrap();
        assert_eq!(back, objs[1]);
        let json = serde_json::to_string(&objs[0].to_value()).unwrap();
        assert_eq!(parse_manifest(&json, "j").unwrap()[0], objs[0]);
    }

    #[test]
    fn unknown_fields_name_their_path() {
        let bad = POD.replace("periodSeconds: 2", "periodSecond: 2");
        let e = parse_manifest(&bad, "f.yaml").unwrap_err();
        assert!(e.starts_with("f.yaml: document 1 (Pod web): "), "{e}");
        assert!(e.contains("spec.containers[0].livenessProbe.periodSecond"), "{e}");
        let bad = POD.replace("  containers:\n", "  nodeSelector: {a: b}\n  containers:\n");
        let e = parse_manifest(&bad, "f.yaml").unwrap_err();
        assert!(e.contains("spec.nodeSelector: not a field ironpod supports"), "{e}");
        let e = parse_manifest("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: b, ports: [{containerPort: x}]}]}", "s").unwrap_err();
        assert!(e.contains("spec.containers[0].ports[0].containerPort"), "{e}");
    }

    #[test]
    fn kinds_and_lists() {
        assert_eq!(Kind::parse("deploy"), Some(Kind::Deployment));
        assert_eq!(Kind::parse("Deployments.apps"), Some(Kind::Deployment));
        assert_eq!(Kind::parse("svc"), Some(Kind::Service));
        assert_eq!(Kind::parse("po"), Some(Kind::Pod));
        assert_eq!(Kind::parse("nodes"), None);
        assert!(Kind::of("v1", "Deployment").unwrap_err().contains("apps/v1"));
        assert!(Kind::of("v1", "CronJob").unwrap_err().contains("not supported"));
        let list = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"v"}}]}"#;
        let o = parse_manifest(list, "l").unwrap();
        assert_eq!(o[0].kind(), Kind::ConfigMap);
        assert!(parse_manifest("- a\n- b\n", "x").unwrap_err().contains("mapping"));
        assert!(parse_manifest("a: [", "x").unwrap_err().starts_with("x: document 1"));
        assert!(parse_manifest("---\n---\n", "x").unwrap().is_empty());
    }
}
