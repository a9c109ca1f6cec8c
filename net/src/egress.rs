//! Egress: pods of a network (unless it is `--internal`) reach the host's own networks and
//! beyond, with their addresses masqueraded behind the host's, as Docker's bridge networks
//! do.
//!
//! Each network's namespace gets an uplink: a veth whose host end is `ipu<id>` in the host's
//! namespace (the namespace of the process that makes the network). Neither end has an
//! address: the host routes the network's subnet to its end, the network's namespace
//! routes everything else to the uplink, and proxy ARP on both ends answers for the other
//! side. The host forwards (`net.ipv4.ip_forward=1`) and one nftables table of ours
//! (`ip ironpod`, rebuilt whole from the state database whenever a network appears or
//! goes) masquerades the networks' subnets leaving through any other interface, drops new
//! connections from outside into the networks, and drops traffic between networks (they
//! stay isolated from each other, as Docker's are).

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
/// Our nftables table (family `ip`).
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
    sysctl("/proc/sys/net/ipv4/ip_forward", "1").map_err(plumb)?;
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

/// The whole `ip ironpod` table for these subnets (replaces what was there, atomically).
pub fn ruleset(subnets: &[String]) -> String {
    let masquerade = if subnets.is_empty() {
        String::new()
    } else {
        format!(
            "        ip saddr {{ {} }} oifname != \"{HOST_PREFIX}*\" masquerade\n",
            subnets.join(", ")
        )
    };
    format!(
        "table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \x20   chain postrouting {{\n\
         \x20       type nat hook postrouting priority srcnat; policy accept;\n\
         {masquerade}\
         \x20   }}\n\
         \x20   chain forward {{\n\
         \x20       type filter hook forward priority filter; policy accept;\n\
         \x20       iifname \"{HOST_PREFIX}*\" oifname \"{HOST_PREFIX}*\" drop\n\
         \x20       oifname \"{HOST_PREFIX}*\" ct state established,related accept\n\
         \x20       oifname \"{HOST_PREFIX}*\" drop\n\
         \x20   }}\n\
         }}\n"
    )
}

/// Rebuilds our nftables table from the networks with egress in the state database under
/// `root`.
pub fn sync(root: &Path) -> Result<(), NetworkError> {
    let subnets: Vec<String> = NetworkStore::open(root)?
        .list()?
        .into_iter()
        .filter(|n| !n.internal)
        .map(|n| n.subnet)
        .collect();
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| plumb(format!("run nft (package nftables): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(ruleset(&subnets).as_bytes()).map_err(|e| plumb(format!("nft: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| plumb(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(plumb(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_masquerades_only_the_networks_with_egress() {
        let r = ruleset(&["10.88.0.0/16".into(), "10.89.3.0/24".into()]);
        assert!(r.starts_with("table ip ironpod\ndelete table ip ironpod\n"), "{r}");
        assert!(
            r.contains("ip saddr { 10.88.0.0/16, 10.89.3.0/24 } oifname != \"ipu*\" masquerade"),
            "{r}"
        );
        assert!(r.contains("oifname \"ipu*\" ct state established,related accept"));
        assert!(!ruleset(&[]).contains("masquerade"));
    }
}
