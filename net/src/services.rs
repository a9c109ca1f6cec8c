//! Kubernetes Services inside a network's namespace: a cluster IP and port become the
//! ready pods behind them, chosen at random per connection (nftables DNAT, as kube-proxy's
//! nftables mode does), for traffic the pods send (prerouting) and for connections made
//! from the namespace itself (output: node ports published on the host connect from there).
//! Service traffic is masqueraded behind the bridge's address, so a pod that reaches itself
//! through its Service gets its replies, and a service address nothing answers for is
//! refused at once instead of leaving the namespace.
//!
//! One table per network namespace (`ip ironpod-services`), replaced whole in one nft
//! transaction.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::error::NetworkError;
use crate::ports::Protocol;

/// The table's name.
pub const TABLE: &str = "ironpod-services";

/// One service port and the pods behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRule {
    /// The cluster IP.
    pub ip: Ipv4Addr,
    /// The service's port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The ready pods: address and target port.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// The nft script that makes the table hold `rules` (for the service range `range`).
pub fn ruleset(rules: &[ServiceRule], range: (Ipv4Addr, u8)) -> String {
    let (net, prefix) = range;
    let mut s = format!("table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    let mut jumps = String::new();
    let mut chains = String::new();
    for (i, r) in rules.iter().enumerate() {
        if r.endpoints.is_empty() {
            continue;
        }
        let proto = match r.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let targets: Vec<String> =
            (0..r.endpoints.len()).map(|j| format!("{j} : jump svc{i}_ep{j}")).collect();
        jumps.push_str(&format!(
            "    ip daddr {} {proto} dport {} numgen random mod {} vmap {{ {} }}\n",
            r.ip,
            r.port,
            r.endpoints.len(),
            targets.join(", ")
        ));
        for (j, (ip, port)) in r.endpoints.iter().enumerate() {
            chains.push_str(&format!(
                "  chain svc{i}_ep{j} {{\n    meta l4proto {proto} dnat to {ip}:{port}\n  }}\n"
            ));
        }
    }
    s.push_str("  chain services {\n");
    s.push_str(&jumps);
    s.push_str("  }\n");
    s.push_str(&chains);
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }\n");
    s.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n");
    s.push_str(&format!(
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ct status dnat ct original ip daddr {net}/{prefix} masquerade\n  }}\n"
    ));
    s.push_str(&format!(
        "  chain refuse {{\n    type filter hook forward priority filter; policy accept;\n    ip daddr {net}/{prefix} reject\n  }}\n"
    ));
    s.push_str(&format!(
        "  chain refuse_local {{\n    type filter hook output priority filter; policy accept;\n    ip daddr {net}/{prefix} reject\n  }}\n"
    ));
    s.push_str("}\n");
    s
}

/// Replaces the services table of the network namespace at `ns`.
pub fn apply(ns: &Path, rules: &[ServiceRule], range: (Ipv4Addr, u8)) -> Result<(), NetworkError> {
    let script = ruleset(rules, range);
    crate::netns::run_in(ns, move || {
        // A child made by this thread starts in its namespace.
        crate::egress::load_ruleset(&script)
    })
    .map_err(NetworkError::Plumb)
}

/// Makes the service-range addresses on the namespace's loopback exactly `ips` (each /32):
/// where other namespaces' Services are served in it (by the controller's proxies).
pub fn set_local_addresses(
    ns: &Path,
    ips: &[Ipv4Addr],
    range: (Ipv4Addr, u8),
) -> Result<(), NetworkError> {
    let want: Vec<Ipv4Addr> = ips.to_vec();
    crate::netns::run_in(ns, move || {
        let ip = |args: &[&str]| -> Result<String, String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("run ip (package iproute2): {e}"))?;
            match out.status.success() {
                true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
                false => Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        };
        let listed = ip(&["-4", "-o", "addr", "show", "dev", "lo"])?;
        let have = local_addresses(&listed, range);
        for a in have.iter().filter(|a| !want.contains(a)) {
            ip(&["addr", "del", &format!("{a}/32"), "dev", "lo"])?;
        }
        for a in want.iter().filter(|a| !have.contains(a)) {
            ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        }
        Ok(())
    })
    .map_err(NetworkError::Plumb)
}

/// The service-range addresses in `ip -4 -o addr show` output.
fn local_addresses(listed: &str, (net, prefix): (Ipv4Addr, u8)) -> Vec<Ipv4Addr> {
    let mask = u32::MAX << (32 - prefix);
    listed
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet")?;
            let a: Ipv4Addr = w.next()?.split('/').next()?.parse().ok()?;
            (u32::from(a) & mask == u32::from(net) & mask).then_some(a)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_local_service_addresses() {
        let listed = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n1: lo    inet 10.96.0.7/32 scope global lo\\       valid_lft forever\n";
        assert_eq!(
            local_addresses(listed, ("10.96.0.0".parse().unwrap(), 16)),
            ["10.96.0.7".parse::<Ipv4Addr>().unwrap()]
        );
    }

    use super::*;
    use std::process::Stdio;

    fn rules() -> Vec<ServiceRule> {
        vec![
            ServiceRule {
                ip: "10.96.0.1".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                endpoints: vec![
                    ("10.89.0.2".parse().unwrap(), 8080),
                    ("10.89.0.3".parse().unwrap(), 8080),
                ],
            },
            ServiceRule {
                ip: "10.96.0.2".parse().unwrap(),
                port: 53,
                protocol: Protocol::Udp,
                endpoints: vec![],
            },
            ServiceRule {
                ip: "10.96.0.2".parse().unwrap(),
                port: 53,
                protocol: Protocol::Udp,
                endpoints: vec![("10.89.0.4".parse().unwrap(), 5353)],
            },
        ]
    }

    #[test]
    fn rules_balance_and_refuse() {
        let s = ruleset(&rules(), ("10.96.0.0".parse().unwrap(), 16));
        assert!(s.contains("ip daddr 10.96.0.1 tcp dport 80 numgen random mod 2 vmap { 0 : jump svc0_ep0, 1 : jump svc0_ep1 }"), "{s}");
        assert!(
            s.contains("chain svc0_ep1 {\n    meta l4proto tcp dnat to 10.89.0.3:8080\n  }"),
            "{s}"
        );
        assert!(!s.contains("svc1_"), "a port without endpoints gets no jump: it is refused");
        assert!(s.contains(
            "ip daddr 10.96.0.2 udp dport 53 numgen random mod 1 vmap { 0 : jump svc2_ep0 }"
        ));
        assert!(s.contains("ip daddr 10.96.0.0/16 reject"));
        assert!(s.starts_with("table ip ironpod-services\ndelete table ip ironpod-services\n"));
    }

    /// nft itself accepts the rules (check mode: nothing is changed).
    #[test]
    fn nft_accepts_the_ruleset() {
        let script = ruleset(&rules(), ("10.96.0.0".parse().unwrap(), 16));
        let mut c = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft (apt install nftables)");
        use std::io::Write;
        c.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}\n{script}", String::from_utf8_lossy(&out.stderr));
    }
}
