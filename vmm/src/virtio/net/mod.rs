//! virtio-net in user space: frames move between the guest's queues and a [`NetBackend`]
//! (a tap device in the pod's network namespace; no vhost on these hosts).
//!
//! Frames carry the 12-byte `virtio_net_hdr_v1` both ways, the same header the tap device
//! speaks with `IFF_VNET_HDR`, so checksum and TCP segmentation offloads pass through: the
//! guest may send 64 KiB TSO frames and receive them, spread over several small receive
//! buffers (`VIRTIO_NET_F_MRG_RXBUF`), which keeps the guest's receive memory small.
//!
//! Descriptor chains are untrusted: they are read and written through `virtio_queue`'s
//! checked Reader/Writer; a frame that fits nowhere is dropped and counted, and every chain
//! taken from a queue goes back to the used ring.

pub mod socket;
pub mod tap;
#[cfg(test)]
mod tests;

use std::io;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions, VolatileSlice};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use super::{
    device_type, read_config_bytes, ActivateContext, ActivateError, GuestMemoryMmap, Interrupt,
    VirtioDevice,
};

/// Size of `virtio_net_hdr_v1` (with `num_buffers`).
pub const VIRTIO_NET_HDR_LEN: usize = 12;
/// Largest frame: a 64 KiB GSO packet with its Ethernet and virtio-net headers.
pub const MAX_FRAME: usize = VIRTIO_NET_HDR_LEN + 14 + 65535;
const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
const BACKEND: u32 = 2;

/// The device handles packets with partial checksum.
pub const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
/// The driver handles packets with partial checksum.
pub const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
/// The device reports its MTU.
pub const VIRTIO_NET_F_MTU: u64 = 1 << 3;
/// The device has a MAC address.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// The driver takes TSOv4 frames.
pub const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
/// The driver takes TSOv6 frames.
pub const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
/// The device takes TSOv4 frames.
pub const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
/// The device takes TSOv6 frames.
pub const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
/// The driver merges receive buffers.
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;

/// Where a virtio-net device sends and receives frames (each with its 12-byte header).
pub trait NetBackend: AsRawFd + Send {
    /// Reads one frame into `buf`; `None` when no frame is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Reads one frame into `parts` in order (the guest's receive buffers themselves: one
    /// `readv` for a tap, no copy); its length, `None` when no frame is waiting. The parts
    /// hold at least [`MAX_FRAME`] bytes, so no frame is cut.
    fn recv_parts(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<Option<usize>>;
    /// Writes one frame given in parts: the guest's transmit buffers themselves, so the
    /// frame is not copied on its way out (one `writev` for a tap).
    fn send(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()>;
    /// Tells the backend which offloads the guest accepts on receive.
    fn set_offloads(&mut self, csum: bool, tso4: bool, tso6: bool) -> io::Result<()>;
}

/// Frame counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Frames sent by the guest to the backend.
    pub tx_frames: u64,
    /// Received frames dropped (no room in the guest's buffers, backend errors).
    pub rx_dropped: u64,
    /// Guest frames dropped (malformed chains, oversized, backend refused).
    pub tx_dropped: u64,
}

struct Active {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
    mergeable: bool,
}

/// A virtio-net device.
pub struct Net<B: NetBackend> {
    backend: B,
    config: [u8; 12],
    queue_evts: [EventFd; 2],
    active: Option<Active>,
    /// A frame read from the backend that waits for guest receive buffers.
    pending: Option<usize>,
    rx_buf: Vec<u8>,
    stats: NetStats,
    /// Frames moved per wake-up and direction (a queue's worth): then the event loop serves
    /// the rest of the VM, and the queue's own event brings the device back.
    budget: usize,
}

impl<B: NetBackend> Net<B> {
    /// A device with MAC address `mac` and `mtu`, on `backend`.
    pub fn new(backend: B, mac: [u8; 6], mtu: u16) -> io::Result<Self> {
        let mut config = [0u8; 12];
        config[0..6].copy_from_slice(&mac);
        config[10..12].copy_from_slice(&mtu.to_le_bytes());
        Ok(Net {
            backend,
            config,
            queue_evts: [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?],
            active: None,
            pending: None,
            rx_buf: vec![0u8; MAX_FRAME],
            stats: NetStats::default(),
            budget: usize::from(QUEUE_SIZE),
        })
    }

    /// Sets the frames moved per wake-up (tests).
    #[cfg(test)]
    pub(crate) fn set_budget(&mut self, n: usize) {
        self.budget = n.max(1);
    }

