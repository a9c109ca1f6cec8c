//! Host-side plumbing of a pod's network: inside the pod's network namespace, a tap device
//! for the VM joined to the namespace's veth (what CNI or ironpod's own networks give a
//! pod) with traffic-control `mirred` redirects both ways — every frame arriving on one
//! leaves on the other, so the VM takes the veth's place on the wire (the way Kata
//! Containers connects its VMs). The guest then gets the veth's MAC, addresses, MTU and
//! default route.

use std::net::Ipv4Addr;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// Why the pod's network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    /// A system call or netlink request failed.
    #[error("{what}: {reason}")]
    Failed {
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The namespace lacks what the pod needs.
    #[error("{0}")]
    Missing(String),
    /// The namespace has no interface of that name (a pod with loopback only).
    #[error("no interface {0} in the pod's network namespace")]
    NoInterface(String),
}

fn failed(what: impl Into<String>) -> impl FnOnce(String) -> PodNetError {
    let what = what.into();
    move |reason| PodNetError::Failed { what, reason }
}

/// What the guest's card must look like to take the veth's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNic {
    /// The veth's MAC address (`aa:bb:…`).
    pub mac: String,
    /// IPv4 address and prefix length of the veth.
    pub address: Option<(Ipv4Addr, u8)>,
    /// IPv4 default gateway of the namespace.
    pub gateway: Option<Ipv4Addr>,
    /// The veth's MTU.
    pub mtu: u16,
}

impl GuestNic {
    /// The agent's configuration for this card.
    pub fn network_config(&self) -> ironpod_protocol::NetworkConfig {
        ironpod_protocol::NetworkConfig {
            interfaces: self
                .address
                .map(|(a, p)| ironpod_protocol::NetInterface {
                    mac: self.mac.clone(),
                    address: format!("{a}/{p}"),
                    mtu: self.mtu,
                    replaces: None,
                })
                .into_iter()
                .collect(),
            gateway: self.gateway.map(|g| g.to_string()),
        }
    }
}

/// In the network namespace at `netns`, creates the tap `tap` and redirects all traffic
/// between it and `veth` both ways; returns what the guest's card must be.
pub fn connect_tap(netns: &Path, veth: &str, tap: &str) -> Result<GuestNic, PodNetError> {
    // Namespaces are per thread: the work runs on a thread of its own that enters it.
    crate::netns::run_in(netns, || {
        let rt = crate::rtnl::runtime()?;
        Ok(rt.block_on(plumb(veth, tap)))
    })
    .map_err(failed("set up the pod's network namespace"))?
}

async fn link(h: &Handle, name: &str) -> Result<LinkMessage, PodNetError> {
    h.link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(|e| failed(format!("find interface {name}"))(e.to_string()))?
        .ok_or_else(|| PodNetError::NoInterface(name.to_string()))
}

