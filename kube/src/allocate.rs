//! What the store hands out when a Service is stored, as Kubernetes' API server does: a
//! cluster IP from the service range, and node ports from 30000–32767. A Service updated
//! without them keeps the ones it has.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::object::{Body, Object};
use crate::service::{ServiceSpec, ServiceType};

/// The range cluster IPs come from.
pub const SERVICE_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 16);
/// The node port range.
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// Whether `ip` is in the service range.
pub fn in_range(ip: Ipv4Addr) -> bool {
    let (net, prefix) = SERVICE_RANGE;
    let mask = u32::MAX << (32 - prefix);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// What other Services hold.
#[derive(Debug, Default)]
pub struct Taken {
    /// Cluster IPs.
    pub ips: HashSet<Ipv4Addr>,
    /// Node ports.
    pub node_ports: HashSet<i64>,
}

impl Taken {
    /// Adds what a stored Service holds.
    pub fn add(&mut self, s: &ServiceSpec) {
        if let Some(ip) = s.cluster_ip.as_deref().and_then(|i| i.parse().ok()) {
            self.ips.insert(ip);
        }
        self.node_ports.extend(s.ports.iter().filter_map(|p| p.node_port));
    }
}

/// Fills in a Service's cluster IP and node ports (`old`: the stored one it updates).
pub fn service(o: &mut Object, old: Option<&Object>, taken: &Taken) -> Result<(), String> {
    let Body::Service(s) = &mut o.body else { return Ok(()) };
    let old = match old.map(|o| &o.body) {
        Some(Body::Service(s)) => Some(s),
        _ => None,
    };
    let ip = match (&s.cluster_ip, old.and_then(|o| o.cluster_ip.clone())) {
        (Some(ip), _) => {
            let parsed: Ipv4Addr =
                ip.parse().map_err(|_| format!("spec.clusterIP: {ip:?} is not an IPv4 address"))?;
            if !in_range(parsed) {
                let (net, p) = SERVICE_RANGE;
                return Err(format!("spec.clusterIP: {ip} is not in the service range {net}/{p}"));
            }
            if old.and_then(|o| o.cluster_ip.as_deref()) != Some(ip.as_str())
                && taken.ips.contains(&parsed)
            {
                return Err(format!("spec.clusterIP: provided IP {ip} is already allocated"));
            }
            parsed
        }
        (None, Some(kept)) => {
            kept.parse().map_err(|_| "stored clusterIP is unreadable".to_string())?
        }
        (None, None) => {
            let (net, prefix) = SERVICE_RANGE;
            let size = 1u32 << (32 - prefix);
            (1..size - 1)
                .map(|i| Ipv4Addr::from(u32::from(net) + i))
                .find(|ip| !taken.ips.contains(ip))
                .ok_or("the service range is full")?
        }
    };
    s.cluster_ip = Some(ip.to_string());
    s.cluster_ips = vec![ip.to_string()];
    if s.kind != Some(ServiceType::NodePort) {
        return Ok(());
    }
    let mut mine: HashSet<i64> = HashSet::new();
    for (i, p) in s.ports.iter_mut().enumerate() {
        let kept = old.and_then(|o| {
            o.ports
                .iter()
                .find(|q| q.port == p.port && q.protocol == p.protocol)
                .and_then(|q| q.node_port)
        });
        let n = match (p.node_port, kept) {
            (Some(n), k) => {
                if k != Some(n) && taken.node_ports.contains(&n) || !mine.insert(n) {
                    return Err(format!(
                        "spec.ports[{i}].nodePort: provided port {n} is already allocated"
                    ));
                }
                n
            }
            (None, Some(k)) => {
                mine.insert(k);
                k
            }
            (None, None) => {
                let n = NODE_PORTS
                    .clone()
                    .find(|n| !taken.node_ports.contains(n) && !mine.contains(n))
                    .ok_or("the node port range is full")?;
                mine.insert(n);
                n
            }
        };
        p.node_port = Some(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_manifest;

    fn svc(text: &str) -> Object {
        parse_manifest(
            &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {text}"),
            "t",
        )
        .unwrap()
        .remove(0)
    }

    fn ip(o: &Object) -> String {
        match &o.body {
            Body::Service(s) => s.cluster_ip.clone().unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn allocates_and_keeps() {
        let mut taken = Taken::default();
        let mut a = svc("{ports: [{port: 80}]}");
        service(&mut a, None, &taken).unwrap();
        assert_eq!(ip(&a), "10.96.0.1");
        if let Body::Service(s) = &a.body {
            taken.add(s);
        }
        let mut b2 = svc("{type: NodePort, ports: [{port: 80, name: a}, {port: 81, name: b}]}");
        service(&mut b2, None, &taken).unwrap();
        assert_eq!(ip(&b2), "10.96.0.2");
        let Body::Service(s2) = &b2.body else { panic!() };
        assert_eq!(
            s2.ports.iter().map(|p| p.node_port.unwrap()).collect::<Vec<_>>(),
            [30000, 30001]
        );
        // An update without them keeps them.
        let mut again = svc("{type: NodePort, ports: [{port: 80, name: a}, {port: 81, name: b}]}");
        taken.add(s2);
        service(&mut again, Some(&b2), &taken).unwrap();
        assert_eq!(again, b2);
        // A requested one must be in range and free.
        let mut c = svc("{clusterIP: 10.96.0.1, ports: [{port: 80}]}");
        assert!(service(&mut c, None, &taken).unwrap_err().contains("already allocated"));
        let mut d = svc("{clusterIP: 10.1.0.1, ports: [{port: 80}]}");
        assert!(service(&mut d, None, &taken).unwrap_err().contains("service range"));
        let mut b = svc("{type: NodePort, ports: [{port: 80, name: a, nodePort: 30001}]}");
        assert!(service(&mut b, None, &taken).unwrap_err().contains("30001"));
        assert!(
            in_range("10.96.255.254".parse().unwrap()) && !in_range("10.97.0.1".parse().unwrap())
        );
    }
}
