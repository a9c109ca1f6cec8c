use std::collections::VecDeque;
use std::os::fd::RawFd;

use super::*;
use crate::virtio::test_queue::{TestQueue, WRITE};

/// An in-memory backend: frames to deliver, frames sent, offloads set.
struct FakeBackend {
    inbox: VecDeque<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    offloads: Option<(bool, bool, bool)>,
    fd: EventFd,
}

impl AsRawFd for FakeBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl NetBackend for FakeBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(self.inbox.pop_front().map(|f| {
            buf[..f.len()].copy_from_slice(&f);
            f.len()
        }))
    }

    fn recv_parts(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<Option<usize>> {
        Ok(self.inbox.pop_front().map(|f| {
            let mut off = 0;
            for p in parts {
                let n = p.len().min(f.len() - off);
                p.copy_from(&f[off..off + n]);
                off += n;
            }
            assert_eq!(off, f.len(), "the parts hold the whole frame");
            off
        }))
    }

    fn send(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()> {
        let mut frame = Vec::new();
        for p in parts {
            let mut v = vec![0u8; p.len()];
            p.copy_to(&mut v[..]);
            frame.extend(v);
        }
        self.sent.push(frame);
        Ok(())
    }

    fn set_offloads(&mut self, csum: bool, tso4: bool, tso6: bool) -> io::Result<()> {
        self.offloads = Some((csum, tso4, tso6));
        Ok(())
    }
}

const RXBUF: u64 = 0x10_0000;
const RXBUF_SIZE: u32 = 1526;
const TXBUF: u64 = 0x80_0000;

struct Rig {
    dev: Net<FakeBackend>,
    rx: TestQueue,
    tx: TestQueue,
    irq: Arc<Interrupt>,
}

impl Rig {
    fn new(features: u64) -> Rig {
        let backend = FakeBackend {
            inbox: VecDeque::new(),
            sent: Vec::new(),
            offloads: None,
            fd: EventFd::new(EFD_NONBLOCK).unwrap(),
        };
        let mut dev = Net::new(backend, [2, 0, 0, 0, 0, 1], 1500).unwrap();
        let rx = TestQueue::new(64);
        let tx = rx.sibling(0x1_0000, 64);
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let ctx = ActivateContext {
            mem: rx.mem.clone(),
            queues: vec![rx.queue(), tx.queue()],
            interrupt: irq.clone(),
            acked_features: features,
        };
        dev.activate(ctx).unwrap();
        Rig { dev, rx, tx, irq }
    }

    /// Posts `n` receive buffers of `size` bytes; returns their addresses.
    fn give_rx(&mut self, n: usize, size: u32) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let head = self.rx.add_chain(&[(0, 0, 0)]);
                let addr = RXBUF + head as u64 * 0x1_0000;
                self.rx.write(head as u64 * 16, &addr.to_le_bytes());
                self.rx.write(head as u64 * 16 + 8, &size.to_le_bytes());
                self.rx.write(head as u64 * 16 + 12, &WRITE.to_le_bytes());
                addr
            })
            .collect()
    }
}

fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; VIRTIO_NET_HDR_LEN];
    f.extend((0..len - VIRTIO_NET_HDR_LEN).map(|i| (i % 251) as u8));
    f
}

const ALL: u64 = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_GUEST_CSUM;

#[test]
fn tx_sends_whole_frames_from_split_chains() {
    let mut r = Rig::new(ALL);
    let f = frame(112);
    r.tx.write(TXBUF, &f[..12]);
    r.tx.write(TXBUF + 0x1000, &f[12..]);
    r.tx.add_chain(&[(TXBUF, 12, 0), (TXBUF + 0x1000, 100, 0)]);
    r.dev.process_tx();
    assert_eq!(r.dev.backend_mut().sent, vec![f]);
    assert_eq!(r.tx.used_idx(), 1);
    assert_eq!(r.dev.stats().tx_frames, 1);
}

/// The frame goes out as the guest's buffers themselves (no copy), in chain order; a
/// device-writable descriptor has no place in a transmit chain and is left out.
#[test]
fn tx_sends_the_readable_buffers_in_order_and_skips_writable_ones() {
    let mut r = Rig::new(ALL);
    let f = frame(300);
    r.tx.write(TXBUF + 0x2000, &f[..12]);
    r.tx.write(TXBUF, &f[12..100]);
    r.tx.write(TXBUF + 0x3000, &[0xee; 50]);
    r.tx.write(TXBUF + 0x1000, &f[100..]);
    r.tx.add_chain(&[
        (TXBUF + 0x2000, 12, 0),
        (TXBUF, 88, 0),
        (TXBUF + 0x3000, 50, WRITE),
        (TXBUF + 0x1000, 200, 0),
    ]);
    r.dev.process_tx();
    assert_eq!(r.dev.backend_mut().sent, vec![f]);
    assert_eq!(r.dev.stats().tx_frames, 1);
}

