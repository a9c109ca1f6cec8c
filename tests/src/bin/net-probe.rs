//! The `/init` of the network benchmark's VMM rows (`cargo xtask bench net`): the same
//! program runs under every VMM compared (ironpod-vmm and QEMU, the same kernel, one
//! virtio-net card on a tap), so their figures differ only by the VMM's virtio-net.
//!
//! It gives `eth0` the address 10.0.2.2/24, then, `probe_rounds` times (a kernel
//! command-line word the kernel hands to /init as an environment variable; default 3):
//! sends `probe_mib` MiB (default 32) to 10.0.2.1:5001 and waits for the far end to close
//! (guest → host), then reads from 10.0.2.1:5002 until the far end closes (host → guest).
//! The host times both. It prints `net-probe: done` (or `net-probe: error: …`) and resets
//! the machine (`reboot=k`).
//!
//! It must be linked statically: the initramfs holds nothing else.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

/// The guest's address.
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The host end of the tap.
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);

fn main() {
    let mut out = std::io::stdout();
    match run() {
        Ok(()) => {
            let _ = writeln!(out, "net-probe: done");
        }
        Err(e) => {
            let _ = writeln!(out, "net-probe: error: {e}");
        }
    }
    let _ = out.flush();
    // SAFETY: reboot(2) takes no pointers; as PID 1 with CAP_SYS_BOOT it resets the
    // machine and does not return.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    std::process::exit(1);
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run() -> std::io::Result<()> {
    let rounds = env_num("probe_rounds", 3);
    let bytes = env_num("probe_mib", 32) << 20;
    configure("eth0", GUEST, Ipv4Addr::new(255, 255, 255, 0))?;
    let buf = vec![0u8; 64 << 10];
    let mut rest = vec![0u8; 64 << 10];
    for round in 0..rounds {
        let mut c = connect(5001)?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len());
            c.write_all(&buf[..n])?;
            left -= n;
        }
        c.shutdown(Shutdown::Write)?;
        while c.read(&mut rest)? > 0 {}
        let mut c = connect(5002)?;
        let mut got = 0usize;
        loop {
            let n = c.read(&mut rest)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got != bytes {
            return Err(std::io::Error::other(format!("round {round}: received {got} bytes")));
        }
        println!("net-probe: round {} done", round + 1);
    }
    Ok(())
}

/// Connects to the host's `port`, trying again for a while (its listener may come late).
fn connect(port: u16) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TcpStream::connect(SocketAddrV4::new(HOST, port)) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `struct ifreq` with a `sockaddr_in` or the flags in its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

/// Gives interface `name` an address and netmask and brings it up (the ioctls `ifconfig`
/// uses; no netlink needed for one address).
fn configure(name: &str, addr: Ipv4Addr, mask: Ipv4Addr) -> std::io::Result<()> {
    // SAFETY: socket(2) takes no pointers; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let req = |data: [u8; 24]| {
        let mut r = IfReq { name: [0; libc::IFNAMSIZ], data };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    };
    let sockaddr = |a: Ipv4Addr| {
        let mut d = [0u8; 24];
        d[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        d[4..8].copy_from_slice(&a.octets());
        d
    };
    let ioctl = |request: libc::c_ulong, r: &mut IfReq| {
        // SAFETY: each request used here reads or writes one `struct ifreq`, which `r` is
        // (name, then a 24-byte union), alive across the call.
        if unsafe { libc::ioctl(fd, request, r as *mut IfReq) } < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let result = (|| {
        ioctl(libc::SIOCSIFADDR, &mut req(sockaddr(addr)))?;
        ioctl(libc::SIOCSIFNETMASK, &mut req(sockaddr(mask)))?;
        let mut r = req([0; 24]);
        ioctl(libc::SIOCGIFFLAGS, &mut r)?;
        let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | libc::IFF_UP as i16;
        r.data[0..2].copy_from_slice(&flags.to_ne_bytes());
        ioctl(libc::SIOCSIFFLAGS, &mut r)
    })();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    result
}
