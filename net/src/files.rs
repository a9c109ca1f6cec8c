//! The name-service files a container gets (Docker's set): `/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf`.

use std::net::Ipv4Addr;

/// `/etc/hosts`: loopback names, the container's own name at its address, the other pods of
/// its network by name (those running when it starts), then `--add-host` entries.
pub fn hosts(
    hostname: &str,
    own: Option<Ipv4Addr>,
    peers: &[(String, Ipv4Addr)],
    extra: &[(String, String)],
) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (name, ip) in extra {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    for (name, ip) in peers {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    match own {
        Some(ip) => s.push_str(&format!("{ip}\t{hostname}\n")),
        None => s.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    s
}

/// `/etc/resolv.conf` from the host's: its search and options lines kept, name servers on
/// the host's loopback dropped (unreachable from a pod); `dns` (`--dns`) replaces the
/// servers.
pub fn resolv_conf(host: &str, dns: &[String]) -> String {
    let mut out = String::new();
    let mut servers = Vec::new();
    for line in host.lines() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next() {
                    let local = ip.starts_with("127.") || ip == "::1";
                    if !local {
                        servers.push(ip.to_string());
                    }
                }
            }
            Some("search" | "domain" | "options") => {
                out.push_str(t);
                out.push('\n');
            }
            _ => {}
        }
    }
    let servers = if dns.is_empty() { servers } else { dns.to_vec() };
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out
}

/// Checks an `--add-host NAME:IP` value; returns (name, ip).
pub fn parse_add_host(v: &str) -> Result<(String, String), String> {
    let (name, ip) =
        v.split_once(':').ok_or_else(|| format!("invalid --add-host {v:?}: expected NAME:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid --add-host {v:?}: {ip:?} is not an IP address"));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !valid {
        return Err(format!("invalid --add-host {v:?}: bad host name"));
    }
    Ok((name.to_string(), ip.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file() {
        let h = hosts(
            "web",
            Some(Ipv4Addr::new(10, 89, 0, 2)),
            &[("db".into(), Ipv4Addr::new(10, 89, 0, 3))],
            &[("api".into(), "10.1.1.1".into())],
        );
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("10.1.1.1\tapi\n") && h.contains("10.89.0.3\tdb\n"));
        assert!(h.ends_with("10.89.0.2\tweb\n"));
        assert!(hosts("x", None, &[], &[]).ends_with("127.0.1.1\tx\n"));
    }

    #[test]
    fn resolv_from_host() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch example.com\noptions edns0\n";
        assert_eq!(
            resolv_conf(host, &[]),
            "search example.com\noptions edns0\nnameserver 10.0.0.2\n"
        );
        assert_eq!(
            resolv_conf(host, &["9.9.9.9".into()]).lines().last(),
            Some("nameserver 9.9.9.9")
        );
        assert_eq!(resolv_conf("", &[]), "");
    }

    #[test]
    fn add_host_values() {
        assert_eq!(parse_add_host("db:10.0.0.3").unwrap(), ("db".into(), "10.0.0.3".into()));
        assert_eq!(parse_add_host("v6:[::1]").unwrap().1, "::1");
        for bad in ["db", "db:x", ":1.2.3.4", "a b:1.2.3.4", "a\n1.2.3.4 evil:1.2.3.4"] {
            assert!(parse_add_host(bad).is_err(), "{bad:?}");
        }
    }
}
