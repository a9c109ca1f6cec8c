//! Services: the Endpoints of each Service with a selector (its matching pods' addresses
//! and target ports, ready ones and not-ready ones apart), the rules that make a Service's
//! cluster IP reach its ready pods inside its namespace's network
//! (`ironpod_net::services`), node ports published on the host, and each Service served
//! in the other namespaces' networks (a proxy on its cluster IP there).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use ironpod_kube::allocate::SERVICE_RANGE;
use ironpod_kube::meta::ObjectMeta;
use ironpod_kube::object::{Body, Kind, Object};
use ironpod_kube::pod::{PodSpec, PodStatus, PortProtocol};
use ironpod_kube::quantity::IntOrString;
use ironpod_kube::service::{
    EndpointAddress, EndpointPort, EndpointSubset, ServicePort, ServiceSpec, ServiceType, TargetRef,
};
use ironpod_kube::{KubeStore, StoreError, Stored};
use ironpod_net::proxy::Publication;
use ironpod_net::services::ServiceRule;
use ironpod_net::{NetworkStore, PortMapping, Protocol};

use crate::ControllerError;

/// The annotation on Endpoints this controller keeps (with the Service's uid).
pub const MANAGED: &str = "ironpod.io/endpoints-of";
/// How often the rules are written again even when unchanged (a namespace made again
/// after a host reboot has none).
const REAPPLY: Duration = Duration::from_secs(10);

/// A node port as served: (service uid, node port, protocol, cluster IP, service port).
type NodePortKey = (String, i64, Protocol, Ipv4Addr, i64);

/// What the service controller keeps between passes.
pub struct Services {
    /// The host address node ports listen on.
    node_address: Ipv4Addr,
    /// The rules last written to each namespace's network, and when.
    applied: HashMap<String, (String, Instant)>,
    /// Node ports served: (service uid, node port, protocol, cluster IP, port) → the
    /// publication.
    node_ports: HashMap<NodePortKey, Publication>,
    /// Other namespaces' Services served in a namespace's network: (namespace, service
    /// uid, port, protocol) → the proxy.
    across: HashMap<(String, String, i64, Protocol), Publication>,
    /// The service addresses last put on each namespace's loopback, and when.
    local: HashMap<String, (Vec<Ipv4Addr>, Instant)>,
}

impl Services {
    /// Node ports listen on `node_address`.
    pub fn new(node_address: Ipv4Addr) -> Self {
        Services {
            node_address,
            applied: HashMap::new(),
            node_ports: HashMap::new(),
            across: HashMap::new(),
            local: HashMap::new(),
        }
    }
}

fn protocol(p: Option<PortProtocol>) -> Protocol {
    match p.unwrap_or_default() {
        PortProtocol::TCP => Protocol::Tcp,
        PortProtocol::UDP => Protocol::Udp,
    }
}

/// A service port's target on one pod (`None`: the pod has no port of that name).
fn target(p: &ServicePort, pod: &PodSpec) -> Option<i64> {
    match &p.target_port {
        None => Some(p.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port),
    }
}

/// The Endpoints subsets of a Service over `pods` (its namespace's): pods grouped by the
/// target ports they resolve to.
pub fn subsets(s: &ServiceSpec, pods: &[Stored]) -> Vec<EndpointSubset> {
    let mut groups: BTreeMap<Vec<(Option<String>, i64, PortProtocol)>, EndpointSubset> =
        BTreeMap::new();
    for p in pods {
        let Body::Pod(spec) = &p.object.body else { continue };
        if p.deleting()
            || !ironpod_kube::selector::LabelSelector::of(&s.selector)
                .matches(&p.object.metadata.labels)
        {
            continue;
        }
        let st: PodStatus = p.status_as();
        let Some(ip) = st.pod_ip.clone() else { continue };
        if st.phase == "Succeeded" || st.phase == "Failed" {
            continue;
        }
        let ports: Option<Vec<_>> = s
            .ports
            .iter()
            .map(|sp| {
                target(sp, spec).map(|t| (sp.name.clone(), t, sp.protocol.unwrap_or_default()))
            })
            .collect();
        let Some(ports) = ports else { continue };
        let subset = groups.entry(ports.clone()).or_insert_with(|| EndpointSubset {
            ports: ports
                .iter()
                .map(|(name, port, proto)| EndpointPort {
                    name: name.clone(),
                    port: *port,
                    protocol: Some(*proto),
                })
                .collect(),
            ..Default::default()
        });
        let address = EndpointAddress {
            ip,
            target_ref: Some(TargetRef {
                kind: "Pod".into(),
                name: p.name().into(),
                namespace: p.namespace().into(),
                uid: p.uid().into(),
            }),
        };
        match st.is_ready() {
            true => subset.addresses.push(address),
            false => subset.not_ready_addresses.push(address),
        }
    }
    groups.into_values().collect()
}

