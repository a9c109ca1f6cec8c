//! Egress: pods of a network (unless it is `--internal`) reach the host's own networks and
//! beyond, with their addresses masqueraded behind the host's, as Docker's bridge networks
//! do.
//!
//! Each network's namespace gets an uplink: a veth whose host end is `ipu<id>` in the host's
//! namespace (the namespace of the process that makes the network). Neither end has an
//! address: the host routes the network's subnet to its end, the network's namespace
//! routes everything else to the uplink, and proxy ARP on both ends answers for the other
//! side. The host forwards (`net.ipv4.ip_forward=1`) and one nftables table per state root
//! (`ip ironpod-<hash of the root>`, rebuilt whole from that root's database whenever one
//! of its networks appears or goes; one per root, so tenants with roots of their own do not
//! replace each other's rules) decides what pods may reach:
//!
//! - their subnets are masqueraded leaving through any other interface; new connections
//!   from outside into a network are dropped; traffic between networks is dropped (they
//!   stay isolated, as Docker's are);
//! - nothing of the host itself: packets from an uplink to the host's own addresses are
//!   dropped (input), except DNS to a name server of the host's `/etc/resolv.conf`; a
//!   published port reaches its pod from the network's namespace, not through the uplink;
//! - never link-local addresses (169.254.0.0/16: cloud metadata services), and not the
//!   private ranges (10/8, 172.16/12, 192.168/16, 100.64/10) unless the network was made
//!   with `--allow-private` (name servers of the host stay reachable for DNS either way);
//! - no IPv6 at all: the uplink's host end has IPv6 off, so no link-local address of the
//!   host answers there.
//!
//! When ironpod is what turned forwarding on (it was off: the host was no router), the
//! table also drops forwarding that does not involve a pod network, so the host does not
//! become a router for anything else. A host that routes for other engines (Docker,
//! libvirt) should have forwarding on before ironpod starts; then this guard stays off.

use std::path::Path;
use std::process::{Command, Stdio};

use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::NetworkError;
use crate::netns;
use crate::rtnl::{connect as connect_netlink, find, must_find, runtime, up};
use crate::store::{Network, NetworkStore};

/// The uplink's end inside a network's namespace.
pub const UPLINK: &str = "uplink";
/// Host-side uplink names start with this (the nftables rules match it).
pub const HOST_PREFIX: &str = "ipu";
/// The start of our nftables tables' names (family `ip`; one per state root,
/// [`table_name`]). Versions before one table per state root used this name alone: every
/// rebuild removes such a table, whose rules would otherwise outlive the upgrade.
pub const TABLE: &str = "ironpod";

/// The uplink's host-side name for network `net`.
pub fn host_end(net: &Network) -> String {
    format!("{HOST_PREFIX}{}", &net.id[..10])
}

fn plumb(e: impl std::fmt::Display) -> NetworkError {
    NetworkError::Plumb(e.to_string())
}

/// Writes a sysctl of the calling thread's network namespace.
fn sysctl(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("write {path}: {e}"))
}

