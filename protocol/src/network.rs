//! The pod's network as the host hands it to the agent.

use serde::{Deserialize, Serialize};

/// One network card of the pod VM, found in the guest by its MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetInterface {
    /// MAC address of the virtio-net card (`aa:bb:cc:dd:ee:ff`).
    pub mac: String,
    /// IPv4 address with prefix length (`10.88.0.2/16`).
    pub address: String,
    /// MTU.
    pub mtu: u16,
    /// The MAC address the card has now, when it is not yet `mac`: the card of a VM
    /// restored from a template keeps the template's address until the agent gives it the
    /// pod's own (before it brings the card up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// The pod's network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Interfaces to configure and bring up.
    pub interfaces: Vec<NetInterface>,
    /// IPv4 default gateway, if any.
    #[serde(default)]
    pub gateway: Option<String>,
}
