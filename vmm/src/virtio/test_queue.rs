//! Test helper: a driver-side view of one split virtqueue in real guest memory, able to build
//! any descriptor chain — including malformed ones (loops, out-of-range addresses, bad lengths).

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActivateContext, GuestMemoryMmap, Interrupt};

/// Descriptor flag: continues in `next`.
pub const NEXT: u16 = 1;
/// Descriptor flag: device writes this buffer.
pub const WRITE: u16 = 2;

/// Guest memory of 16 MiB with one queue at address 0 and data from 1 MiB.
pub struct TestQueue {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    size: u16,
    next_desc: u16,
    base: u64,
}

impl TestQueue {
    /// A queue of `size` entries in fresh guest memory.
    pub fn new(size: u16) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        TestQueue { mem, size, next_desc: 0, base: 0 }
    }

    /// Another queue of `size` entries at `base` in the same guest memory.
    pub fn sibling(&self, base: u64, size: u16) -> Self {
        TestQueue { mem: self.mem.clone(), size, next_desc: 0, base }
    }

    fn avail_addr(&self) -> u64 {
        self.base + 16 * self.size as u64
    }

    fn used_addr(&self) -> u64 {
        (self.avail_addr() + 6 + 2 * self.size as u64 + 3) & !3
    }

    /// The device's `avail_event` (after the used ring; with `VIRTIO_RING_F_EVENT_IDX`).
    pub fn avail_event(&self) -> u16 {
        let b = self.read(self.used_addr() + 4 + 8 * self.size as u64, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    /// A ready `Queue` for the device.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_ready(true);
        q.set_desc_table_address(Some(self.base as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail_addr() as u32), Some(0));
        q.set_used_ring_address(Some(self.used_addr() as u32), Some(0));
        q
    }

    /// An activation context holding a fresh queue `n` times, plus the interrupt.
    pub fn activate_ctx(&self, n: usize, features: u64) -> (ActivateContext, Arc<Interrupt>) {
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues: (0..n).map(|_| self.queue()).collect(),
            interrupt: irq.clone(),
            acked_features: features,
        };
        (ctx, irq)
    }

    fn store_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let base = self.base + 16 * (index % self.size) as u64;
        self.mem.write_obj(addr, GuestAddress(base)).unwrap();
        self.mem.write_obj(len, GuestAddress(base + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(base + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(base + 14)).unwrap();
    }

    fn publish(&self, head: u16) {
        let idx_addr = GuestAddress(self.avail_addr() + 2);
        let idx: u16 = self.mem.read_obj(idx_addr).unwrap();
        let slot = self.avail_addr() + 4 + 2 * (idx % self.size) as u64;
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.mem.write_obj(idx.wrapping_add(1), idx_addr).unwrap();
    }

    /// Adds a chain of (addr, len, flags) descriptors, linking them with NEXT, and makes it
    /// available; returns the head index.
    pub fn add_chain(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc % self.size;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = (head + i as u16) % self.size;
            let last = i == descs.len() - 1;
            let flags = if last { flags & !NEXT } else { flags | NEXT };
            self.store_desc(idx, addr, len, flags, (idx + 1) % self.size);
        }
        self.next_desc = (head + descs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    /// Adds descriptors exactly as given as (addr, len, flags, next) with `next` relative to
    /// the head (for loops and other driver bugs; values past the table stay absolute when
    /// they are >= the queue size); the first one is made available.
    pub fn add_raw(&mut self, descs: &[(u64, u32, u16, u16)]) -> u16 {
        let head = self.next_desc % self.size;
        for (i, &(a, l, f, n)) in descs.iter().enumerate() {
            let next = if n >= self.size { n } else { (head + n) % self.size };
            self.store_desc((head + i as u16) % self.size, a, l, f, next);
        }
        self.next_desc = (head + descs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    /// Number of used entries so far.
    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj::<u16>(GuestAddress(self.used_addr() + 2)).unwrap()
    }

    /// Used entry `i`: (descriptor head id, bytes written).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let addr = self.used_addr() + 4 + 8 * (i % self.size) as u64;
        let id: u32 = self.mem.read_obj(GuestAddress(addr)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(addr + 4)).unwrap();
        (id, len)
    }

    /// Writes bytes to guest memory.
    pub fn write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    /// Reads bytes from guest memory.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}
