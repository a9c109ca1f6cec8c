//! Address-range buses for port I/O and MMIO exits.
//!
//! Built once before the vCPUs start, then shared read-only between vCPU threads; each device
//! sits behind its own mutex, so two vCPUs only contend when they touch the same device.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers guest reads and writes within its address range.
pub trait BusDevice: Send {
    /// Guest reads `data.len()` bytes at `offset` from the device base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest writes `data` at `offset` from the device base.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors when building a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The new range overlaps a registered one or is empty / wraps around.
    #[error("bus range {base:#x}+{len:#x} overlaps another device or is invalid")]
    Overlap {
        /// Base of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping device ranges.
#[derive(Default)]
pub struct Bus {
    entries: BTreeMap<u64, Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `device` at `base..base+len`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let end =
            base.checked_add(len).filter(|_| len > 0).ok_or(BusError::Overlap { base, len })?;
        if let Some((b, e)) = self.entries.range(..end).next_back() {
            if b + e.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.entries.insert(base, Entry { len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Entry)> {
        let (base, e) = self.entries.range(..=addr).next_back()?;
        let off = addr - base;
        (off.checked_add(size as u64)? <= e.len).then_some((off, e))
    }

    /// Dispatches a read; returns false (and leaves `data` as all ones) when nothing is mapped.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, e)) => {
                lock(&e.device).read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns false when nothing is mapped there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, e)) => {
                lock(&e.device).write(off, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned lock: a panic in one device access must not
/// take down every later access (the device state is still memory safe).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatch_and_bounds() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Reg(vec![])));
        bus.insert(0x100, 0x10, dev.clone()).unwrap();
        let mut d = [0u8; 2];
        assert!(bus.read(0x104, &mut d));
        assert_eq!(d, [4, 4]);
        assert!(!bus.read(0x10f, &mut d), "crossing the end is not dispatched");
        assert_eq!(d, [0xff, 0xff]);
        assert!(!bus.read(0xff, &mut [0u8; 1]));
        assert!(bus.write(0x10f, &[7]));
        assert_eq!(dev.lock().unwrap().0, vec![(0xf, vec![7])]);
    }

    #[test]
    fn rejects_overlaps() {
        let mut bus = Bus::new();
        let dev: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(Reg(vec![])));
        bus.insert(0x100, 0x10, dev.clone()).unwrap();
        assert!(bus.insert(0x10f, 1, dev.clone()).is_err());
        assert!(bus.insert(0xf0, 0x11, dev.clone()).is_err());
        assert!(bus.insert(0x0, 0, dev.clone()).is_err());
        assert!(bus.insert(u64::MAX, 2, dev.clone()).is_err());
        bus.insert(0x110, 0x10, dev.clone()).unwrap();
        bus.insert(0xf0, 0x10, dev).unwrap();
    }
}
