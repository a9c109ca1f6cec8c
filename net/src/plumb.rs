//! The host side of ironpod's own networks, with rtnetlink: a network is a namespace holding
//! a bridge (its address is the pods' gateway); a pod is a namespace of its own holding a
//! veth whose other end is a port of that bridge, and the tap of its VM
//! ([`crate::podnet::connect_tap`]'s set-up, as for a CNI pod).

use std::net::Ipv4Addr;
use std::path::Path;

use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::netns;
use crate::rtnl::{connect, find, must_find, runtime, up};

/// The bridge's name inside a network's namespace.
pub const BRIDGE: &str = "br0";
/// The pod's veth inside the pod's namespace.
pub const POD_VETH: &str = "eth0";
/// The VM's tap inside the pod's namespace.
pub const POD_TAP: &str = "tap0";

async fn add_address(h: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), String> {
    match h.address().add(index, ip.into(), prefix).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        r => r.map_err(|e| format!("add address {ip}/{prefix}: {e}")),
    }
}

/// Makes sure the namespace at `ns` has the bridge up with `gateway/prefix` (idempotent).
pub fn ensure_bridge(ns: &Path, gateway: Ipv4Addr, prefix: u8) -> Result<(), String> {
    netns::run_in(ns, || {
        runtime()?.block_on(async {
            let h = connect().await?;
            up(&h, must_find(&h, "lo").await?.header.index, "lo").await?;
            let br = match find(&h, BRIDGE).await? {
                Some(b) => b,
                None => {
                    h.link()
                        .add(LinkBridge::new(BRIDGE).build())
                        .execute()
                        .await
                        .map_err(|e| format!("create bridge: {e}"))?;
                    must_find(&h, BRIDGE).await?
                }
            };
            add_address(&h, br.header.index, gateway, prefix).await?;
            up(&h, br.header.index, BRIDGE).await
        })
    })
}

/// Makes the VM's tap, persistent, in the pod's namespace (it is opened by name later).
pub fn make_tap(pod_ns: &Path) -> Result<(), String> {
    netns::run_in(pod_ns, || {
        ironpod_vmm::virtio::net::tap::Tap::open(POD_TAP)
            .and_then(|t| t.set_persistent(true))
            .map_err(|e| format!("create tap {POD_TAP}: {e}"))
    })
}

/// Joins a pod to a network: in `net_ns`, a veth `host_veth` on the bridge whose peer is
/// `eth0` (with the guest's MAC) in `pod_ns`; then what reaches `eth0` goes to the VM's tap
/// (made by [`make_tap`]). Nothing goes the other way until [`guard_pod`] knows the pod's
/// address. The pod's address is the guest's alone: nothing in `pod_ns` speaks IP.
pub fn attach_pod(
    net_ns: &Path,
    pod_ns: &Path,
    host_veth: &str,
    mac: [u8; 6],
    mtu: u16,
) -> Result<(), String> {
    let pod_file =
        std::fs::File::open(pod_ns).map_err(|e| format!("open {}: {e}", pod_ns.display()))?;
    netns::run_in(net_ns, || {
        use std::os::fd::AsRawFd;
        runtime()?.block_on(async {
            let h = connect().await?;
            if let Some(old) = find(&h, host_veth).await? {
                // A leftover of an earlier attempt for this pod.
                let _ = h.link().del(old.header.index).execute().await;
            }
            let peer = LinkUnspec::new_with_name(POD_VETH)
                .setns_by_fd(pod_file.as_raw_fd())
                .address(mac.to_vec())
                .mtu(u32::from(mtu))
                .build();
            let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(
                rtnetlink::packet_route::link::InfoKind::Veth,
            )
            .name(host_veth.to_string())
            .mtu(u32::from(mtu))
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
            h.link().add(veth).execute().await.map_err(|e| format!("create veth: {e}"))?;
            let br = must_find(&h, BRIDGE).await?.header.index;
            let v = must_find(&h, host_veth).await?.header.index;
            h.link()
                .set(LinkUnspec::new_with_index(v).controller(br).up().build())
                .execute()
                .await
                .map_err(|e| format!("put {host_veth} on the bridge: {e}"))
        })
    })?;
    netns::run_in(pod_ns, || {
        runtime()?.block_on(async {
            let h = connect().await?;
            let eth = must_find(&h, POD_VETH).await?.header.index;
            up(&h, eth, POD_VETH).await?;
            let tap = must_find(&h, POD_TAP).await?.header.index;
            h.link()
                .set(LinkUnspec::new_with_index(tap).mtu(u32::from(mtu)).up().build())
                .execute()
                .await
                .map_err(|e| format!("bring up {POD_TAP}: {e}"))?;
            crate::podnet::redirect(&h, (eth, POD_VETH), (tap, POD_TAP))
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// Lets the VM in `pod_ns` send, as `mac` and `address` only (see [`crate::podnet::guard`]).
pub fn guard_pod(pod_ns: &Path, mac: &str, address: Ipv4Addr) -> Result<(), String> {
    netns::run_in(pod_ns, || crate::podnet::guard(POD_TAP, POD_VETH, mac, Some(address)))
}
