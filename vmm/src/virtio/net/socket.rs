//! A card's socket for a tap plugged in later: the backend of a spare network card
//! ([`crate::config::VmConfig::spare_nets`]). Until a tap is plugged in, what the guest
//! sends is dropped (counted) and nothing arrives.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use vm_memory::VolatileSlice;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::tap::Tap;
use super::NetBackend;

/// A [`NetBackend`] that is empty until [`TapSocket::plug`] gives it a tap. It is plugged
/// before the event loop registers the device: its descriptor is the one registered then.
pub struct TapSocket {
    tap: Option<Tap>,
    /// Registered with the event loop while no tap is plugged in: never readable.
    idle: EventFd,
    /// The offloads the guest accepted, applied to a tap plugged in after activation.
    offloads: Option<(bool, bool, bool)>,
}

impl TapSocket {
    /// An empty socket.
    pub fn empty() -> io::Result<Self> {
        Ok(TapSocket { tap: None, idle: EventFd::new(EFD_NONBLOCK)?, offloads: None })
    }

    /// Plugs `tap` in (once); the offloads the driver accepted so far apply to it.
    pub fn plug(&mut self, mut tap: Tap) -> io::Result<()> {
        if self.tap.is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "a tap is plugged in"));
        }
        if let Some((csum, tso4, tso6)) = self.offloads {
            tap.set_offloads(csum, tso4, tso6)?;
        }
        self.tap = Some(tap);
        Ok(())
    }

    /// Whether a tap is plugged in.
    pub fn plugged(&self) -> bool {
        self.tap.is_some()
    }
}

impl AsRawFd for TapSocket {
    fn as_raw_fd(&self) -> RawFd {
        match &self.tap {
            Some(t) => t.as_raw_fd(),
            None => self.idle.as_raw_fd(),
        }
    }
}

impl NetBackend for TapSocket {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match &mut self.tap {
            Some(t) => t.recv(buf),
            None => Ok(None),
        }
    }

    fn recv_parts(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<Option<usize>> {
        match &mut self.tap {
            Some(t) => t.recv_parts(parts),
            None => Ok(None),
        }
    }

    fn send(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()> {
        match &mut self.tap {
            Some(t) => t.send(parts),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "no tap plugged in")),
        }
    }

    fn set_offloads(&mut self, csum: bool, tso4: bool, tso6: bool) -> io::Result<()> {
        self.offloads = Some((csum, tso4, tso6));
        match &mut self.tap {
            Some(t) => t.set_offloads(csum, tso4, tso6),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_socket_drops_and_receives_nothing() {
        let mut s = TapSocket::empty().unwrap();
        assert!(!s.plugged());
        let mut buf = [0u8; 64];
        assert!(s.recv(&mut buf).unwrap().is_none());
        let mut frame = [0u8; 20];
        // SAFETY: `frame` outlives the slice, which only this test uses.
        let part = unsafe { VolatileSlice::new(frame.as_mut_ptr(), frame.len()) };
        assert_eq!(s.send(&[part]).unwrap_err().kind(), io::ErrorKind::NotConnected);
        s.set_offloads(true, true, false).unwrap();
        assert_eq!(s.offloads, Some((true, true, false)));
        assert!(s.as_raw_fd() >= 0);
    }
}