#[test]
fn tx_drops_malformed_and_oversized_chains_and_goes_on() {
    let mut r = Rig::new(ALL);
    // Outside guest memory.
    r.tx.add_chain(&[(0xffff_0000_0000, 100, 0)]);
    // Only a header: no packet.
    r.tx.add_chain(&[(TXBUF, 12, 0)]);
    // Larger than any frame.
    r.tx.add_chain(&[(TXBUF, MAX_FRAME as u32 + 1, 0)]);
    let f = frame(60);
    r.tx.write(TXBUF, &f);
    r.tx.add_chain(&[(TXBUF, 60, 0)]);
    r.dev.process_tx();
    assert_eq!(r.dev.backend_mut().sent, vec![f]);
    assert_eq!(r.tx.used_idx(), 4);
    assert_eq!(r.dev.stats().tx_dropped, 3);
}

#[test]
fn rx_merges_buffers_and_sets_num_buffers() {
    let mut r = Rig::new(ALL);
    let addrs = r.give_rx(3, RXBUF_SIZE);
    let f = frame(3000);
    r.dev.backend_mut().inbox.push_back(f.clone());
    assert!(r.dev.process_rx());
    // Two buffers: 1526 + 1474 bytes.
    assert_eq!(r.rx.used_idx(), 2);
    assert_eq!(r.rx.used(0).1, RXBUF_SIZE);
    assert_eq!(r.rx.used(1).1, 3000 - RXBUF_SIZE);
    let mut got = r.rx.read(addrs[0], RXBUF_SIZE as usize);
    got.extend(r.rx.read(addrs[1], 3000 - RXBUF_SIZE as usize));
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2, "num_buffers");
    assert_eq!(&got[12..], &f[12..]);
    assert_eq!(r.dev.stats().rx_frames, 1);
}

/// With buffers at the head of the ring for any frame, a frame is read straight into them:
/// the chains it fills are used (with `num_buffers` in its header), the rest stay posted
/// for the next frames, in order.
#[test]
fn rx_reads_in_place_when_the_posted_buffers_hold_any_frame() {
    for features in [ALL, ALL | VIRTIO_RING_F_EVENT_IDX] {
        let mut r = Rig::new(features);
        let addrs = r.give_rx(64, RXBUF_SIZE);
        let (big, small) = (frame(5000), frame(70));
        r.dev.backend_mut().inbox.push_back(big.clone());
        r.dev.backend_mut().inbox.push_back(small.clone());
        assert!(r.dev.process_rx());
        // 5000 bytes: three full buffers and 422 bytes of a fourth; then the next buffer.
        assert_eq!(r.rx.used_idx(), 5);
        let lens: Vec<u32> = (0..5).map(|i| r.rx.used(i).1).collect();
        assert_eq!(lens, [RXBUF_SIZE, RXBUF_SIZE, RXBUF_SIZE, 5000 - 3 * RXBUF_SIZE, 70]);
        let mut got = Vec::new();
        for (i, len) in lens[..4].iter().enumerate() {
            got.extend(r.rx.read(addrs[i], *len as usize));
        }
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 4, "num_buffers");
        assert_eq!(&got[12..], &big[12..]);
        let got = r.rx.read(addrs[4], 70);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
        assert_eq!(&got[12..], &small[12..]);
        assert_eq!(r.dev.stats(), NetStats { rx_frames: 2, ..Default::default() });
        assert!(r.dev.pending.is_none());
    }
}

#[test]
fn rx_waits_for_buffers_without_losing_the_frame() {
    let mut r = Rig::new(ALL);
    r.dev.backend_mut().inbox.push_back(frame(100));
    r.dev.backend_mut().inbox.push_back(frame(200));
    assert!(!r.dev.process_rx(), "no buffers yet");
    assert_eq!(r.rx.used_idx(), 0);
    r.give_rx(1, RXBUF_SIZE);
    r.dev.process_rx();
    assert_eq!(r.rx.used_idx(), 1);
    assert_eq!(r.rx.used(0).1, 100);
    r.give_rx(1, RXBUF_SIZE);
    r.dev.process_rx();
    assert_eq!(r.rx.used(1).1, 200);
    assert_eq!(r.dev.stats(), NetStats { rx_frames: 2, ..Default::default() });
}