/// Gives network `net` (its namespace at `ns`, bridge up) its uplink, from the calling
/// thread's namespace (the host's). Idempotent: an existing uplink is kept.
pub fn connect(net: &Network, ns: &Path) -> Result<(), NetworkError> {
    let host = host_end(net);
    let subnet = net.subnet()?;
    let ns_file =
        std::fs::File::open(ns).map_err(|e| plumb(format!("open {}: {e}", ns.display())))?;
    runtime()
        .and_then(|rt| {
            rt.block_on(async {
                use std::os::fd::AsRawFd;
                let h = connect_netlink().await?;
                if find(&h, &host).await?.is_none() {
                    let peer =
                        LinkUnspec::new_with_name(UPLINK).setns_by_fd(ns_file.as_raw_fd()).build();
                    let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(
                        rtnetlink::packet_route::link::InfoKind::Veth,
                    )
                    .name(host.clone())
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .build();
                    h.link()
                        .add(veth)
                        .execute()
                        .await
                        .map_err(|e| format!("create {host}: {e}"))?;
                }
                let index = must_find(&h, &host).await?.header.index;
                up(&h, index, &host).await?;
                add_route(&h, subnet.network, subnet.prefix, index).await
            })
        })
        .map_err(plumb)?;
    sysctl(&format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"), "1").map_err(plumb)?;
    // No IPv6 on the host's end: no link-local address of the host for pods to reach.
    let v6 = format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6");
    if Path::new(&v6).exists() {
        sysctl(&v6, "1").map_err(plumb)?;
    }
    enable_forwarding().map_err(plumb)?;
    netns::run_in(ns, || {
        sysctl(&format!("/proc/sys/net/ipv4/conf/{UPLINK}/proxy_arp"), "1")?;
        sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        runtime()?.block_on(async {
            let h = connect_netlink().await?;
            let index = must_find(&h, UPLINK).await?.header.index;
            up(&h, index, UPLINK).await?;
            add_route(&h, std::net::Ipv4Addr::UNSPECIFIED, 0, index).await
        })
    })
    .map_err(plumb)
}

/// Routes `dest/prefix` out of interface `index`, on link (idempotent).
async fn add_route(
    h: &rtnetlink::Handle,
    dest: std::net::Ipv4Addr,
    prefix: u8,
    index: u32,
) -> Result<(), String> {
    let route = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
        .destination_prefix(dest, prefix)
        .output_interface(index)
        .build();
    match h.route().add(route).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        r => r.map_err(|e| format!("route {dest}/{prefix}: {e}")),
    }
}

/// The nftables table of the state root `root`.
pub fn table_name(root: &Path) -> String {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    // FNV-1a: a stable short tag of the path.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{TABLE}-{:08x}", h as u32)
}

/// Link-local addresses (cloud metadata services live at 169.254.169.254).
pub const LINK_LOCAL: &str = "169.254.0.0/16";
/// The private ranges blocked unless a network allows them.
pub const PRIVATE: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];

/// One network's part in the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRules {
    /// Its uplink's host end.
    pub uplink: String,
    /// Its subnet.
    pub subnet: String,
    /// Whether its pods may reach the private ranges.
    pub allow_private: bool,
}

/// What the rules need to know of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The IPv4 name servers of the host's `/etc/resolv.conf` (DNS to them stays allowed).
    pub nameservers: Vec<std::net::Ipv4Addr>,
    /// Forwarding was off before ironpod turned it on: drop forwarding without a pod network.
    pub guard_forwarding: bool,
}

fn set<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| format!("{i}")).collect();
    format!("{{ {} }}", v.join(", "))
}

/// The whole table `table` for these networks (replaces what was there, atomically).
pub fn ruleset(table: &str, nets: &[NetRules], host: &HostFacts) -> String {
    let any = format!("\"{HOST_PREFIX}*\"");
    let mut nat = String::new();
    let mut input = String::new();
    let mut forward = format!("        iifname {any} oifname {any} drop\n");
    if !nets.is_empty() {
        let uplinks = set(nets.iter().map(|n| format!("\"{}\"", n.uplink)));
        nat = format!(
            "        ip saddr {} oifname != {any} masquerade\n",
            set(nets.iter().map(|n| &n.subnet))
        );
        let dns = if host.nameservers.is_empty() {
            String::new()
        } else {
            format!(
                "        iifname {uplinks} ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept\n",
                set(&host.nameservers)
            )
        };
        input.push_str(&format!("        iifname {uplinks} ct state established,related accept\n"));
        input.push_str(&dns);
        input.push_str(&format!("        iifname {uplinks} drop\n"));
        // DNS first: a host's name server may itself be link-local (169.254.169.254 on
        // some clouds) or private.
        forward.push_str(&dns);
        forward.push_str(&format!("        iifname {uplinks} ip daddr {LINK_LOCAL} drop\n"));
        let blocking: Vec<String> =
            nets.iter().filter(|n| !n.allow_private).map(|n| format!("\"{}\"", n.uplink)).collect();
        if !blocking.is_empty() {
            forward.push_str(&format!(
                "        iifname {} ip daddr {} drop\n",
                set(blocking),
                set(PRIVATE)
            ));
        }
        forward
            .push_str(&format!("        oifname {uplinks} ct state established,related accept\n"));
        forward.push_str(&format!("        oifname {uplinks} drop\n"));
    }
    if host.guard_forwarding {
        forward.push_str(&format!("        iifname != {any} oifname != {any} drop\n"));
    }
    format!(
        "table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {table}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \x20   chain postrouting {{\n\
         \x20       type nat hook postrouting priority srcnat; policy accept;\n\
         {nat}\
         \x20   }}\n\
         \x20   chain input {{\n\
         \x20       type filter hook input priority filter; policy accept;\n\
         {input}\
         \x20   }}\n\
         \x20   chain forward {{\n\
         \x20       type filter hook forward priority filter; policy accept;\n\
         {forward}\
         \x20   }}\n\
         }}\n"
    )
}

