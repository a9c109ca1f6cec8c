//! virtio-vsock from a hostile guest, structure-aware: the input is a script of steps — tx
//! packets whose headers are mostly well formed (the right cids, the host service's port or
//! a port the host connected to, any op, credit, flags and length) cut into descriptor
//! chains any way, receive buffers of any size, raw chains of any descriptors, and what the
//! host side does (connect to a guest port, accept, write, close) — with the device's
//! event-loop handling run for each event, so connections open, carry data both ways, run
//! out of credit, shut down and are reset through the real queues.
#![no_main]

use std::collections::BTreeSet;
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::net::{UnixListener, UnixStream};

use arbitrary::Arbitrary;
use ironpod_vmm::virtio::test_queue::TestQueue;
use ironpod_vmm::virtio::vsock::muxer::Registrar;
use ironpod_vmm::virtio::vsock::packet::{Header, HOST_CID, TYPE_STREAM};
use ironpod_vmm::virtio::vsock::Vsock;
use ironpod_vmm::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::epoll::EventSet;

const GUEST_CID: u64 = 3;
const SERVICE_PORT: u32 = 1024;
/// Where packet and receive buffers go in guest memory (after the three queues).
const BUFFERS: u64 = 0x10_0000;
const BUFFERS_END: u64 = 0x80_0000;

#[derive(Arbitrary, Debug)]
enum Step {
    /// A packet on tx.
    Tx {
        /// 0: the host service; 1: the last port the host connected to; else this port.
        port: u32,
        src_port: u8,
        op: u8,
        /// The header's length field: the payload's, unless `Some` (a lie).
        len: Option<u32>,
        flags: u32,
        buf_alloc: u32,
        fwd_cnt: u32,
        /// Not a stream packet.
        odd_type: Option<u16>,
        /// Not addressed from the guest's cid to the host.
        odd_cids: Option<(u64, u64)>,
        payload: Vec<u8>,
        /// Where the chain is cut (offsets into header + payload).
        cuts: Vec<u16>,
    },
    /// Receive buffers: `count` chains of `size` bytes (split in two when `split`).
    Rx { count: u8, size: u16, split: bool },
    /// A chain of raw (addr, len, flags) descriptors on tx (0) or rx (1).
    Raw { queue: bool, descs: Vec<(u64, u32, u16)> },
    /// The host connects to a guest port.
    HostConnect { port: u32 },
    /// The host's side of stream `i` (connected or accepted) writes.
    HostWrite { i: u8, data: Vec<u8> },
    /// The host's side of stream `i` closes.
    HostClose { i: u8 },
    /// Events on every stream the device watches.
    Events { bits: u8 },
}

/// Records what the device asks the event loop to watch.
#[derive(Default)]
struct Watched(BTreeSet<u32>);

impl Registrar for Watched {
    fn add(&mut self, _: RawFd, token: u32, _: EventSet) {
        self.0.insert(token);
    }
    fn remove(&mut self, _: RawFd, token: u32, _: EventSet) {
        self.0.remove(&token);
    }
}

struct Guest {
    rx: TestQueue,
    tx: TestQueue,
    next: u64,
}

impl Guest {
    /// A buffer of `len` bytes in guest memory (wrapping around the buffer area).
    fn alloc(&mut self, len: u64) -> u64 {
        let len = len.min(BUFFERS_END - BUFFERS);
        if self.next + len > BUFFERS_END {
            self.next = BUFFERS;
        }
        let at = self.next;
        self.next += len;
        at
    }
}

fn header(step: &Step, last_port: u32) -> Option<Vec<u8>> {
    let Step::Tx {
        port,
        src_port,
        op,
        len,
        flags,
        buf_alloc,
        fwd_cnt,
        odd_type,
        odd_cids,
        payload,
        ..
    } = step
    else {
        return None;
    };
    let (src_cid, dst_cid) = odd_cids.unwrap_or((GUEST_CID, HOST_CID));
    let hdr = Header {
        src_cid,
        dst_cid,
        src_port: 2000 + u32::from(*src_port % 8),
        dst_port: match port {
            0 => SERVICE_PORT,
            1 => last_port,
            p => *p,
        },
        len: len.unwrap_or(payload.len() as u32),
        type_: odd_type.unwrap_or(TYPE_STREAM),
        op: u16::from(*op % 9),
        flags: *flags,
        buf_alloc: *buf_alloc,
        fwd_cnt: *fwd_cnt,
    };
    let mut bytes = hdr.to_bytes().to_vec();
    bytes.extend_from_slice(payload);
    Some(bytes)
}

