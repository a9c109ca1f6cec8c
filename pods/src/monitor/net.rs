//! The pod's network as the monitor brings it up: host side beside the VMM's start, guest
//! side (card, name-service files, published ports) once the agent answers.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use ironpod_net::{self as network, NetworkError, NetworkSettings, PodNetwork, PodTap};
use ironpod_protocol::RequestBody;
use ironpod_state::State;

use super::{agent_message, failure};
use crate::agent_client::AgentClient;
use crate::attach::ExitReport;
use crate::spec::RunOptions;

/// The pod's network, coming up on a thread of its own while the VMM sets the VM up: the
/// tap first (the VM boots with it), then the rest (needed once the agent answers).
pub(super) struct PendingNetwork {
    tap: std::sync::mpsc::Receiver<Result<PodTap, NetworkError>>,
    pub(super) rest: JoinHandle<Result<PodNetwork, NetworkError>>,
}

impl PendingNetwork {
    /// Joins the pod to its network on a thread of its own; `vmm_ns`: the network namespace
    /// the pod's VMM already runs in (a jailed one), which becomes the pod's.
    pub(super) fn start(
        root: &Path,
        id: &str,
        network: &str,
        vmm_ns: Option<PathBuf>,
    ) -> PendingNetwork {
        let (root, id, name) = (root.to_path_buf(), id.to_string(), network.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        let rest = std::thread::spawn(move || {
            let tap = network::prepare_tap(&id, vmm_ns.as_deref());
            let made = tap.as_ref().ok().cloned();
            let _ = tx.send(tap);
            let tap = made.ok_or_else(|| NetworkError::Plumb("no tap".into()))?;
            tracing::debug!(%id, "tap ready");
            let r = network::connect(&root, &name, &id, &tap);
            tracing::info!(%id, ok = r.is_ok(), "network ready");
            r
        });
        PendingNetwork { tap: rx, rest }
    }

    /// Waits for the tap.
    pub(super) fn tap(&self) -> Result<PodTap, ExitReport> {
        match self.tap.recv() {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(failure(e.to_string())),
            Err(_) => Err(failure("the network set-up thread ended early".into())),
        }
    }

    /// Waits for the whole network.
    pub(super) fn join(self) -> Result<PodNetwork, ExitReport> {
        match self.rest.join() {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(failure(e.to_string())),
            Err(_) => Err(failure("the network set-up thread panicked".into())),
        }
    }
}

/// The network's other live pods when `net` joined, by container name and network aliases
/// (those with a record), for `/etc/hosts`.
fn peers_by_name(state: &State, net: &PodNetwork) -> Vec<(String, std::net::Ipv4Addr)> {
    net.peers
        .iter()
        .filter_map(|(id, address)| state.find(id).ok().map(|r| (r, *address)))
        .flat_map(|(r, address)| {
            let aliases = serde_json::from_str::<RunOptions>(&r.options)
                .map(|o| o.network_aliases)
                .unwrap_or_default();
            std::iter::once(r.name).chain(aliases).map(move |n| (n, address))
        })
        .collect()
}

/// Sets the guest's side of the network up and writes the container's name-service files;
/// publishes its ports. Returns what the record keeps.
pub(super) fn setup_guest_network(
    state: &State,
    id: &str,
    ctl: &mut AgentClient,
    (net, restored): (Option<&PodNetwork>, bool),
    opts: &RunOptions,
    spec: &mut oci_spec::runtime::Spec,
) -> Result<NetworkSettings, ExitReport> {
    let hostname = spec.hostname().clone().unwrap_or_else(|| id.chars().take(12).collect());
    let peers = net.map(|n| peers_by_name(state, n)).unwrap_or_default();
    let extra: Vec<(String, String)> =
        opts.add_host.iter().filter_map(|h| network::files::parse_add_host(h).ok()).collect();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = [
        ("hosts", network::files::hosts(&hostname, net.map(|n| n.address), &peers, &extra)),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", network::files::resolv_conf(&host_resolv, &opts.dns)),
    ];
    // The card's set-up and the files in one round trip.
    let mut requests: Vec<RequestBody> = net
        .iter()
        .map(|n| {
            let mut c = n.guest_config();
            if restored {
                // The card of a VM restored from a template has the template's MAC.
                for i in &mut c.interfaces {
                    i.replaces = Some(crate::template::TEMPLATE_MAC.into());
                }
            }
            RequestBody::ConfigureNetwork(c)
        })
        .collect();
    requests.extend(files.into_iter().map(|(name, text)| RequestBody::WriteFile {
        path: crate::spec::etc_file(id, name),
        data: text.into_bytes(),
        append: false,
        attrs: None,
    }));
    tracing::debug!(%id, "guest network and name files prepared");
    ctl.expect_all_done(requests).map_err(|e| {
        failure(format!("set up the pod's network and name files: {}", agent_message(&e)))
    })?;
    crate::spec::add_etc_mounts(spec, id).map_err(|e| failure(e.to_string()))?;
    let Some(n) = net else {
        if !opts.publish.is_empty() {
            return Err(failure(
                "a pod without a network (--network none) cannot publish ports".into(),
            ));
        }
        return Ok(NetworkSettings { network: "none".into(), ..Default::default() });
    };
    let ports = network::proxy::publish(&opts.publish, &n.net_ns, n.address)
        .map_err(|e| failure(e.to_string()))?;
    Ok(n.settings(ports))
}