/// The IPv4 name servers of a `resolv.conf` (loopback ones are the host's own resolver,
/// which pods never use).
pub fn nameservers(resolv: &str) -> Vec<std::net::Ipv4Addr> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback() && !a.is_unspecified())
        .collect()
}

/// Where ironpod notes that it turned forwarding on in the calling thread's network
/// namespace (under /run: forwarding goes back off with a reboot, and so does the note).
/// Named after the namespace's inode number; it holds the namespace's cookie, because an
/// inode number is used again once its namespace is gone and a cookie never is.
fn forwarding_note() -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()).unwrap_or(0);
    Path::new(ironpod_images::private::RUN_ROOT).join(format!("forwarding-turned-on.{ns}"))
}

/// The calling thread's network namespace's cookie (`SO_NETNS_COOKIE`, Linux 5.14), as text;
/// empty where the kernel has none.
fn netns_cookie() -> String {
    let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else { return String::new() };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the socket is open; cookie and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        cookie.to_string()
    } else {
        String::new()
    }
}

/// Whether ironpod turned forwarding on in this namespace (its note is there and is this
/// namespace's, not a gone one's with the same inode number).
fn forwarding_turned_on() -> bool {
    std::fs::read_to_string(forwarding_note()).is_ok_and(|c| c == netns_cookie())
}

/// Turns IPv4 forwarding on in the calling thread's namespace, noting it when it was off.
fn enable_forwarding() -> Result<(), String> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let was = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    if was.trim() == "0" {
        ironpod_images::private::private_run_root()
            .map_err(|e| format!("create {}: {e}", ironpod_images::private::RUN_ROOT))?;
        let note = forwarding_note();
        std::fs::write(&note, netns_cookie())
            .map_err(|e| format!("write {}: {e}", note.display()))?;
    }
    sysctl(path, "1")
}

/// Rebuilds the nftables table of the state root `root` from its networks with egress.
pub fn sync(root: &Path) -> Result<(), NetworkError> {
    let nets: Vec<NetRules> = NetworkStore::open(root)?
        .list()?
        .into_iter()
        .filter(|n| !n.internal)
        .map(|n| NetRules {
            uplink: host_end(&n),
            subnet: n.subnet,
            allow_private: n.allow_private,
        })
        .collect();
    let host = HostFacts {
        nameservers: nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
        guard_forwarding: forwarding_turned_on(),
    };
    load_ruleset(&ruleset(&table_name(root), &nets, &host)).map_err(plumb)
}