/// A frame that needs more buffers than the driver has posted waits for more (it must not
/// spin on the buffers it cannot use, nor ask for a notification the driver already passed).
#[test]
fn rx_frame_larger_than_the_posted_buffers_waits_for_more() {
    for features in [ALL, ALL | VIRTIO_RING_F_EVENT_IDX] {
        let mut r = Rig::new(features);
        let first = r.give_rx(1, RXBUF_SIZE);
        r.dev.backend_mut().inbox.push_back(frame(3000));
        assert!(!r.dev.process_rx(), "nothing delivered yet");
        assert_eq!(r.rx.used_idx(), 0);
        if features & VIRTIO_RING_F_EVENT_IDX != 0 {
            assert_eq!(r.rx.avail_event(), 1, "kick me when buffers past the first come");
        }
        let more = r.give_rx(2, RXBUF_SIZE);
        r.dev.process_rx();
        assert_eq!(r.rx.used_idx(), 2, "the frame took the first buffer and one more");
        let mut got = r.rx.read(first[0], RXBUF_SIZE as usize);
        got.extend(r.rx.read(more[0], 3000 - RXBUF_SIZE as usize));
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2);
        assert_eq!(&got[12..], &frame(3000)[12..]);
    }
    // A frame larger than the whole ring: dropped, the buffers stay for the next frames.
    let mut r = Rig::new(ALL);
    r.give_rx(64, 100);
    r.dev.backend_mut().inbox.push_back(frame(64 * 100 + 1));
    r.dev.backend_mut().inbox.push_back(frame(80));
    r.dev.process_rx();
    assert_eq!(r.dev.stats().rx_dropped, 1);
    assert_eq!(r.rx.used_idx(), 1);
    assert_eq!(r.rx.used(0).1, 80);
}

#[test]
fn rx_without_merging_drops_a_frame_too_big_for_one_buffer() {
    let mut r = Rig::new(VIRTIO_F_VERSION_1);
    r.give_rx(2, RXBUF_SIZE);
    r.dev.backend_mut().inbox.push_back(frame(3000));
    r.dev.backend_mut().inbox.push_back(frame(64));
    r.dev.process_rx();
    assert_eq!(r.rx.used_idx(), 2);
    assert_eq!(r.rx.used(0).1, 0, "dropped, buffer returned empty");
    assert_eq!(r.rx.used(1).1, 64);
    assert_eq!(r.dev.stats().rx_dropped, 1);
    assert!(r.irq.status() & crate::virtio::INT_VRING == 0, "process_rx itself doesn't signal");
}

#[test]
fn activation_sets_offloads_and_checks_queues() {
    let mut r = Rig::new(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4);
    assert_eq!(r.dev.backend_mut().offloads, Some((true, true, false)));
    let mut cfg = [0u8; 12];
    r.dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[0..6], &[2, 0, 0, 0, 0, 1]);
    assert_eq!(u16::from_le_bytes([cfg[10], cfg[11]]), 1500);
    r.dev.reset();
    let t = TestQueue::new(16);
    let (ctx, _) = t.activate_ctx(1, VIRTIO_F_VERSION_1);
    assert!(r.dev.activate(ctx).is_err());
}

#[test]
fn a_broken_rx_ring_does_not_hang_the_device() {
    // Regression (fuzz target virtio_net): an avail index more than a ring ahead made the
    // receive path retry forever.
    let mut r = Rig::new(VIRTIO_F_VERSION_1);
    r.dev.backend_mut().inbox.push_back(frame(100));
    let avail_idx = 16 * 64 + 2;
    r.rx.write(avail_idx, &1000u16.to_le_bytes());
    let t = std::time::Instant::now();
    r.dev.process_rx();
    r.dev.process_rx();
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(r.dev.stats().rx_frames, 0);
    // The frame waits; once the driver repairs its ring and posts a buffer, it arrives.
    r.rx.write(avail_idx, &0u16.to_le_bytes());
    r.give_rx(1, RXBUF_SIZE);
    r.dev.process_rx();
    assert_eq!(r.dev.stats().rx_frames, 1);
}

#[test]
fn a_wake_up_moves_at_most_its_budget_each_way_and_comes_back_for_the_rest() {
    let mut r = Rig::new(ALL);
    r.dev.set_budget(2);
    // tx: five frames queued, two per wake-up.
    let f = frame(60);
    r.tx.write(TXBUF, &f);
    for _ in 0..5 {
        r.tx.add_chain(&[(TXBUF, 60, 0)]);
    }
    for want in [2, 4, 5] {
        r.dev.process_tx();
        assert_eq!(r.tx.used_idx(), want);
        let rearmed = r.dev.queue_evts[TX].read().is_ok();
        assert_eq!(rearmed, want < 5, "the tx event is raised while work may remain");
    }
    // rx: a flood from the backend, room for all of it; two frames per wake-up.
    r.give_rx(8, RXBUF_SIZE);
    for _ in 0..5 {
        r.dev.backend_mut().inbox.push_back(frame(100));
    }
    for want in [2, 4, 5] {
        r.dev.process_rx();
        assert_eq!(r.rx.used_idx(), want);
        let rearmed = r.dev.queue_evts[RX].read().is_ok();
        assert_eq!(rearmed, want < 5, "the rx event is raised while frames may remain");
    }
}
