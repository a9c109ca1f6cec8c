//! Pod networking on the host: ironpod's own networks for CLI pods (Docker's bridge
//! networks, inside namespaces), a pod's tap joined to its namespace's veth ([`podnet`],
//! also used for CNI pods of the containerd shim), network namespaces ([`netns`]),
//! addresses, published ports and egress.
//!
//! Knows nothing of pods' records, specs or monitors: callers hand in what it needs (the
//! state root, a network's name, a container id as the lease key, a namespace) and get typed
//! results back; lower crates only (`ironpod-ids`, `ironpod-images` for its SQLite opener,
//! the VMM's and agent's config types).
//!
//! A network is a host network namespace (`ironpod-net-<id>`) holding a bridge whose address
//! is the gateway; made when a pod first uses it (again after a host reboot), it stays until
//! `ironpod network rm` (making it costs a pod start ~0.2 s under emulation). Each pod gets a namespace of its own (`ironpod-<id>`) with a veth on that bridge
//! and its VM's tap, and an address leased from the network's subnet. Pods of one network
//! reach each other by address (and by name, through `/etc/hosts`); published ports reach
//! them through [`proxy`]. Nothing is routed to or from the host's own networks: traffic
//! stays inside these namespaces (DESIGN.md §8).

pub mod egress;
pub mod error;
pub mod files;
pub mod guard;
pub mod ipam;
pub mod netns;
pub mod plumb;
pub mod podnet;
pub mod ports;
pub mod proxy;
mod rtnl;
pub mod services;
pub mod store;
#[cfg(test)]
mod test_frames;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::NetworkError;
pub use ports::{parse_publish, PortMapping, Protocol};
pub use store::{Network, NetworkStore, NewNetwork, DEFAULT_NETWORK};

/// What a container's record keeps of its network (shown by `inspect` and `port`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSettings {
    /// The network's name (`none` for none).
    pub network: String,
    /// The pod's address.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// Prefix length of the network.
    #[serde(default)]
    pub prefix: u8,
    /// Gateway.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The VM's MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// Published ports (with the host ports bound).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

/// A pod's tap: made before its VM boots, while the rest of its network comes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTap {
    /// The pod's namespace (holds the tap).
    pub pod_ns: PathBuf,
    /// The guest card's MAC address (`02:…`, also the pod veth's).
    pub mac: String,
    /// MTU.
    pub mtu: u16,
}

impl PodTap {
    /// The VM's card on this tap.
    pub fn net_config(&self) -> ironpod_vmm::config::NetConfig {
        ironpod_vmm::config::NetConfig {
            tap: plumb::POD_TAP.into(),
            mac: Some(self.mac.clone()),
            mtu: self.mtu,
            netns: Some(self.pod_ns.clone()),
        }
    }
}

/// A pod joined to a network.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// The network.
    pub network: Network,
    /// The pod's address.
    pub address: Ipv4Addr,
    /// The network's prefix length.
    pub prefix: u8,
    /// The gateway.
    pub gateway: Ipv4Addr,
    /// The pod's tap.
    pub tap: PodTap,
    /// The network's namespace (holds the bridge; the proxy connects from there).
    pub net_ns: PathBuf,
    /// The network's other live pods when this one joined (container ids and addresses),
    /// for its `/etc/hosts`.
    pub peers: Vec<(String, Ipv4Addr)>,
}

impl PodNetwork {
    /// The agent's configuration of the card.
    pub fn guest_config(&self) -> ironpod_protocol::NetworkConfig {
        ironpod_protocol::NetworkConfig {
            interfaces: vec![ironpod_protocol::NetInterface {
                mac: self.tap.mac.clone(),
                address: format!("{}/{}", self.address, self.prefix),
                mtu: self.tap.mtu,
                replaces: None,
            }],
            // An internal network leads nowhere: without a default route, connections out
            // fail at once ("Network unreachable") instead of timing out.
            gateway: (!self.network.internal).then(|| self.gateway.to_string()),
        }
    }

    /// What the record keeps.
    pub fn settings(&self, ports: Vec<PortMapping>) -> NetworkSettings {
        NetworkSettings {
            network: self.network.name.clone(),
            address: Some(self.address),
            prefix: self.prefix,
            gateway: Some(self.gateway),
            mac: Some(self.tap.mac.clone()),
            ports,
        }
    }
}

/// MTU of ironpod's networks.
pub const MTU: u16 = 1500;

/// Name of a pod's namespace.
pub fn pod_namespace(container: &str) -> String {
    format!("ironpod-{}", &container[..container.len().min(12)])
}

