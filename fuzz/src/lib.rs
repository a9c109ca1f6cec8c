//! What the fuzz targets share: a guest whose memory — the devices' descriptor tables,
//! rings and the buffers they point to — is written by the fuzzer, byte for byte, as a
//! hostile guest kernel could.

use std::os::fd::RawFd;
use std::sync::Arc;

use ironpod_vmm::virtio::test_queue::TestQueue;
use ironpod_vmm::virtio::vsock::muxer::Registrar;
use ironpod_vmm::virtio::{ActivateContext, Interrupt};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest memory bytes, from address 0, that come from the fuzz input: the queues (one per
/// 4 KiB, [`QUEUE_SIZE`] entries) and buffers after them. The rest of the 16 MiB is zero;
/// addresses beyond it are outside guest memory.
pub const LAYOUT: usize = 64 << 10;
/// Entries per queue.
pub const QUEUE_SIZE: u16 = 16;

/// Splits off the first 8 bytes as feature bits the driver acks (masked with what the
/// device offers); the rest is guest memory.
pub fn features_and_memory(data: &[u8], offered: u64) -> (u64, &[u8]) {
    if data.len() < 8 {
        return (offered, data);
    }
    let (f, rest) = data.split_at(8);
    (offered & u64::from_le_bytes(f.try_into().unwrap_or_default()), rest)
}

/// A guest with `queues` queues whose memory starts with `memory`, and the context that
/// activates a device on them with `features`.
pub fn guest(memory: &[u8], queues: usize, features: u64) -> (Vec<TestQueue>, ActivateContext) {
    let first = TestQueue::new(QUEUE_SIZE);
    first.write(0, &memory[..memory.len().min(LAYOUT)]);
    let qs: Vec<TestQueue> =
        (0..queues).map(|i| first.sibling(i as u64 * 0x1000, QUEUE_SIZE)).collect();
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")));
    let ctx = ActivateContext {
        mem: first.mem.clone(),
        queues: qs.iter().map(TestQueue::queue).collect(),
        interrupt: irq,
        acked_features: features,
    };
    (qs, ctx)
}

/// Cuts `data` into pieces, each prefixed by a one-byte length (at most `max` pieces).
pub fn pieces(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        if out.len() == max {
            break;
        }
        let n = (n as usize).min(tail.len());
        out.push(&tail[..n]);
        rest = &tail[n..];
    }
    out
}

/// A registrar for the vsock device without an event loop: the targets drive it by hand.
pub struct NoLoop;

impl Registrar for NoLoop {
    fn add(&mut self, _: RawFd, _: u32, _: EventSet) {}
    fn remove(&mut self, _: RawFd, _: u32, _: EventSet) {}
}
