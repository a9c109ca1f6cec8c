//! Guest networking: loopback at boot, then the pod's cards as the host describes them
//! (IPv4 address and prefix, MTU, default route), set with the classic interface ioctls.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ironpod_protocol::{AgentError, ErrorKind, NetworkConfig};

fn bad(msg: String) -> AgentError {
    AgentError::new(ErrorKind::BadRequest, msg)
}

fn os(what: &str, ifname: &str) -> AgentError {
    AgentError::new(ErrorKind::Io, format!("{what} {ifname}: {}", std::io::Error::last_os_error()))
}

/// `10.0.0.2/24` → (address, prefix length).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), AgentError> {
    let (a, p) = s.split_once('/').ok_or_else(|| bad(format!("{s:?} is not ADDRESS/PREFIX")))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad(format!("bad IPv4 address {a:?}")))?;
    let prefix: u8 =
        p.parse().ok().filter(|&n| n <= 32).ok_or_else(|| bad(format!("bad prefix {p:?}")))?;
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
        return Err(bad(format!("{addr} cannot be an interface address")));
    }
    Ok((addr, prefix))
}

/// `aa:bb:cc:dd:ee:ff` → bytes; a card's own address is unicast and not all zeroes.
fn parse_mac(s: &str) -> Result<[u8; 6], AgentError> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    let ok = parts.len() == 6
        && mac
            .iter_mut()
            .zip(&parts)
            .all(|(m, p)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *m = v).is_ok());
    if !ok || mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(bad(format!("bad MAC address {s:?}")));
    }
    Ok(mac)
}

fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) })
}

/// The guest interface whose MAC address is `mac`.
fn interface_with_mac(mac: &str) -> Result<String, AgentError> {
    let want = mac.to_ascii_lowercase();
    let entries = std::fs::read_dir("/sys/class/net").map_err(AgentError::from)?;
    for e in entries.flatten() {
        let addr = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
        if addr.trim() == want {
            return Ok(e.file_name().to_string_lossy().into_owned());
        }
    }
    Err(AgentError::new(ErrorKind::NotFound, format!("no network card has MAC {mac}")))
}

struct Ioctl {
    sock: OwnedFd,
}

impl Ioctl {
    fn new() -> Result<Self, AgentError> {
        // SAFETY: socket(2) with constant arguments; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(os("socket for", "interfaces"));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(Ioctl { sock: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn req(ifname: &str) -> Result<libc::ifreq, AgentError> {
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
            return Err(bad(format!("bad interface name {ifname:?}")));
        }
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in r.ifr_name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        Ok(r)
    }

    fn call(
        &self,
        op: libc::c_ulong,
        r: &mut libc::ifreq,
        what: &str,
        ifname: &str,
    ) -> Result<(), AgentError> {
        // SAFETY: the interface ioctls read/write one ifreq, which `r` is.
        if unsafe { libc::ioctl(self.sock.as_raw_fd(), op, r as *mut libc::ifreq) } < 0 {
            return Err(os(what, ifname));
        }
        Ok(())
    }

    fn up(&self, ifname: &str) -> Result<(), AgentError> {
        let mut r = Self::req(ifname)?;
        self.call(libc::SIOCGIFFLAGS, &mut r, "read flags of", ifname)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        self.call(libc::SIOCSIFFLAGS, &mut r, "bring up", ifname)
    }

    fn set_addr(
        &self,
        op: libc::c_ulong,
        ifname: &str,
        a: Ipv4Addr,
        what: &str,
    ) -> Result<(), AgentError> {
        let mut r = Self::req(ifname)?;
        r.ifr_ifru.ifru_addr = sockaddr(a);
        self.call(op, &mut r, what, ifname)
    }

    fn set_mac(&self, ifname: &str, mac: [u8; 6]) -> Result<(), AgentError> {
        let mut r = Self::req(ifname)?;
        // SAFETY: sockaddr is plain old data; all zeroes is a valid value.
        let mut a: libc::sockaddr = unsafe { std::mem::zeroed() };
        a.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in a.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
        r.ifr_ifru.ifru_hwaddr = a;
        self.call(libc::SIOCSIFHWADDR, &mut r, "set the MAC address of", ifname)
    }

    fn set_mtu(&self, ifname: &str, mtu: u16) -> Result<(), AgentError> {
        let mut r = Self::req(ifname)?;
        r.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        self.call(libc::SIOCSIFMTU, &mut r, "set the MTU of", ifname)
    }

    fn default_route(&self, gw: Ipv4Addr) -> Result<(), AgentError> {
        // SAFETY: rtentry is plain old data; all zeroes is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        // SAFETY: SIOCADDRT reads one rtentry, which `rt` is.
        if unsafe {
            libc::ioctl(self.sock.as_raw_fd(), libc::SIOCADDRT, &mut rt as *mut libc::rtentry)
        } < 0
        {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(AgentError::new(ErrorKind::Io, format!("default route via {gw}: {e}")));
            }
        }
        Ok(())
    }
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as
    // sockaddr_in because of sin_family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Brings the loopback interface up (containers share the pod's network: 127.0.0.1 must
/// work in each of them).
pub fn loopback_up() -> Result<(), AgentError> {
    Ioctl::new()?.up("lo")
}

/// Configures the pod's cards and default route. Everything is checked before anything
/// changes.
pub fn configure(cfg: &NetworkConfig) -> Result<(), AgentError> {
    let mut plan = Vec::new();
    for i in &cfg.interfaces {
        let (addr, prefix) = parse_cidr(&i.address)?;
        if i.mtu < 68 {
            return Err(bad(format!("MTU {} is below 68", i.mtu)));
        }
        let mac = parse_mac(&i.mac)?;
        let ifname = match &i.replaces {
            None => interface_with_mac(&i.mac)?,
            Some(now) => {
                parse_mac(now)?;
                interface_with_mac(now)?
            }
        };
        plan.push((ifname, addr, prefix, i.mtu, i.replaces.is_some().then_some(mac)));
    }
    let gw = match &cfg.gateway {
        Some(g) => Some(g.parse::<Ipv4Addr>().map_err(|_| bad(format!("bad gateway {g:?}")))?),
        None => None,
    };
    let io = Ioctl::new()?;
    for (ifname, addr, prefix, mtu, mac) in &plan {
        if let Some(mac) = mac {
            io.set_mac(ifname, *mac)?;
        }
        io.set_mtu(ifname, *mtu)?;
        io.set_addr(libc::SIOCSIFADDR, ifname, *addr, "set the address of")?;
        io.set_addr(libc::SIOCSIFNETMASK, ifname, netmask(*prefix), "set the netmask of")?;
        io.up(ifname)?;
    }
    if let Some(gw) = gw {
        io.default_route(gw)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses() {
        assert_eq!(parse_mac("02:0a:ff:00:01:02").unwrap(), [2, 10, 255, 0, 1, 2]);
        for bad in [
            "",
            "02:00:00:00:00",
            "01:00:00:00:00:01",
            "00:00:00:00:00:00",
            "02:0g:00:00:00:00",
            "2:00:00:00:00:000",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs_and_masks() {
        assert_eq!(parse_cidr("10.0.0.2/24").unwrap(), (Ipv4Addr::new(10, 0, 0, 2), 24));
        for bad in ["10.0.0.2", "10.0.0.2/33", "x/24", "0.0.0.0/8", "224.0.0.1/4", "10.0.0.2/-1"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }
}