/// One pass: Endpoints, then rules and node ports.
pub fn sync(store: &mut KubeStore, root: &Path, st: &mut Services) -> Result<(), ControllerError> {
    let services = store.list(Kind::Service, None)?;
    let pods = store.list(Kind::Pod, None)?;
    for s in &services {
        let Body::Service(spec) = &s.object.body else { continue };
        if spec.selector.is_empty() {
            continue;
        }
        let ns_pods: Vec<Stored> =
            pods.iter().filter(|p| p.namespace() == s.namespace()).cloned().collect();
        let want = subsets(spec, &ns_pods);
        crate::each("endpoints of service", s.name(), || write_endpoints(store, s, want));
    }
    // Endpoints this controller made whose Service is gone.
    for e in store.list(Kind::Endpoints, None)? {
        let Some(of) = e.object.metadata.annotations.get(MANAGED) else { continue };
        if !services.iter().any(|s| s.uid() == of) {
            store.delete(Kind::Endpoints, e.namespace(), e.name())?;
        }
    }
    let endpoints = store.list(Kind::Endpoints, None)?;
    let mut namespaces: BTreeMap<String, Vec<ServiceRule>> = BTreeMap::new();
    for s in &services {
        let Body::Service(spec) = &s.object.body else { continue };
        let rules = namespaces.entry(s.namespace().to_string()).or_default();
        let Some(ip) = spec.cluster_ip.as_deref().and_then(|i| i.parse().ok()) else { continue };
        let eps = endpoints.iter().find(|e| e.namespace() == s.namespace() && e.name() == s.name());
        for p in &spec.ports {
            let mut targets = Vec::new();
            if let Some(Body::Endpoints(subsets)) = eps.map(|e| &e.object.body) {
                for sub in subsets {
                    let Some(ep) = sub.ports.iter().find(|q| {
                        q.name == p.name
                            && q.protocol.unwrap_or_default() == p.protocol.unwrap_or_default()
                    }) else {
                        continue;
                    };
                    for a in &sub.addresses {
                        if let Ok(addr) = a.ip.parse() {
                            targets.push((addr, ep.port as u16));
                        }
                    }
                }
            }
            rules.push(ServiceRule {
                ip,
                port: p.port as u16,
                protocol: protocol(p.protocol),
                endpoints: targets,
            });
        }
    }
    // Every namespace with a network gets its rules (none when it has no Service: a
    // Service's rules go with it).
    for ns in store.list(Kind::Namespace, None)? {
        namespaces.entry(ns.name().to_string()).or_default();
    }
    let nets = NetworkStore::open(root).map_err(|e| ControllerError::Other(e.to_string()))?;
    let mut namespace_of_net = HashMap::new();
    for (ns, rules) in &namespaces {
        let Some(name) = ironpod_kubelet::runner::podvm::namespace_network_of(root, ns) else {
            continue;
        };
        let Ok(net) = nets.find(&name) else { continue };
        let path = match ironpod_net::ensure_network(root, &net, false) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(namespace = %ns, "its network: {e}");
                continue;
            }
        };
        namespace_of_net.insert(ns.clone(), path.clone());
        let script = ironpod_net::services::ruleset(rules, SERVICE_RANGE);
        let fresh = st.applied.get(ns).is_some_and(|(s, t)| *s == script && t.elapsed() < REAPPLY);
        if !fresh {
            match ironpod_net::services::apply(&path, rules, SERVICE_RANGE) {
                Ok(()) => {
                    st.applied.insert(ns.clone(), (script, Instant::now()));
                }
                Err(e) => tracing::warn!(namespace = %ns, "service rules: {e}"),
            }
        }
    }
    node_ports(st, &services, &namespace_of_net);
    across(st, &services, &namespace_of_net);
    Ok(())
}

