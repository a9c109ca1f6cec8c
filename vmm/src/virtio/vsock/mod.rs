//! virtio-vsock emulated in user space (no vhost on our hosts), with the hybrid unix-socket
//! backend of Firecracker and Cloud Hypervisor (see [`muxer`]).
//!
//! Queues: 0 = rx (device → driver), 1 = tx (driver → device), 2 = event (used once, after a
//! VM is restored from a snapshot: the transport-reset event tells the driver that every
//! connection is gone and to read its CID again). Every tx chain is untrusted: short or split headers, lengths beyond the buffers,
//! bad CIDs, unknown operations and packets for unknown connections are answered with RST
//! or dropped, and the descriptor always goes back to the used ring.

pub mod connection;
pub mod muxer;
pub mod packet;

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::features::VIRTIO_F_VERSION_1;
use super::{
    device_type, read_config_bytes, ActivateContext, ActivateError, GuestMemoryMmap, Interrupt,
    VirtioDevice,
};
use muxer::{Muxer, Registrar};
use packet::{write_packet, HDR_LEN, MAX_PAYLOAD};

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
const EVT: usize = 2;
const TOKEN_LISTENER: u32 = 3;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The host socket could not be set up.
    #[error(transparent)]
    Backend(#[from] muxer::MuxerError),
    /// An eventfd could not be created.
    #[error("cannot create eventfd: {0}")]
    EventFd(std::io::Error),
}

struct Active {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    evt: Queue,
    interrupt: Arc<Interrupt>,
}

/// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
const EVENT_TRANSPORT_RESET: u32 = 0;

/// The transport-reset event after a restore. Until the driver has handled it, host
/// connections wait in the listener's backlog: a connection the guest accepted before it
/// handled the reset would be reset with the old ones, silently (a guest resets its sockets
/// without telling the host), and the host would wait for it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetNotice {
    /// Nothing to tell.
    None,
    /// The event waits for an event buffer from the driver.
    Pending,
    /// The event is in the driver's hands; its next event-queue notification (it refills the
    /// buffer once it has handled the event) means the guest is ready for new connections.
    Delivered,
}

/// The vsock device.
pub struct Vsock {
    cid: u64,
    config: [u8; 8],
    queue_evts: [EventFd; 3],
    active: Option<Active>,
    muxer: Muxer,
    reset_pending: bool,
    /// Where telling a restored guest that its connections are gone stands.
    reset: ResetNotice,
    /// The host listener is watched by the event loop (not while a reset notice is out).
    listening: bool,
    /// Chains taken per wake-up and queue (a queue's worth): then the event loop serves the
    /// rest of the VM, and the queue's own event brings the device back.
    budget: usize,
}

/// [`Registrar`] over the event manager's operations.
struct OpsRegistrar<'a, 'b>(&'a mut EventOps<'b>);

impl Registrar for OpsRegistrar<'_, '_> {
    fn add(&mut self, fd: RawFd, token: u32, events: EventSet) {
        if let Err(e) = self.0.add(Events::with_data_raw(fd, token, events)) {
            eprintln!("ironpod-vmm: vsock: cannot watch a stream: {e:?}");
        }
    }

    fn remove(&mut self, fd: RawFd, token: u32, events: EventSet) {
        let _ = self.0.remove(Events::with_data_raw(fd, token, events));
    }
}

impl Vsock {
    /// A device for guest `cid` whose host side listens at `uds_path`.
    pub fn new(cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd);
        Ok(Vsock {
            cid,
            config: cid.to_le_bytes(),
            queue_evts: [evt()?, evt()?, evt()?],
            active: None,
            muxer: Muxer::new(cid, &uds_path)?,
            reset_pending: false,
            reset: ResetNotice::None,
            listening: false,
            budget: usize::from(QUEUE_SIZE),
        })
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// What the event loop does when `token` (a queue's index, the listener, a host stream
    /// the muxer registered) has `events`: for fuzz targets that drive the device without an
    /// event loop.
    #[cfg(feature = "fuzzing")]
    pub fn event(&mut self, token: u32, events: EventSet, reg: &mut dyn Registrar) {
        self.handle(token, events, reg);
    }