    /// Frame counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The backend (for tests).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Moves frames from the backend to the guest until the backend has none, the guest
    /// has no room, or a queue's worth has moved (then the rx queue's event is raised again:
    /// a flood from outside cannot hold the event loop); returns whether the guest must be
    /// interrupted.
    pub fn process_rx(&mut self) -> bool {
        let mut used = false;
        let mut budget = self.budget;
        loop {
            if budget == 0 {
                let _ = self.queue_evts[RX].write(1);
                break;
            }
            budget -= 1;
            if self.pending.is_none() {
                match self.receive_in_place() {
                    Direct::Done => {
                        self.stats.rx_frames += 1;
                        used = true;
                        continue;
                    }
                    Direct::Dropped => {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    Direct::Empty => break,
                    Direct::Unavailable => {}
                }
            }
            let len = match self.pending.take() {
                Some(len) => len,
                None => match self.backend.recv(&mut self.rx_buf) {
                    Ok(Some(len)) if len >= VIRTIO_NET_HDR_LEN => len,
                    Ok(Some(_)) => {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        self.stats.rx_dropped += 1;
                        break;
                    }
                },
            };
            match self.deliver(len) {
                Delivery::Done => {
                    self.stats.rx_frames += 1;
                    used = true;
                }
                Delivery::Dropped => {
                    self.stats.rx_dropped += 1;
                    used = true;
                }
                Delivery::NoRoom => {
                    // Wait for the guest to post buffers (it kicks the rx queue).
                    self.pending = Some(len);
                    break;
                }
            }
        }
        let Some(a) = self.active.as_mut() else { return false };
        used && a.queues[RX].needs_notification(&a.mem).unwrap_or(true)
    }

    /// Reads the next frame from the backend straight into the guest's receive buffers when
    /// the buffers at the head of the ring hold any frame ([`MAX_FRAME`] bytes; with
    /// mergeable buffers, as many chains as that takes), then gives back the chains the
    /// frame did not fill. Otherwise the caller reads into `rx_buf` and copies
    /// ([`Self::deliver`]), which can wait for buffers.
    fn receive_in_place(&mut self) -> Direct {
        let Some(a) = self.active.as_mut() else { return Direct::Unavailable };
        let mem = a.mem.clone();
        let q = &mut a.queues[RX];
        let start = q.next_avail();
        // (head, capacity) of each chain taken, and its buffers in order.
        let mut chains: Vec<(u16, usize)> = Vec::new();
        let mut parts: Vec<VolatileSlice> = Vec::new();
        let mut room = 0usize;
        while room < MAX_FRAME && (a.mergeable || chains.is_empty()) {
            let Some(chain) = q.iter(&mem).ok().and_then(|mut it| it.next()) else { break };
            let head = chain.head_index();
            let before = (parts.len(), room);
            let mut ok = true;
            for desc in chain.writable() {
                let Ok(slices) =
                    mem.get_slices(desc.addr(), desc.len() as usize, Permissions::Write)
                else {
                    ok = false;
                    break;
                };
                for slice in slices {
                    match slice {
                        Ok(s) if parts.len() < tap::MAX_PARTS => {
                            room += s.len();
                            parts.push(s);
                        }
                        _ => ok = false,
                    }
                }
            }
            if !ok {
                // A buffer outside guest memory: the copying path deals with this chain.
                parts.truncate(before.0);
                room = before.1;
                break;
            }
            chains.push((head, room - before.1));
        }
        if room < MAX_FRAME {
            q.set_next_avail(start);
            return Direct::Unavailable;
        }
        let len = match self.backend.recv_parts(&parts) {
            Ok(Some(len)) => len,
            Ok(None) => {
                q.set_next_avail(start);
                return Direct::Empty;
            }
            Err(e) => {
                q.set_next_avail(start);
                // Interrupted: nothing was read, the copying path tries again.
                return if e.kind() == io::ErrorKind::Interrupted {
                    Direct::Unavailable
                } else {
                    Direct::Empty
                };
            }
        };
        if len < VIRTIO_NET_HDR_LEN {
            // Nothing the guest can take: the buffers stay posted.
            q.set_next_avail(start);
            return Direct::Dropped;
        }
        // The chains the frame filled go to the used ring; the rest stay posted.
        let mut left = len;
        let mut n = 0u16;
        for &(head, cap) in &chains {
            if left == 0 {
                break;
            }
            let take = cap.min(left);
            let _ = q.add_used(&mem, head, take as u32);
            left -= take;
            n += 1;
        }
        write_at(&parts, 10, &n.to_le_bytes());
        q.set_next_avail(start.wrapping_add(n));
        Direct::Done
    }

    /// Puts the frame in `rx_buf[..len]` into the guest's receive buffers.
    fn deliver(&mut self, len: usize) -> Delivery {
        let Some(a) = self.active.as_mut() else { return Delivery::NoRoom };
        let mem = a.mem.clone();
        let mergeable = a.mergeable;
        let q = &mut a.queues[RX];
        'retry: loop {
            let start = q.next_avail();
            // Take chains until the frame fits (one chain unless buffers merge).
            let mut chains = Vec::new();
            let mut room = 0usize;
            loop {
                let next = match q.iter(&mem) {
                    Ok(mut it) => it.next(),
                    Err(_) => {
                        // A ring the driver broke (an avail index further ahead than the
                        // ring holds): nothing to take, and nothing to retry until the
                        // next kick (found by fuzzing: this used to spin forever).
                        q.set_next_avail(start);
                        return Delivery::NoRoom;
                    }
                };
                let Some(chain) = next else {
                    // Out of buffers: put the chains back; be kicked when more come.
                    q.set_next_avail(start);
                    if chains.is_empty() {
                        match q.enable_notification(&mem) {
                            Ok(true) => continue 'retry,
                            _ => return Delivery::NoRoom,
                        }
                    }
                    // The frame needs more than every buffer posted so far.
                    if chains.len() >= usize::from(q.size()) {
                        // More than the whole ring holds: it never fits.
                        return Delivery::Dropped;
                    }
                    match kick_after_current(q, &mem) {
                        Ok(true) => continue 'retry,
                        _ => return Delivery::NoRoom,
                    }
                };
                let cap = chain.clone().writer(&mem).map(|w| w.available_bytes()).unwrap_or(0);
                chains.push(chain);
                room += cap;
                if room >= len || !mergeable {
                    break;
                }
            }
            if room < len {
                // A chain too small for the frame (a driver bug or a hostile guest).
                for chain in chains {
                    let _ = q.add_used(&mem, chain.head_index(), 0);
                }
                return Delivery::Dropped;
            }
            // num_buffers in the header, then the frame across the chains.
            let n = chains.len() as u16;
            self.rx_buf[10..12].copy_from_slice(&n.to_le_bytes());
            let mut off = 0;
            for chain in chains {
                let head = chain.head_index();
                let mut written = 0;
                if let Ok(mut w) = chain.writer(&mem) {
                    let take = w.available_bytes().min(len - off);
                    if w.write_all(&self.rx_buf[off..off + take]).is_ok() {
                        written = take;
                    }
                    off += take;
                }
                let _ = q.add_used(&mem, head, written as u32);
            }
            return Delivery::Done;
        }
    }