/// Serializes making a network's namespace and bridge among ironpod processes.
struct SetupLock {
    _file: std::fs::File,
}

impl SetupLock {
    fn take() -> Result<Self, NetworkError> {
        use std::os::fd::AsRawFd;
        let dir = std::path::Path::new(ironpod_images::private::RUN_ROOT);
        ironpod_images::private::private_dir(dir)
            .map_err(|e| NetworkError::Plumb(e.to_string()))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("networks.lock"))
            .map_err(|e| NetworkError::Plumb(format!("networks.lock: {e}")))?;
        // SAFETY: flock on an fd we own; released when it closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(NetworkError::Plumb(std::io::Error::last_os_error().to_string()));
        }
        Ok(SetupLock { _file: f })
    }
}

/// Makes sure a network's namespace and bridge exist; returns the namespace's path. A
/// namespace that exists was set up whole (under the lock) unless `check` asks to look.
pub fn ensure_network(
    root: &std::path::Path,
    net: &Network,
    check: bool,
) -> Result<PathBuf, NetworkError> {
    let path = netns::path(&net.namespace());
    if !check && netns::is_namespace(&path) {
        return Ok(path);
    }
    let sub = net.subnet()?;
    let gw = net.gateway()?;
    tracing::debug!(network = %net.name, check, "setting the network's namespace up");
    let _lock = SetupLock::take()?;
    let ns = netns::create(&net.namespace())
        .map_err(|e| NetworkError::Plumb(format!("namespace {}: {e}", net.namespace())))?;
    plumb::ensure_bridge(&ns, gw, sub.prefix).map_err(NetworkError::Plumb)?;
    if !net.internal {
        egress::connect(net, &ns)?;
        egress::sync(root)?;
    }
    Ok(ns)
}