    /// Event-loop token of the host listener (queues are their indices).
    #[cfg(feature = "fuzzing")]
    pub const TOKEN_LISTENER: u32 = TOKEN_LISTENER;

    /// Sets the chains taken per wake-up (tests).
    #[cfg(test)]
    pub(crate) fn set_budget(&mut self, n: usize) {
        self.budget = n.max(1);
    }

    /// Hands the packets the driver queued on tx to the muxer one by one as they are taken
    /// (nothing piles up here), at most a queue's worth: a guest that keeps refilling the
    /// queue cannot hold the event loop (the tx event is raised again for the rest).
    pub fn process_tx(&mut self, reg: &mut dyn Registrar) {
        let Some(a) = self.active.as_mut() else { return };
        let mem = a.mem.clone();
        let mut used = false;
        for _ in 0..self.budget {
            let Some(chain) = a.tx.pop_descriptor_chain(&mem) else {
                if used {
                    let _ = a.interrupt.signal_used_queue();
                }
                return;
            };
            let head = chain.head_index();
            // A chain that is not even readable (addresses outside guest memory, loops) is
            // dropped; one whose header could be read is answered.
            let pkt = chain.reader(&mem).ok().and_then(|mut r| match packet::read_packet(&mut r) {
                Ok(p) => Some(p),
                // A packet whose payload could not be read carries op u16::MAX: the muxer
                // resets its connection (unknown op) or answers RST.
                Err((_, Some(hdr))) => Some(packet::Packet {
                    hdr: packet::Header { op: u16::MAX, ..hdr },
                    data: vec![],
                }),
                Err((_, None)) => None,
            });
            let _ = a.tx.add_used(&mem, head, 0);
            used = true;
            if let Some(p) = pkt {
                self.muxer.guest_packet(p, reg);
            }
        }
        let _ = a.interrupt.signal_used_queue();
        let _ = self.queue_evts[TX].write(1);
    }

    /// Fills rx buffers with whatever the muxer has for the guest.
    pub fn process_rx(&mut self, reg: &mut dyn Registrar) {
        let Some(a) = self.active.as_mut() else { return };
        let mem = a.mem.clone();
        let mut used = false;
        let mut budget = self.budget;
        while self.muxer.has_work() {
            if budget == 0 {
                // A queue's worth delivered: the rest after the other events.
                let _ = self.queue_evts[RX].write(1);
                break;
            }
            budget -= 1;
            let Some(chain) = a.rx.pop_descriptor_chain(&mem) else { break };
            let head = chain.head_index();
            let mut writer = match chain.writer(&mem) {
                Ok(w) if w.available_bytes() >= HDR_LEN => w,
                _ => {
                    // Unusable buffer: give it back empty, keep the packet.
                    let _ = a.rx.add_used(&mem, head, 0);
                    used = true;
                    continue;
                }
            };
            let room = (writer.available_bytes() - HDR_LEN).min(MAX_PAYLOAD);
            let Some(pkt) = self.muxer.next_for_guest(room, reg) else {
                // Nothing after all: put the buffer back for later.
                a.rx.set_next_avail(a.rx.next_avail().wrapping_sub(1));
                break;
            };
            match write_packet(&mut writer, &pkt) {
                Some(n) => {
                    let _ = a.rx.add_used(&mem, head, n);
                }
                None => {
                    self.muxer.unsend(pkt);
                    let _ = a.rx.add_used(&mem, head, 0);
                }
            }
            used = true;
        }
        if used {
            let _ = a.interrupt.signal_used_queue();
        }
    }

