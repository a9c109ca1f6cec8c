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