/// In the current namespace, creates the tap and joins it to `veth` (see [`connect_tap`]).
pub(crate) async fn plumb(veth: &str, tap: &str) -> Result<GuestNic, PodNetError> {
    let (conn, h, _) =
        rtnetlink::new_connection().map_err(|e| failed("netlink socket")(e.to_string()))?;
    tokio::spawn(conn);
    let v = link(&h, veth).await?;
    // A persistent tap, so it can be set up before the VMM opens it by name.
    let created = ironpod_vmm::virtio::net::tap::Tap::open(tap)
        .and_then(|t| t.set_persistent(true))
        .map_err(|e| failed(format!("create tap {tap}"))(e.to_string()));
    created?;
    let t = link(&h, tap).await?;
    let (vi, ti) = (v.header.index, t.header.index);
    let mut mac = None;
    let mut mtu = 1500u32;
    for a in &v.attributes {
        match a {
            LinkAttribute::Address(m) if m.len() == 6 => {
                mac = Some(m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
            }
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    let mac = mac.ok_or_else(|| PodNetError::Missing(format!("{veth} has no MAC address")))?;
    let mut address = None;
    let mut addrs = h.address().get().set_link_index_filter(vi).execute();
    while let Some(m) =
        addrs.try_next().await.map_err(|e| failed("list addresses")(e.to_string()))?
    {
        for a in &m.attributes {
            if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = a {
                address.get_or_insert((*ip, m.header.prefix_len));
            }
        }
    }
    let mut gateway = None;
    let mut routes = h.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
    while let Some(r) = routes.try_next().await.map_err(|e| failed("list routes")(e.to_string()))? {
        if r.header.destination_prefix_length != 0 {
            continue;
        }
        for a in &r.attributes {
            if let RouteAttribute::Gateway(RouteAddress::Inet(g)) = a {
                gateway.get_or_insert(*g);
            }
        }
    }
    h.link()
        .set(LinkUnspec::new_with_index(ti).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(|e| failed(format!("bring up {tap}"))(e.to_string()))?;
    redirect(&h, (vi, veth), (ti, tap)).await?;
    guard(tap, veth, &mac, address.map(|(a, _)| a)).map_err(failed("guard the tap"))?;
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
    Ok(GuestNic { mac, address, gateway, mtu })
}

/// Redirects every frame arriving on `veth` to `tap` (tc ingress qdisc, u32 match-all
/// filter, mirred egress redirect): what reaches the pod goes to its VM. The other way is
/// [`guard`]'s.
pub(crate) async fn redirect(
    h: &Handle,
    (vi, veth): (u32, &str),
    (ti, tap): (u32, &str),
) -> Result<(), PodNetError> {
    h.qdisc()
        .add(vi as i32)
        .ingress()
        .execute()
        .await
        .map_err(|e| failed(format!("ingress qdisc on {veth}"))(e.to_string()))?;
    h.traffic_filter(vi as i32)
        .add()
        .parent(0xffff_0000)
        .protocol((libc::ETH_P_ALL as u16).to_be())
        .redirect(ti)
        .map_err(|e| failed("build the redirect")(e.to_string()))?
        .execute()
        .await
        .map_err(|e| failed(format!("redirect {veth} to {tap}"))(e.to_string()))
}

/// In the calling thread's namespace, lets the guest's frames out of `tap` to `veth` only
/// when they carry its own MAC address `mac` and its own IPv4 `address` (IPv4, and ARP for
/// it); everything else it sends is dropped — all of it when there is no address (see
/// [`crate::guard`]): a guest cannot send as another pod or another host.
pub fn guard(tap: &str, veth: &str, mac: &str, address: Option<Ipv4Addr>) -> Result<(), String> {
    let mac =
        ironpod_vmm::config::parse_mac(mac).ok_or_else(|| format!("bad MAC address {mac:?}"))?;
    let name = std::ffi::CString::new(veth).map_err(|_| format!("bad interface name {veth:?}"))?;
    // SAFETY: if_nametoindex(3) with a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!("no interface {veth}: {}", std::io::Error::last_os_error()));
    }
    crate::guard::apply(tap, index, mac, address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_refuses_bad_names() {
        assert!(guard("tap0", "eth0", "02:aa:bb:cc:dd:ee; flush ruleset", None).is_err());
        assert!(guard("tap0", "no-such-if0", "02:aa:bb:cc:dd:ee", None).is_err());
    }

    fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip").args(args).output().expect("ip (iproute2)");
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A CNI pod: its namespace as a CNI plugin leaves it (eth0 with an address and a
    /// default route, the other end in another namespace); after [`connect_tap`] the guest's
    /// frames reach the other end only with the pod's own addresses.
    #[test]
    fn a_cni_pods_guest_cannot_spoof_addresses() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test needs root (network namespaces)");
        }
        let tag = std::process::id();
        let (cni, peer) = (format!("ipt-cni-{tag}"), format!("ipt-cnipeer-{tag}"));
        let cni_ns = crate::netns::create(&cni).unwrap();
        let peer_ns = crate::netns::create(&peer).unwrap();
        ip(&[
            "-n", &cni, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns",
            &peer,
        ]);
        ip(&["-n", &cni, "addr", "add", "10.213.2.2/24", "dev", "eth0"]);
        ip(&["-n", &cni, "link", "set", "eth0", "up"]);
        ip(&["-n", &cni, "route", "add", "default", "via", "10.213.2.1"]);
        ip(&["-n", &peer, "link", "set", "peer0", "up"]);
        let nic = connect_tap(&cni_ns, "eth0", "tap0").unwrap();
        assert_eq!(nic.address, Some(([10, 213, 2, 2].into(), 24)));
        assert_eq!(nic.gateway, Some([10, 213, 2, 1].into()));
        let mac = ironpod_vmm::config::parse_mac(&nic.mac).unwrap();
        // What arrives at the other end: a tap there would be a VM; a packet socket is
        // simpler. Opened in the peer's namespace, bound to peer0.
        let sock = crate::netns::run_in(&peer_ns, || packet_socket("peer0")).unwrap();
        let mut tx = crate::netns::run_in(&cni_ns, || {
            ironpod_vmm::virtio::net::tap::Tap::open("tap0").map_err(|e| e.to_string())
        })
        .unwrap();
        for mut f in crate::test_frames::frames(mac, [10, 213, 2, 2], [10, 213, 2, 1]) {
            crate::test_frames::send_in_parts(&mut tx, &mut f);
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut buf = [0u8; 2048];
        while std::time::Instant::now() < deadline {
            // SAFETY: recv into a buffer we own, non-blocking.
            let n =
                unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n > 0 {
                got.extend(crate::test_frames::tags(&buf[..n as usize]));
            } else {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        // SAFETY: our own descriptor.
        unsafe { libc::close(sock) };
        drop(tx);
        let _ = crate::netns::remove(&cni);
        let _ = crate::netns::remove(&peer);
        assert_eq!(got, crate::test_frames::ALLOWED, "only the guest's own addresses pass");
    }

    /// A raw packet socket on `dev`, in the calling thread's namespace.
    fn packet_socket(dev: &str) -> Result<i32, String> {
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: plain socket(2) and if_nametoindex(3) calls with valid arguments.
        let (fd, index) = unsafe {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            (
                libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)),
                libc::if_nametoindex(name.as_ptr()),
            )
        };
        if fd < 0 || index == 0 {
            return Err(format!("packet socket on {dev}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a zeroed sockaddr_ll we fill in, passed with its size.
        let rc = unsafe {
            let mut sa: libc::sockaddr_ll = std::mem::zeroed();
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sa.sll_ifindex = index as i32;
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of_val(&sa) as u32,
            )
        };
        if rc != 0 {
            return Err(format!("bind to {dev}: {}", std::io::Error::last_os_error()));
        }
        Ok(fd)
    }
}