    fn handle(&mut self, token: u32, events: EventSet, reg: &mut dyn Registrar) {
        if self.reset_pending {
            self.reset_pending = false;
            self.muxer.reset_all(reg);
        }
        match token {
            t if t == RX as u32 => {
                let _ = self.queue_evts[RX].read();
            }
            t if t == TX as u32 => {
                let _ = self.queue_evts[TX].read();
                self.process_tx(reg);
            }
            t if t == EVT as u32 => {
                let _ = self.queue_evts[EVT].read();
                match self.reset {
                    ResetNotice::Pending => self.send_transport_reset(),
                    // Handled: host connections may reach the guest again (below).
                    ResetNotice::Delivered => self.reset = ResetNotice::None,
                    ResetNotice::None => {}
                }
            }
            TOKEN_LISTENER => {
                if self.reset == ResetNotice::None {
                    self.muxer.accept(reg);
                } else if self.listening {
                    // Connections wait in the backlog until the guest handled the reset.
                    reg.remove(self.muxer.listener_fd(), TOKEN_LISTENER, EventSet::IN);
                    self.listening = false;
                }
            }
            t => self.muxer.stream_event(t, events, reg),
        }
        if !self.listening && self.reset == ResetNotice::None {
            self.listen(reg);
            self.muxer.accept(reg);
        }
        self.process_rx(reg);
    }

    /// Watches the host listener.
    fn listen(&mut self, reg: &mut dyn Registrar) {
        reg.add(self.muxer.listener_fd(), TOKEN_LISTENER, EventSet::IN);
        self.listening = true;
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 3 {
            return Err(ActivateError::QueueCount { expected: 3, got: ctx.queues.len() });
        }
        let mut q = ctx.queues.into_iter();
        let (Some(rx), Some(tx), Some(evt)) = (q.next(), q.next(), q.next()) else {
            return Err(ActivateError::QueueCount { expected: 3, got: 0 });
        };
        self.active = Some(Active { mem: ctx.mem, rx, tx, evt, interrupt: ctx.interrupt });
        // Wake the event loop: packets may be waiting for the guest already.
        let _ = self.queue_evts[RX].write(1);
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        self.reset = ResetNotice::None;
        // Connections are closed from the event loop, which owns their registrations.
        self.reset_pending = true;
        let _ = self.queue_evts[RX].write(1);
    }

    /// (The host's connections are not kept: a restored guest is told they are gone.)
    fn queue_states(&self) -> Vec<super::QueueState> {
        self.active.iter().flat_map(|a| [a.rx.state(), a.tx.state(), a.evt.state()]).collect()
    }

    fn restored(&mut self) {
        self.reset = ResetNotice::Pending;
        self.send_transport_reset();
    }
}

impl Vsock {
    /// Puts the pending transport-reset event into the driver's next event buffer (if it has
    /// one; otherwise when it gives one).
    fn send_transport_reset(&mut self) {
        if self.reset != ResetNotice::Pending {
            return;
        }
        let Some(a) = self.active.as_mut() else { return };
        let mem = a.mem.clone();
        let Some(chain) = a.evt.pop_descriptor_chain(&mem) else { return };
        let head = chain.head_index();
        let written = match chain.writer(&mem) {
            Ok(mut w) if w.available_bytes() >= 4 => {
                std::io::Write::write_all(&mut w, &EVENT_TRANSPORT_RESET.to_le_bytes()).is_ok()
            }
            _ => false,
        };
        let _ = a.evt.add_used(&mem, head, if written { 4 } else { 0 });
        let _ = a.interrupt.signal_used_queue();
        if written {
            self.reset = ResetNotice::Delivered;
        }
    }
}

impl MutEventSubscriber for Vsock {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut reg = OpsRegistrar(ops);
        self.handle(events.data(), events.event_set(), &mut reg);
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (i, e) in self.queue_evts.iter().enumerate() {
            if let Err(err) = ops.add(Events::with_data(e, i as u32, EventSet::IN)) {
                eprintln!("ironpod-vmm: vsock: cannot watch queue {i}: {err:?}");
            }
        }
        if self.reset == ResetNotice::None {
            let mut reg = OpsRegistrar(ops);
            self.listen(&mut reg);
        }
    }
}

#[cfg(test)]
mod tests;
