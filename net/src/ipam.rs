//! IPv4 subnets and address choice for ironpod's networks.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::error::NetworkError;

/// An IPv4 subnet in canonical form (no host bits set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub network: Ipv4Addr,
    /// Prefix length, 8–30.
    pub prefix: u8,
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    /// Parses `A.B.C.D/N`; the prefix must leave room for a gateway and pods (8–30) and the
    /// host bits must be zero.
    pub fn parse(s: &str) -> Result<Subnet, NetworkError> {
        let bad = |why: &str| NetworkError::Invalid(format!("invalid subnet {s:?}: {why}"));
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("expected A.B.C.D/N"))?;
        let network: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix length must be between 8 and 30"));
        }
        let sub = Subnet { network, prefix };
        if u32::from(network) & !sub.mask() != 0 {
            return Err(bad(&format!("host bits are set (did you mean {}?)", sub.canonical())));
        }
        Ok(sub)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    fn canonical(&self) -> Subnet {
        Subnet {
            network: Ipv4Addr::from(u32::from(self.network) & self.mask()),
            prefix: self.prefix,
        }
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = if self.prefix <= other.prefix { self } else { other };
        let longer = if shorter == self { other } else { self };
        shorter.contains(longer.network)
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// The first host address (the default gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `ip` may be given to a host: inside, not the network or broadcast address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network && ip != self.broadcast()
    }

    /// The lowest host address that is not the gateway nor in `used`.
    pub fn lowest_free(&self, gateway: Ipv4Addr, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let first = u32::from(self.network) + 1;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last).map(Ipv4Addr::from).find(|ip| *ip != gateway && !used.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_canonical_form() {
        let s = Subnet::parse("10.89.3.0/24").unwrap();
        assert_eq!(s.to_string(), "10.89.3.0/24");
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 89, 3, 255));
        assert_eq!(s.first_host(), Ipv4Addr::new(10, 89, 3, 1));
        let e = Subnet::parse("10.89.3.7/24").unwrap_err().to_string();
        assert!(e.contains("10.89.3.0/24"), "{e}");
        for bad in ["10.0.0.0", "10.0.0.0/7", "10.0.0.0/31", "x/24", "10.0.0.0/x", "::1/64", ""] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn membership_and_overlap() {
        let a = Subnet::parse("10.88.0.0/16").unwrap();
        let b = Subnet::parse("10.88.4.0/24").unwrap();
        let c = Subnet::parse("10.89.0.0/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
        assert!(a.is_host(Ipv4Addr::new(10, 88, 4, 1)));
        assert!(!a.is_host(Ipv4Addr::new(10, 88, 0, 0)));
        assert!(!a.is_host(Ipv4Addr::new(10, 88, 255, 255)));
        assert!(!a.is_host(Ipv4Addr::new(10, 89, 0, 1)));
    }

    #[test]
    fn lowest_free_skips_gateway_used_and_ends() {
        let s = Subnet::parse("192.168.7.0/30").unwrap();
        let gw = s.first_host();
        let mut used = HashSet::new();
        assert_eq!(s.lowest_free(gw, &used), Some(Ipv4Addr::new(192, 168, 7, 2)));
        used.insert(Ipv4Addr::new(192, 168, 7, 2));
        assert_eq!(s.lowest_free(gw, &used), None, "network, gateway, broadcast are not hosts");
    }
}