/// Makes pod `container`'s namespace (or names `in_ns`, the namespace its jailed VMM runs
/// in, so) and the tap of its VM there, with a new random MAC address.
pub fn prepare_tap(container: &str, in_ns: Option<&Path>) -> Result<PodTap, NetworkError> {
    let name = pod_namespace(container);
    let pod_ns = match in_ns {
        Some(ns) => netns::adopt(&name, ns),
        None => netns::create(&name),
    }
    .map_err(|e| NetworkError::Plumb(format!("namespace {name}: {e}")))?;
    plumb::make_tap(&pod_ns).map_err(NetworkError::Plumb)?;
    let mut mac = [0u8; 6];
    getrandom(&mut mac[1..]).map_err(|e| NetworkError::Plumb(format!("random MAC: {e}")))?;
    mac[0] = 0x02; // locally administered, unicast
    let mac = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    Ok(PodTap { pod_ns, mac, mtu: MTU })
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: getrandom(2) writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn parse_mac(mac: &str) -> Result<[u8; 6], NetworkError> {
    ironpod_vmm::config::parse_mac(mac)
        .ok_or_else(|| NetworkError::Plumb(format!("bad MAC address {mac:?}")))
}

/// Joins pod `container` (its tap made by [`prepare_tap`]) to the network `key`: an
/// address leased for this process (the pod's monitor), the network's namespace, the veth.
pub fn connect(
    root: &std::path::Path,
    key: &str,
    container: &str,
    tap: &PodTap,
) -> Result<PodNetwork, NetworkError> {
    let mut store = NetworkStore::open(root)?;
    let network = store.find(key)?;
    let sub = network.subnet()?;
    let gateway = network.gateway()?;
    // The address is leased (a database transaction) while the host side is plumbed.
    let me = std::process::id() as i32;
    let lease = {
        let (network, container) = (network.clone(), container.to_string());
        std::thread::spawn(move || {
            let address =
                store.lease(&network, &container, (me, ironpod_ids::process_start(me)))?;
            // The other pods while the store is open (an open costs more than the query).
            let peers = store.leases(&network.name).map(|leases| {
                leases
                    .into_iter()
                    .filter(|l| l.container != container)
                    .map(|l| (l.container, l.address))
                    .collect()
            });
            Ok((address, peers.unwrap_or_default()))
        })
    };
    let plumbed = (|| {
        let veth = format!("vp{}", &container[..container.len().min(12)]);
        let mac = parse_mac(&tap.mac)?;
        let net_ns = ensure_network(root, &network, false)?;
        match plumb::attach_pod(&net_ns, &tap.pod_ns, &veth, mac, tap.mtu) {
            Ok(()) => Ok(net_ns),
            // A network namespace left half made (by a crash) is mended once.
            Err(e) => {
                tracing::debug!(%container, "attach failed, mending the network: {e}");
                let net_ns = ensure_network(root, &network, true)?;
                plumb::attach_pod(&net_ns, &tap.pod_ns, &veth, mac, tap.mtu)
                    .map_err(NetworkError::Plumb)?;
                Ok(net_ns)
            }
        }
    })();
    tracing::debug!(%container, ok = plumbed.is_ok(), "pod attached");
    let leased =
        lease.join().unwrap_or_else(|_| Err(NetworkError::Plumb("lease thread panicked".into())));
    // With the address known, the guest may send: as itself only.
    let plumbed = match (plumbed, &leased) {
        (Ok(net_ns), Ok((address, _))) => plumb::guard_pod(&tap.pod_ns, &tap.mac, *address)
            .and_then(|()| forget_neighbour(&net_ns, *address))
            .map(|()| net_ns)
            .map_err(NetworkError::Plumb),
        (p, _) => p,
    };
    let result = match (plumbed, leased) {
        (Ok(net_ns), Ok((address, peers))) => Ok(PodNetwork {
            network,
            address,
            prefix: sub.prefix,
            gateway,
            tap: tap.clone(),
            net_ns,
            peers,
        }),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match &result {
        Ok(n) => store::network_event(root, "connect", &n.network, Some(container)),
        Err(_) => disconnect(root, container),
    }
    result
}

/// Forgets what the network's namespace knew of `address`'s link-layer address: a pod that
/// takes an address an earlier one had (a pod's VM booted again) has a new MAC, and a
/// stale neighbour entry would send its traffic nowhere until it timed out.
fn forget_neighbour(net_ns: &std::path::Path, address: Ipv4Addr) -> Result<(), String> {
    netns::run_in(net_ns, || {
        let out = std::process::Command::new("ip")
            .args(["neigh", "flush", "to", &address.to_string()])
            .output()
            .map_err(|e| format!("run ip (package iproute2): {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => {
                Err(format!("ip neigh flush: {}", String::from_utf8_lossy(&out.stderr).trim()))
            }
        }
    })
}

/// Takes a pod off its network: its namespace (with the veth and tap) goes, its address is
/// free again. Idempotent; failures are only logged (the lease frees itself once the
/// monitor is gone anyway).
pub fn disconnect(root: &std::path::Path, container: &str) {
    if let Err(e) = netns::remove(&pod_namespace(container)) {
        tracing::warn!(%container, "remove the pod's network namespace: {e}");
    }
    let store = match NetworkStore::open(root) {
        Ok(s) => s,
        Err(e) => return tracing::warn!(%container, "release the pod's address: {e}"),
    };
    let networks = store.networks_of(container).unwrap_or_default();
    if let Err(e) = store.release(container) {
        tracing::warn!(%container, "release the pod's address: {e}");
    }
    for n in networks.iter().filter_map(|n| store.find(n).ok()) {
        store::network_event(root, "disconnect", &n, Some(container));
    }
}

/// Removes the networks that no live pod uses and that `select` picks (never the default
/// one); returns them.
pub fn prune(
    root: &std::path::Path,
    select: impl Fn(&Network) -> bool,
) -> Result<Vec<Network>, NetworkError> {
    let listed = NetworkStore::open(root)?.list()?;
    let mut gone = Vec::new();
    for n in listed.iter().filter(|n| n.name != DEFAULT_NETWORK && select(n)) {
        match remove(root, &n.id) {
            Ok(n) => gone.push(n),
            // In use, or removed meanwhile: not pruned.
            Err(NetworkError::InUse(..) | NetworkError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(gone)
}

/// Removes a network (no live pod may use it) and its namespace.
pub fn remove(root: &std::path::Path, key: &str) -> Result<Network, NetworkError> {
    let mut store = NetworkStore::open(root)?;
    let net = store.remove(key)?;
    let _lock = SetupLock::take()?;
    netns::remove(&net.namespace())
        .map_err(|e| NetworkError::Plumb(format!("remove namespace {}: {e}", net.namespace())))?;
    store::network_event(root, "destroy", &net, None);
    if !net.internal {
        // Its uplink went with its namespace; its subnet leaves the masquerade rule.
        if let Err(e) = egress::sync(root) {
            tracing::warn!(network = %net.name, "update the egress rules: {e}");
        }
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(ns: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "ip"])
            .args(args)
            .output()
            .expect("ip (iproute2)");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host side of two pods on one network: namespaces, bridge, veths, taps, addresses,
    /// and all of it gone again after disconnect and remove.
    #[test]
    fn pods_join_a_network_and_leave_nothing() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test needs root (network namespaces)");
        }
        let root = tempfile::tempdir().unwrap();
        let mut store = NetworkStore::open(root.path()).unwrap();
        let net = store
            .create(&NewNetwork {
                name: "unit",
                subnet: Some("10.213.0.0/24"),
                internal: true,
                ..Default::default()
            })
            .unwrap();
        drop(store);
        let ids = [ironpod_ids::new_id().unwrap(), ironpod_ids::new_id().unwrap()];
        let taps = [prepare_tap(&ids[0], None).unwrap(), prepare_tap(&ids[1], None).unwrap()];
        let a = connect(root.path(), "unit", &ids[0], &taps[0]).unwrap();
        let b = connect(root.path(), "unit", &ids[1], &taps[1]).unwrap();
        assert_eq!(a.address.to_string(), "10.213.0.2");
        assert_eq!(b.address.to_string(), "10.213.0.3");
        assert_eq!(a.gateway.to_string(), "10.213.0.1");
        assert_ne!(a.tap.mac, b.tap.mac);
        assert!(a.tap.mac.starts_with("02:"));
        let br = ip(&net.namespace(), &["-o", "addr", "show", "dev", plumb::BRIDGE]);
        assert!(br.contains("10.213.0.1/24"), "{br}");
        let ports = ip(&net.namespace(), &["-o", "link", "show", "master", plumb::BRIDGE]);
        assert_eq!(ports.lines().count(), 2, "{ports}");
        let pod = pod_namespace(&ids[0]);
        let links = ip(&pod, &["-o", "link"]);
        assert!(links.contains("eth0") && links.contains("tap0"), "{links}");
        assert!(links.contains(&a.tap.mac), "eth0 has the guest's MAC: {links}");
        let g = a.guest_config();
        assert_eq!(g.interfaces[0].address, "10.213.0.2/24");
        // Busy: not removable.
        assert!(matches!(remove(root.path(), "unit"), Err(NetworkError::InUse(..))));
        for id in &ids {
            assert!(netns::path(&pod_namespace(id)).exists());
        }
        disconnect(root.path(), &ids[0]);
        // The kernel takes a namespace's devices down in the background.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let ports = ip(&net.namespace(), &["-o", "link", "show", "master", plumb::BRIDGE]);
            if ports.lines().count() == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "veths go with the pods: {ports}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        disconnect(root.path(), &ids[1]);
        remove(root.path(), "unit").unwrap();
        assert!(!netns::path(&net.namespace()).exists());
    }

    /// A guest sends as itself only: frames written into one pod's tap (as its VMM would)
    /// reach the other pod of the network only with the pod's own MAC and IPv4 address.
    #[test]
    fn a_guest_cannot_spoof_addresses() {
        use ironpod_vmm::virtio::net::NetBackend;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test needs root (network namespaces)");
        }
        let root = tempfile::tempdir().unwrap();
        let mut store = NetworkStore::open(root.path()).unwrap();
        store
            .create(&NewNetwork {
                name: "spoof",
                subnet: Some("10.213.1.0/24"),
                internal: true,
                ..Default::default()
            })
            .unwrap();
        drop(store);
        let ids = [ironpod_ids::new_id().unwrap(), ironpod_ids::new_id().unwrap()];
        let taps = [prepare_tap(&ids[0], None).unwrap(), prepare_tap(&ids[1], None).unwrap()];
        let a = connect(root.path(), "spoof", &ids[0], &taps[0]).unwrap();
        let _b = connect(root.path(), "spoof", &ids[1], &taps[1]).unwrap();
        let open = |id: &str| {
            netns::run_in(&netns::path(&pod_namespace(id)), || {
                ironpod_vmm::virtio::net::tap::Tap::open(plumb::POD_TAP).map_err(|e| e.to_string())
            })
            .unwrap()
        };
        let (mut tx, mut rx) = (open(&ids[0]), open(&ids[1]));
        let mac = parse_mac(&a.tap.mac).unwrap();
        let sent = crate::test_frames::frames(mac, a.address.octets(), [10, 213, 1, 3]);
        for mut f in sent {
            crate::test_frames::send_in_parts(&mut tx, &mut f);
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut buf = vec![0u8; 2048];
        while std::time::Instant::now() < deadline {
            match rx.recv(&mut buf).unwrap() {
                Some(n) => got.extend(crate::test_frames::tags(&buf[..n])),
                None => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        assert_eq!(got, crate::test_frames::ALLOWED, "only the guest's own addresses pass");
        drop((tx, rx));
        for id in &ids {
            disconnect(root.path(), id);
        }
        remove(root.path(), "spoof").unwrap();
    }
}
