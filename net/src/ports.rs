//! Published ports (`-p [IP:][HOSTPORT:]PODPORT[/tcp|udp]`): what the user asked for.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::NetworkError;

/// Where published ports listen when no address is named: the host's loopback only (a
/// pod is reachable from elsewhere only when the user says so).
pub const DEFAULT_HOST_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to listen on.
    pub host_ip: Ipv4Addr,
    /// Host port; 0 picks a free one.
    pub host_port: u16,
    /// The pod's port.
    pub pod_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}->{}/{}", self.host_ip, self.host_port, self.pod_port, self.protocol)
    }
}

fn range(s: &str, what: &str, zero_ok: bool) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) if !zero_ok => Err(format!("invalid {what} port {p:?}")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("invalid {what} port {p:?}")),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a == 0 || b < a {
                return Err(format!("invalid {what} port range {s:?}"));
            }
            Ok((a, b))
        }
        None => one(s).map(|p| (p, p)),
    }
}

/// Parses one `-p` value into its mappings (a range gives one per port).
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, NetworkError> {
    let bad = |why: String| NetworkError::Invalid(format!("invalid -p {spec:?}: {why}"));
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => return Err(bad(format!("unknown protocol {other:?}"))),
        None => (spec, Protocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, pod) = match parts.as_slice() {
        [pod] => (None, "", *pod),
        [host, pod] => (None, *host, *pod),
        [ip, host, pod] => (Some(*ip), *host, *pod),
        _ => return Err(bad("expected [IP:][HOSTPORT:]PODPORT[/tcp|udp]".into())),
    };
    let host_ip = match ip {
        None | Some("") => DEFAULT_HOST_IP,
        Some(ip) => ip.parse().map_err(|_| bad(format!("{ip:?} is not an IPv4 address")))?,
    };
    let (p0, p1) = range(pod, "pod", false).map_err(bad)?;
    let (h0, h1) = if host.is_empty() { (0, 0) } else { range(host, "host", true).map_err(bad)? };
    let n = p1 - p0;
    if host.is_empty() || h0 == 0 {
        if h1 != 0 {
            return Err(bad("invalid host port range".into()));
        }
    } else if h1 - h0 != n {
        return Err(bad("the host and pod port ranges differ in length".into()));
    }
    Ok((0..=n)
        .map(|i| PortMapping {
            host_ip,
            host_port: if h0 == 0 { 0 } else { h0 + i },
            pod_port: p0 + i,
            protocol,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortMapping {
        let v = parse_publish(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v[0]
    }

    #[test]
    fn forms() {
        let lo = Ipv4Addr::LOCALHOST;
        assert_eq!(
            one("8080:80"),
            PortMapping { host_ip: lo, host_port: 8080, pod_port: 80, protocol: Protocol::Tcp }
        );
        assert_eq!(one("80").host_port, 0);
        assert_eq!(one("127.0.0.1:8080:80/udp").protocol, Protocol::Udp);
        assert_eq!(one("127.0.0.2::53/udp").host_ip, Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(one("127.0.0.2::53/udp").host_port, 0);
        let r = parse_publish("9000-9002:80-82").unwrap();
        assert_eq!(
            r.iter().map(|m| (m.host_port, m.pod_port)).collect::<Vec<_>>(),
            [(9000, 80), (9001, 81), (9002, 82)]
        );
        assert_eq!(parse_publish("80-81").unwrap().len(), 2);
        assert_eq!(one("0:80").host_port, 0);
    }

    #[test]
    fn hostile_values() {
        for bad in [
            "",
            "0",
            "x",
            "80/sctp",
            "65536:80",
            "8080:0",
            "1:2:3:4",
            "localhost:80:80",
            "::1:80:80",
            "9000-9001:80",
            "90-80:80-90",
            "80-70",
            "8080:80/",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad:?}");
        }
    }
}