    /// Sends the frames the guest queued, at most a queue's worth (then the tx queue's
    /// event is raised again and the rest waits its turn); returns whether the guest must be
    /// interrupted.
    pub fn process_tx(&mut self) -> bool {
        let Some(a) = self.active.as_mut() else { return false };
        let mem = a.mem.clone();
        let q = &mut a.queues[TX];
        let mut used = false;
        let mut budget = self.budget;
        loop {
            if q.disable_notification(&mem).is_err() {
                break;
            }
            let chains: Vec<_> = match q.iter(&mem) {
                Ok(it) => it.take(budget).collect(),
                Err(_) => break,
            };
            budget -= chains.len();
            let mut parts = Vec::new();
            for chain in chains {
                let head = chain.head_index();
                let ok = frame_parts(&mem, chain, &mut parts) && self.backend.send(&parts).is_ok();
                if ok {
                    self.stats.tx_frames += 1;
                } else {
                    self.stats.tx_dropped += 1;
                }
                let _ = q.add_used(&mem, head, 0);
                used = true;
            }
            if budget == 0 {
                let _ = self.queue_evts[TX].write(1);
                break;
            }
            match q.enable_notification(&mem) {
                Ok(true) => continue,
                _ => break,
            }
        }
        used && q.needs_notification(&mem).unwrap_or(true)
    }

    fn signal(&self) {
        if let Some(a) = &self.active {
            let _ = a.interrupt.signal_used_queue();
        }
    }
}

/// The guest memory a transmit chain's readable descriptors name, in order, into `parts`;
/// false for a frame that is not one: no header and data, longer than [`MAX_FRAME`], in more than
/// [`tap::MAX_PARTS`] parts, or a buffer outside guest memory. (Write-only descriptors have no place in a transmit chain
/// and are skipped.)
fn frame_parts<'m>(
    mem: &'m GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    parts: &mut Vec<VolatileSlice<'m>>,
) -> bool {
    parts.clear();
    let mut total = 0usize;
    for desc in chain.readable() {
        let len = desc.len() as usize;
        total += len;
        if total > MAX_FRAME {
            return false;
        }
        let Ok(slices) = mem.get_slices(desc.addr(), len, Permissions::Read) else {
            return false;
        };
        for slice in slices {
            match slice {
                Ok(s) if parts.len() < tap::MAX_PARTS => parts.push(s),
                _ => return false,
            }
        }
    }
    total > VIRTIO_NET_HDR_LEN
}