/// Serves each Service in every other namespace's network (on its cluster IP, an address of
/// that network's loopback), through a proxy that connects from the Service's own network:
/// the way between namespaces, whose pods cannot reach each other directly.
fn across(st: &mut Services, services: &[Stored], nets: &HashMap<String, std::path::PathBuf>) {
    type Want =
        ((String, String, i64, Protocol), Ipv4Addr, std::path::PathBuf, std::path::PathBuf, String);
    let mut wanted: Vec<Want> = Vec::new();
    let mut addresses: HashMap<&str, Vec<Ipv4Addr>> = HashMap::new();
    for (ns, path) in nets {
        let mine = addresses.entry(ns.as_str()).or_default();
        for s in services.iter().filter(|s| s.namespace() != ns) {
            let Body::Service(spec) = &s.object.body else { continue };
            let Some(ip) = spec.cluster_ip.as_deref().and_then(|i| i.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let Some(home) = nets.get(s.namespace()) else { continue };
            mine.push(ip);
            for p in &spec.ports {
                let key = (ns.clone(), s.uid().to_string(), p.port, protocol(p.protocol));
                wanted.push((key, ip, path.clone(), home.clone(), s.name().to_string()));
            }
        }
    }
    // Proxies of Services gone or changed go first (their addresses may be reused).
    st.across.retain(|k, _| wanted.iter().any(|(w, ..)| w == k));
    for (ns, mut addrs) in addresses {
        addrs.sort();
        addrs.dedup();
        let fresh = st.local.get(ns).is_some_and(|(a, t)| *a == addrs && t.elapsed() < REAPPLY);
        if fresh {
            continue;
        }
        match ironpod_net::services::set_local_addresses(&nets[ns], &addrs, SERVICE_RANGE) {
            Ok(()) => {
                st.local.insert(ns.to_string(), (addrs, Instant::now()));
            }
            Err(e) => tracing::warn!(namespace = %ns, "service addresses: {e}"),
        }
    }
    for (key, ip, path, home, name) in wanted {
        if st.across.contains_key(&key) {
            continue;
        }
        let m = PortMapping {
            host_ip: ip,
            host_port: key.2 as u16,
            pod_port: key.2 as u16,
            protocol: key.3,
        };
        // Bound inside this namespace's network, connecting from the Service's.
        let made = ironpod_net::netns::run_in(&path, move || {
            ironpod_net::proxy::publish_until_dropped(&[m], &home, ip).map_err(|e| e.to_string())
        });
        match made {
            Ok((_, publication)) => {
                st.across.insert(key, publication);
            }
            Err(e) => tracing::warn!(service = %name, namespace = %key.0, "serve it across: {e}"),
        }
    }
}

/// Publishes the node ports of NodePort Services (whose namespace has a network) and stops
/// those of Services gone.
fn node_ports(st: &mut Services, services: &[Stored], nets: &HashMap<String, std::path::PathBuf>) {
    let mut wanted = Vec::new();
    for s in services {
        let Body::Service(spec) = &s.object.body else { continue };
        if spec.kind != Some(ServiceType::NodePort) {
            continue;
        }
        let Some(ip) = spec.cluster_ip.as_deref().and_then(|i| i.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        let Some(ns) = nets.get(s.namespace()) else { continue };
        for p in &spec.ports {
            let Some(node_port) = p.node_port else { continue };
            let key = (s.uid().to_string(), node_port, protocol(p.protocol), ip, p.port);
            wanted.push((key, ns.clone(), s.name().to_string()));
        }
    }
    // Those of Services gone or changed go first: a changed one binds its port again.
    st.node_ports.retain(|k, _| wanted.iter().any(|(w, _, _)| w == k));
    for (key, ns, name) in wanted {
        if st.node_ports.contains_key(&key) {
            continue;
        }
        let (_, node_port, proto, ip, port) = key.clone();
        let m = PortMapping {
            host_ip: st.node_address,
            host_port: node_port as u16,
            pod_port: port as u16,
            protocol: proto,
        };
        match ironpod_net::proxy::publish_until_dropped(&[m], &ns, ip) {
            Ok((_, publication)) => {
                st.node_ports.insert(key, publication);
            }
            Err(e) => tracing::warn!(service = %name, "node port {node_port}: {e}"),
        }
    }
}

fn write_endpoints(
    store: &mut KubeStore,
    s: &Stored,
    subsets: Vec<EndpointSubset>,
) -> Result<(), ControllerError> {
    let body = Body::Endpoints(subsets);
    match store.get(Kind::Endpoints, s.namespace(), s.name())? {
        Some(cur)
            if cur.object.body == body
                && cur.object.metadata.annotations.get(MANAGED).map(String::as_str)
                    == Some(s.uid()) =>
        {
            Ok(())
        }
        Some(cur) => {
            let mut o = cur.object.clone();
            o.body = body;
            o.metadata.annotations.insert(MANAGED.into(), s.uid().into());
            match store.update(o, &cur) {
                Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        None => {
            let o = Object {
                metadata: ObjectMeta {
                    name: s.name().into(),
                    namespace: Some(s.namespace().into()),
                    labels: s.object.metadata.labels.clone(),
                    annotations: [(MANAGED.to_string(), s.uid().to_string())].into(),
                    ..Default::default()
                },
                body,
            };
            match store.create(o) {
                Ok(_) | Err(StoreError::Exists { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironpod_kube::parse_manifest;

    #[test]
    fn endpoints_follow_readiness_and_named_ports() {
        let d = tempfile::tempdir().unwrap();
        let mut store = KubeStore::open(d.path()).unwrap();
        let m = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: web}}\nspec: {containers: [{name: c, image: x, ports: [{containerPort: 8080, name: http}]}]}\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: {app: web}}\nspec: {containers: [{name: c, image: x, ports: [{containerPort: 9090, name: http}]}]}\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata: {name: other, labels: {app: db}}\nspec: {containers: [{name: c, image: x}]}\n";
        for o in parse_manifest(m, "t").unwrap() {
            store.apply(o).unwrap();
        }
        let ready = |store: &mut KubeStore, name: &str, ip: &str, ok: bool| {
            let p = store.must_get(Kind::Pod, "default", name).unwrap();
            let st = serde_json::json!({"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ok {"True"} else {"False"}}]});
            store.set_status(Kind::Pod, "default", name, p.uid(), &st).unwrap();
        };
        ready(&mut store, "a", "10.89.0.2", true);
        ready(&mut store, "b", "10.89.0.3", false);
        ready(&mut store, "other", "10.89.0.4", true);
        let mut st = Services::new(Ipv4Addr::LOCALHOST);
        sync(&mut store, d.path(), &mut st).unwrap();
        let e = store.must_get(Kind::Endpoints, "default", "web").unwrap();
        let Body::Endpoints(subsets) = &e.object.body else { panic!() };
        assert_eq!(subsets.len(), 2, "two port numbers, two subsets: {subsets:?}");
        let a = subsets.iter().find(|s| s.ports[0].port == 8080).unwrap();
        assert_eq!(a.addresses[0].ip, "10.89.0.2");
        let b = subsets.iter().find(|s| s.ports[0].port == 9090).unwrap();
        assert!(b.addresses.is_empty() && b.not_ready_addresses[0].ip == "10.89.0.3");
        ready(&mut store, "b", "10.89.0.3", true);
        sync(&mut store, d.path(), &mut st).unwrap();
        let e = store.must_get(Kind::Endpoints, "default", "web").unwrap();
        let Body::Endpoints(subsets) = &e.object.body else { panic!() };
        assert!(subsets.iter().all(|s| s.addresses.len() == 1));
        store.delete(Kind::Service, "default", "web").unwrap();
        sync(&mut store, d.path(), &mut st).unwrap();
        assert!(store.get(Kind::Endpoints, "default", "web").unwrap().is_none());
    }
}