fuzz_target!(|steps: Vec<Step>| {
    let dir = tempfile::tempdir().expect("temp dir");
    let uds = dir.path().join("v.sock");
    let service =
        UnixListener::bind(dir.path().join(format!("v.sock_{SERVICE_PORT}"))).expect("listen");
    service.set_nonblocking(true).expect("nonblocking");
    let mut dev = Vsock::new(GUEST_CID, uds.clone()).expect("device");
    let (qs, ctx) = ironpod_fuzz::guest(&[], 3, dev.avail_features());
    let mut qs = qs.into_iter();
    let (Some(rx), Some(tx)) = (qs.next(), qs.next()) else { return };
    let mut guest = Guest { rx, tx, next: BUFFERS };
    let mut reg = Watched::default();
    if dev.activate(ctx).is_err() {
        return;
    }
    let (mut streams, mut last_port) = (Vec::<UnixStream>::new(), SERVICE_PORT);
    for step in steps.iter().take(64) {
        match step {
            Step::Tx { cuts, .. } => {
                let Some(bytes) = header(step, last_port) else { continue };
                let at = guest.alloc(bytes.len() as u64);
                guest.tx.write(at, &bytes);
                let mut points: Vec<u64> =
                    cuts.iter().take(4).map(|&c| u64::from(c) % (bytes.len() as u64 + 1)).collect();
                points.push(0);
                points.push(bytes.len() as u64);
                points.sort_unstable();
                points.dedup();
                let descs: Vec<(u64, u32, u16)> =
                    points.windows(2).map(|w| (at + w[0], (w[1] - w[0]) as u32, 0)).collect();
                guest.tx.add_chain(&descs);
                dev.event(1, EventSet::IN, &mut reg);
            }
            Step::Rx { count, size, split } => {
                for _ in 0..*count % 8 {
                    let size = u64::from(*size);
                    let at = guest.alloc(size);
                    let write = 2; // VIRTQ_DESC_F_WRITE
                    if *split && size > 1 {
                        let half = size / 2;
                        guest.rx.add_chain(&[
                            (at, half as u32, write),
                            (at + half, (size - half) as u32, write),
                        ]);
                    } else {
                        guest.rx.add_chain(&[(at, size as u32, write)]);
                    }
                }
                dev.event(0, EventSet::IN, &mut reg);
            }
            Step::Raw { queue, descs } => {
                let descs: Vec<_> = descs.iter().take(8).copied().collect();
                if descs.is_empty() {
                    continue;
                }
                if *queue {
                    guest.rx.add_chain(&descs);
                    dev.event(0, EventSet::IN, &mut reg);
                } else {
                    guest.tx.add_chain(&descs);
                    dev.event(1, EventSet::IN, &mut reg);
                }
            }
            Step::HostConnect { port } => {
                if let Ok(mut s) = UnixStream::connect(&uds) {
                    let _ = s.set_nonblocking(true);
                    let _ = writeln!(s, "CONNECT {port}");
                    last_port = *port;
                    streams.push(s);
                    dev.event(Vsock::TOKEN_LISTENER, EventSet::IN, &mut reg);
                }
            }
            Step::HostWrite { i, data } => {
                if let Some(s) = pick(&mut streams, &service, *i) {
                    let _ = s.write(data);
                }
            }
            Step::HostClose { i } => {
                if !streams.is_empty() {
                    let i = usize::from(*i) % streams.len();
                    streams.swap_remove(i);
                }
            }
            Step::Events { bits } => {
                let events = [EventSet::IN, EventSet::OUT, EventSet::HANG_UP, EventSet::ERROR]
                    .into_iter()
                    .enumerate()
                    .filter(|(n, _)| bits & (1 << n) != 0)
                    .fold(EventSet::empty(), |a, (_, e)| a | e);
                let tokens: Vec<u32> = reg.0.iter().copied().filter(|&t| t > 3).collect();
                for t in tokens {
                    dev.event(t, events, &mut reg);
                }
            }
        }
    }
});

/// Host stream `i`, after taking in what the service has accepted since.
fn pick<'a>(
    streams: &'a mut Vec<UnixStream>,
    service: &UnixListener,
    i: u8,
) -> Option<&'a mut UnixStream> {
    while let Ok((s, _)) = service.accept() {
        let _ = s.set_nonblocking(true);
        streams.push(s);
    }
    if streams.is_empty() {
        return None;
    }
    let n = usize::from(i) % streams.len();
    streams.get_mut(n)
}