/// Hands `script` to `nft -f -` (run in the calling thread's network namespace): the one
/// way ironpod changes nftables, here and for Services.
pub(crate) fn load_ruleset(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run nft (package nftables): {e}"))?;
    // nft's own message says more than the broken pipe of its early exit would.
    let written = child.stdin.take().map(|mut stdin| {
        use std::io::Write;
        stdin.write_all(script.as_bytes())
    });
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    match (out.status.success(), written) {
        (false, _) => Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())),
        (true, Some(Err(e))) => Err(format!("nft: {e}")),
        (true, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(uplink: &str, subnet: &str, allow_private: bool) -> NetRules {
        NetRules { uplink: uplink.into(), subnet: subnet.into(), allow_private }
    }

    #[test]
    fn ruleset_masquerades_filters_and_guards() {
        let host =
            HostFacts { nameservers: vec!["10.0.0.2".parse().unwrap()], guard_forwarding: true };
        let nets = [net("ipuaaa", "10.88.0.0/16", false), net("ipubbb", "10.89.3.0/24", true)];
        let r = ruleset("ironpod-1234abcd", &nets, &host);
        assert!(r.starts_with(
            "table ip ironpod\ndelete table ip ironpod\n\
             table ip ironpod-1234abcd\ndelete table ip ironpod-1234abcd\n"
        ));
        let has = |l: &str| assert!(r.contains(l), "missing {l:?} in\n{r}");
        let both = "iifname { \"ipuaaa\", \"ipubbb\" }";
        has("ip saddr { 10.88.0.0/16, 10.89.3.0/24 } oifname != \"ipu*\" masquerade");
        // The host itself: only replies and DNS to its name servers.
        has("chain input {");
        has(&format!("{both} ct state established,related accept"));
        has(&format!(
            "{both} ip daddr {{ 10.0.0.2 }} meta l4proto {{ tcp, udp }} th dport 53 accept"
        ));
        has(&format!("{both} drop"));
        // Link-local for all, private ranges for the network that does not allow them.
        has(&format!("{both} ip daddr 169.254.0.0/16 drop"));
        has("iifname { \"ipuaaa\" } ip daddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 } drop");
        has("oifname { \"ipuaaa\", \"ipubbb\" } ct state established,related accept");
        has("iifname != \"ipu*\" oifname != \"ipu*\" drop");
        // DNS is accepted before link-local and private ranges are dropped.
        let dns = r.rfind("th dport 53 accept").unwrap();
        assert!(dns < r.find("172.16.0.0/12").unwrap());
        assert!(dns < r.find("169.254.0.0/16").unwrap());
        // Nothing to match: no sets (nft refuses empty ones), no masquerade, no guard.
        let r = ruleset("t", &[], &HostFacts::default());
        assert!(!r.contains("masquerade") && !r.contains("{  }"), "{r}");
        assert!(!r.contains("!= \"ipu*\""), "{r}");
    }

    #[test]
    fn the_forwarding_note_belongs_to_its_namespace_only() {
        // In a namespace of this thread's own, with forwarding off.
        std::thread::spawn(|| {
            // SAFETY: a plain system call; the new namespace belongs to this thread only.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare (run as root)");
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").unwrap();
            assert!(!forwarding_turned_on());
            enable_forwarding().unwrap();
            let on = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
            assert_eq!(on.trim(), "1");
            assert!(forwarding_turned_on());
            assert!(!netns_cookie().is_empty(), "SO_NETNS_COOKIE (Linux 5.14)");
            // A note left by a gone namespace of the same inode number is not this one's.
            std::fs::write(forwarding_note(), "1").unwrap();
            assert!(!forwarding_turned_on());
            std::fs::remove_file(forwarding_note()).unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn nameservers_and_table_names() {
        let resolv = "# x\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nsearch a\n";
        assert_eq!(nameservers(resolv), vec![std::net::Ipv4Addr::new(10, 0, 0, 2)]);
        let a = table_name(Path::new("/var/lib/ironpod"));
        assert!(a.starts_with("ironpod-") && a.len() == 16, "{a}");
        assert_eq!(a, table_name(Path::new("/var/lib/ironpod")));
        assert_ne!(a, table_name(Path::new("/srv/tenant-a")));
    }

    /// nft itself accepts the rules (check mode: nothing is changed).
    #[test]
    fn nft_accepts_the_ruleset() {
        let host = HostFacts { nameservers: vec![[10, 0, 0, 2].into()], guard_forwarding: true };
        let nets = [net("ipuaaa", "10.88.0.0/16", false), net("ipubbb", "10.89.3.0/24", true)];
        for r in [ruleset("ironpod-check", &nets, &host), ruleset("ironpod-check", &[], &host)] {
            let mut c = Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nft (apt install nftables)");
            use std::io::Write;
            c.stdin.take().unwrap().write_all(r.as_bytes()).unwrap();
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}\n{r}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