enum Delivery {
    Done,
    Dropped,
    NoRoom,
}

/// How [`Net::receive_in_place`] went.
enum Direct {
    /// A frame is in the guest's buffers.
    Done,
    /// The backend gave something that is not a frame.
    Dropped,
    /// The backend has no frame waiting.
    Empty,
    /// Not enough buffers at the head of the ring for any frame: copy instead.
    Unavailable,
}

/// Writes `bytes` at offset `at` of the buffer that `parts` make up, across part boundaries.
fn write_at(parts: &[VolatileSlice<'_>], mut at: usize, mut bytes: &[u8]) {
    for p in parts {
        if bytes.is_empty() {
            return;
        }
        if at >= p.len() {
            at -= p.len();
            continue;
        }
        let n = (p.len() - at).min(bytes.len());
        let _ = p.write_slice(&bytes[..n], at);
        bytes = &bytes[n..];
        at = 0;
    }
}

/// Asks the driver to notify once it posts buffers beyond those it has posted so far (not
/// beyond those the device consumed: chains put back are posted already, and a notification
/// point behind them would never be passed again). Returns whether more came meanwhile.
fn kick_after_current(q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, virtio_queue::Error> {
    let now = q.avail_idx(mem, Ordering::Acquire)?;
    if q.event_idx_enabled() {
        // avail_event sits after the used ring's entries (virtio 1.x, 2.7.10).
        let at = q.used_ring() + 4 + 8 * u64::from(q.size());
        mem.store(now.0.to_le(), GuestAddress(at), Ordering::Release)
            .map_err(virtio_queue::Error::GuestMemory)?;
    } else {
        q.enable_notification(mem)?;
    }
    fence(Ordering::SeqCst);
    Ok(q.avail_idx(mem, Ordering::Acquire)? != now)
}

impl<B: NetBackend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_NET_F_MAC
            | VIRTIO_NET_F_MTU
            | VIRTIO_NET_F_MRG_RXBUF
            | VIRTIO_NET_F_CSUM
            | VIRTIO_NET_F_GUEST_CSUM
            | VIRTIO_NET_F_GUEST_TSO4
            | VIRTIO_NET_F_GUEST_TSO6
            | VIRTIO_NET_F_HOST_TSO4
            | VIRTIO_NET_F_HOST_TSO6
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The MAC is the device's (no VIRTIO_NET_F_CTRL_MAC_ADDR): writes are ignored.
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 2 {
            return Err(ActivateError::QueueCount { expected: 2, got: ctx.queues.len() });
        }
        let f = ctx.acked_features;
        let mut queues = ctx.queues;
        for q in &mut queues {
            q.set_event_idx(f & VIRTIO_RING_F_EVENT_IDX != 0);
        }
        self.backend
            .set_offloads(
                f & VIRTIO_NET_F_GUEST_CSUM != 0,
                f & VIRTIO_NET_F_GUEST_TSO4 != 0,
                f & VIRTIO_NET_F_GUEST_TSO6 != 0,
            )
            .map_err(|e| ActivateError::Backend(format!("tap offloads: {e}")))?;
        self.active = Some(Active {
            mem: ctx.mem,
            queues,
            interrupt: ctx.interrupt,
            mergeable: f & VIRTIO_NET_F_MRG_RXBUF != 0,
        });
        // Frames may be waiting on either side.
        let rx = self.process_rx();
        let tx = self.process_tx();
        if rx || tx {
            self.signal();
        }
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        self.pending = None;
    }

    /// (A frame read from the tap and not yet delivered is not kept: the network drops it,
    /// as it may drop any.)
    fn queue_states(&self) -> Vec<crate::virtio::QueueState> {
        self.active.iter().flat_map(|a| a.queues.iter().map(|q| q.state())).collect()
    }
}

impl<B: NetBackend> MutEventSubscriber for Net<B> {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let notify = match events.data() {
            0 => {
                let _ = self.queue_evts[RX].read();
                self.process_rx()
            }
            1 => {
                let _ = self.queue_evts[TX].read();
                self.process_tx()
            }
            // The tap is edge-triggered: read until it is empty or the guest has no room
            // (then the guest's next rx kick resumes).
            BACKEND => self.process_rx(),
            _ => false,
        };
        if notify {
            self.signal();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let fd = self.backend.as_raw_fd();
        for (i, evt) in self.queue_evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                eprintln!("ironpod-vmm: cannot register virtio-net queue event: {e:?}");
            }
        }
        let set = EventSet::IN | EventSet::EDGE_TRIGGERED;
        if let Err(e) = ops.add(Events::with_data_raw(fd, BACKEND, set)) {
            eprintln!("ironpod-vmm: cannot register the tap device: {e:?}");
        }
    }
}
