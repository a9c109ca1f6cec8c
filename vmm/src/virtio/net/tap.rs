//! A Linux tap device as the backend of virtio-net: whole Ethernet frames with a 12-byte
//! virtio-net header in front (`IFF_VNET_HDR`), so checksum and segmentation offloads pass
//! between the guest and the host's network stack untouched.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vm_memory::VolatileSlice;

use super::{NetBackend, VIRTIO_NET_HDR_LEN};

/// Most parts a frame may be sent in (the kernel's `UIO_MAXIOV`).
pub const MAX_PARTS: usize = 1024;

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// Offload flags of TUNSETOFFLOAD.
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// Checks an interface name the way the kernel will (1–15 bytes, no '/', blank or NUL).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// An open tap device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (creating it if needed) the tap interface `name` in the caller's network
    /// namespace, non-blocking, with 12-byte virtio-net headers.
    pub fn open(name: &str) -> io::Result<Tap> {
        if !valid_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let hdr: libc::c_int = VIRTIO_NET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &hdr) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = req.name.iter().position(|&b| b == 0).unwrap_or(req.name.len());
        Ok(Tap { file, name: String::from_utf8_lossy(&req.name[..end]).into_owned() })
    }

    /// Makes the interface outlive this descriptor (`persist`) or not: a persistent tap can
    /// be set up (addresses, traffic control) before the VMM opens it by name.
    pub fn set_persistent(&self, persist: bool) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST takes its flag by value.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETPERSIST, persist as libc::c_ulong) }
            < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Lets the user `uid` and group `gid` open the (persistent) interface without
    /// `CAP_NET_ADMIN`: how a jailed VMM gets its tap.
    pub fn set_owner(&self, uid: u32, gid: u32) -> io::Result<()> {
        for (req, id) in [(TUNSETOWNER, uid), (TUNSETGROUP, gid)] {
            // SAFETY: TUNSETOWNER and TUNSETGROUP take the id by value.
            if unsafe { libc::ioctl(self.file.as_raw_fd(), req, id as libc::c_ulong) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl NetBackend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.file.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn recv_parts(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<Option<usize>> {
        let fd = self.file.as_raw_fd();
        // SAFETY: `iov` names writable memory of live slices (see `vectored`); the guest may
        // see the bytes change under it, which is what a device writing its buffers means.
        match vectored(parts, |iov, n| unsafe { libc::readv(fd, iov, n) }) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: `iov` names memory of live slices (see `vectored`); writev only reads it.
        vectored(parts, |iov, n| unsafe { libc::writev(fd, iov, n) }).map(|_| ())
    }

    fn set_offloads(&mut self, csum: bool, tso4: bool, tso6: bool) -> io::Result<()> {
        let mut flags = 0;
        if csum {
            flags |= TUN_F_CSUM;
            if tso4 {
                flags |= TUN_F_TSO4;
            }
            if tso6 {
                flags |= TUN_F_TSO6;
            }
        }
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Runs `call` (readv or writev) on an iovec array naming `parts`, at most [`MAX_PARTS`];
/// its byte count. The array and the slices' pointer guards live across the call, and the
/// slices borrow guest memory, which stays mapped meanwhile: every entry is valid for it.
fn vectored(
    parts: &[VolatileSlice<'_>],
    call: impl FnOnce(*const libc::iovec, libc::c_int) -> isize,
) -> io::Result<usize> {
    if parts.len() > MAX_PARTS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame in too many parts"));
    }
    let guards: Vec<_> = parts.iter().map(|p| p.ptr_guard_mut()).collect();
    let iov: Vec<libc::iovec> = guards
        .iter()
        .map(|g| libc::iovec { iov_base: g.as_ptr().cast(), iov_len: g.len() })
        .collect();
    let n = call(iov.as_ptr(), iov.len() as libc::c_int);
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_name("tap0"));
        assert!(valid_name("ip-0123456789a"));
        for bad in ["", "a/b", "a b", "0123456789abcdef", ".", "..", "e:1", "t\0"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(Tap::open("bad/name").is_err());
    }
}
