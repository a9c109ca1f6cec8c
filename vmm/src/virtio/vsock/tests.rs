//! Unit tests of the vsock device through real guest memory and real unix sockets.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use vmm_sys_util::epoll::EventSet;

use super::muxer::Registrar;
use super::packet::{op, Header, HDR_LEN, HOST_CID, TYPE_STREAM};
use super::*;
use crate::virtio::test_queue::{TestQueue, NEXT, WRITE};

const GUEST_CID: u64 = 3;
const RXBUF: u64 = 0x10_0000;
const RXBUF_SIZE: u32 = 0x2000;
const TXBUF: u64 = 0x40_0000;
const EVTBUF: u64 = 0xf0_0000;

#[derive(Default)]
struct FakeReg {
    fds: HashMap<u32, RawFd>,
}

impl Registrar for FakeReg {
    fn add(&mut self, fd: RawFd, token: u32, _: EventSet) {
        assert!(self.fds.insert(token, fd).is_none(), "token {token} registered twice");
    }
    fn remove(&mut self, _: RawFd, token: u32, _: EventSet) {
        assert!(self.fds.remove(&token).is_some(), "token {token} removed but not registered");
    }
}

struct Rig {
    dev: Vsock,
    rx: TestQueue,
    tx: TestQueue,
    evt: TestQueue,
    reg: FakeReg,
    rx_seen: u16,
    tx_next_buf: u64,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut dev = Vsock::new(GUEST_CID, dir.path().join("v.sock")).unwrap();
        let rx = TestQueue::new(64);
        let tx = rx.sibling(0x1_0000, 64);
        let evt = rx.sibling(0x2_0000, 64);
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let ctx = ActivateContext {
            mem: rx.mem.clone(),
            queues: vec![rx.queue(), tx.queue(), evt.queue()],
            interrupt: irq,
            acked_features: VIRTIO_F_VERSION_1,
        };
        dev.activate(ctx).unwrap();
        Rig { dev, rx, tx, evt, reg: FakeReg::default(), rx_seen: 0, tx_next_buf: TXBUF, dir }
    }

    fn uds(&self) -> std::path::PathBuf {
        self.dir.path().join("v.sock")
    }

    /// Gives the device `n` rx buffers.
    fn give_rx(&mut self, n: usize) {
        for _ in 0..n {
            let head = self.rx.add_chain(&[(0, 0, 0)]);
            // Re-point the single descriptor at this head's own buffer.
            let addr = RXBUF + head as u64 * RXBUF_SIZE as u64;
            self.rx.write(head as u64 * 16, &addr.to_le_bytes());
            self.rx.write(head as u64 * 16 + 8, &RXBUF_SIZE.to_le_bytes());
            self.rx.write(head as u64 * 16 + 12, &WRITE.to_le_bytes());
        }
    }

    /// Packets the device put in rx since the last call.
    fn take_rx(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while self.rx_seen != self.rx.used_idx() {
            let (head, len) = self.rx.used(self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            if len == 0 {
                continue;
            }
            let bytes = self.rx.read(RXBUF + head as u64 * RXBUF_SIZE as u64, len as usize);
            let hdr = Header::from_bytes(bytes[..HDR_LEN].try_into().unwrap());
            out.push((hdr, bytes[HDR_LEN..].to_vec()));
        }
        out
    }

    fn run_rx(&mut self) {
        self.dev.process_rx(&mut self.reg);
    }

    /// Sends raw descriptors (addr, len, flags) on tx and processes them.
    fn send_raw(&mut self, descs: &[(u64, u32, u16)]) {
        self.tx.add_chain(descs);
        self.dev.process_tx(&mut self.reg);
        self.run_rx();
    }

    fn buf(&mut self, bytes: &[u8]) -> u64 {
        let a = self.tx_next_buf;
        self.tx.write(a, bytes);
        self.tx_next_buf += (bytes.len() as u64 + 0xfff) & !0xfff;
        if self.tx_next_buf > 0xe0_0000 {
            self.tx_next_buf = TXBUF;
        }
        a
    }

    fn send(&mut self, hdr: Header, data: &[u8]) {
        let mut bytes = hdr.to_bytes().to_vec();
        bytes.extend_from_slice(data);
        let a = self.buf(&bytes);
        self.send_raw(&[(a, bytes.len() as u32, 0)]);
    }

    fn stream_event(&mut self, events: EventSet) {
        let tokens: Vec<u32> = self.reg.fds.keys().copied().collect();
        for t in tokens {
            self.dev.handle(t, events, &mut self.reg);
        }
    }

    fn accept(&mut self) {
        self.dev.handle(3, EventSet::IN, &mut self.reg);
    }
}

fn ghdr(op_: u16, src_port: u32, dst_port: u32, len: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        type_: TYPE_STREAM,
        op: op_,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

/// Host connects to guest port 1024; returns (host stream, local port).
fn connect(r: &mut Rig) -> (UnixStream, u32) {
    let mut host = UnixStream::connect(r.uds()).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"CONNECT 1024\n").unwrap();
    r.accept();
    r.give_rx(4);
    r.run_rx();
    let pkts = r.take_rx();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    let req = pkts[0].0;
    assert_eq!(
        (req.op, req.dst_cid, req.dst_port, req.src_cid),
        (op::REQUEST, GUEST_CID, 1024, HOST_CID)
    );
    r.send(ghdr(op::RESPONSE, 1024, req.src_port, 0), &[]);
    let mut line = [0u8; 64];
    let n = host.read(&mut line).unwrap();
    assert_eq!(String::from_utf8_lossy(&line[..n]), format!("OK {}\n", req.src_port));
    (host, req.src_port)
}

#[test]
fn host_initiated_connection_moves_data_both_ways() {
    let mut r = Rig::new();
    let (mut host, local) = connect(&mut r);
    host.write_all(b"ping").unwrap();
    r.stream_event(EventSet::IN);
    let pkts = r.take_rx();
    assert_eq!(pkts.len(), 1);
    assert_eq!((pkts[0].0.op, pkts[0].1.as_slice()), (op::RW, &b"ping"[..]));
    r.send(ghdr(op::RW, 1024, local, 4), b"pong");
    let mut b = [0u8; 4];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    // Guest resets: the host sees EOF.
    r.send(ghdr(op::RST, 1024, local, 0), &[]);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(r.dev.connection_count(), 0);
    let watched: Vec<u32> = r.reg.fds.keys().copied().collect();
    assert_eq!(watched, vec![TOKEN_LISTENER], "no registration leaks: only the listener");
}

#[test]
fn after_a_restore_host_connections_wait_until_the_guest_handled_the_reset() {
    let mut r = Rig::new();
    r.accept(); // the event loop watches the listener
    r.evt.add_chain(&[(EVTBUF, 8, WRITE)]);
    r.dev.restored();
    // The driver gets the transport-reset event (id 0, 4 bytes).
    assert_eq!(r.evt.used_idx(), 1);
    assert_eq!(r.evt.used(0).1, 4);
    assert_eq!(r.evt.read(EVTBUF, 4), 0u32.to_le_bytes());
    // A host connection now waits: nothing reaches the guest.
    let mut host = UnixStream::connect(r.uds()).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"CONNECT 1024\n").unwrap();
    r.give_rx(4);
    r.accept();
    r.run_rx();
    assert!(r.take_rx().is_empty(), "a connection reached the guest before it handled the reset");
    assert!(!r.reg.fds.contains_key(&TOKEN_LISTENER), "the listener is not watched meanwhile");
    // The driver handled the event and gives its buffer back: the connection goes through.
    r.evt.add_chain(&[(EVTBUF, 8, WRITE)]);
    r.dev.handle(EVT as u32, EventSet::IN, &mut r.reg);
    let pkts = r.take_rx();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    assert_eq!((pkts[0].0.op, pkts[0].0.dst_port), (op::REQUEST, 1024));
    assert_eq!(r.evt.used_idx(), 1, "one event only");
}

#[test]
fn bulk_host_to_guest_respects_credit() {
    let mut r = Rig::new();
    let (host, local) = connect(&mut r);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let expected = data.clone();
    let writer = std::thread::spawn(move || {
        let mut h = host;
        h.write_all(&data).unwrap();
        h
    });
    let mut got = Vec::new();
    let mut fwd = 0u32;
    for _ in 0..10_000 {
        if got.len() == expected.len() {
            break;
        }
        r.give_rx(8);
        r.stream_event(EventSet::IN);
        for (h, d) in r.take_rx() {
            match h.op {
                op::RW => {
                    got.extend_from_slice(&d);
                    assert!(
                        got.len() as u32 - fwd <= 64 * 1024,
                        "device exceeded the guest's credit"
                    );
                }
                op::CREDIT_REQUEST => {}
                other => panic!("unexpected op {other}"),
            }
        }
        // The guest consumed everything: tell the device.
        fwd = got.len() as u32;
        let mut upd = ghdr(op::CREDIT_UPDATE, 1024, local, 0);
        upd.fwd_cnt = fwd;
        r.send(upd, &[]);
        std::thread::sleep(Duration::from_millis(1));
    }
    let _host = writer.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "byte-exact");
}

#[test]
fn bulk_guest_to_host_with_credit_updates() {
    let mut r = Rig::new();
    let (mut host, local) = connect(&mut r);
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut b = vec![0u8; 65536];
        while all.len() < 400_000 {
            let n = host.read(&mut b).unwrap();
            assert!(n > 0);
            all.extend_from_slice(&b[..n]);
        }
        all
    });
    let chunk: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
    let mut sent = 0usize;
    r.give_rx(32);
    while sent < 400_000 {
        r.send(ghdr(op::RW, 1024, local, chunk.len() as u32), &chunk);
        sent += chunk.len();
        r.stream_event(EventSet::OUT);
        r.give_rx(1);
    }
    for _ in 0..1000 {
        r.stream_event(EventSet::OUT);
        if reader.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let all = reader.join().unwrap();
    assert_eq!(all.len(), 400_000);
    assert!(all.chunks(4000).all(|c| c == chunk.as_slice()));
    assert!(r.take_rx().iter().any(|(h, _)| h.op == op::CREDIT_UPDATE && h.fwd_cnt > 0));
}

#[test]
fn guest_initiated_connection() {
    let mut r = Rig::new();
    let listener = UnixListener::bind(format!("{}_5000", r.uds().display())).unwrap();
    r.give_rx(4);
    r.send(ghdr(op::REQUEST, 777, 5000, 0), &[]);
    let pkts = r.take_rx();
    assert_eq!((pkts[0].0.op, pkts[0].0.dst_port, pkts[0].0.src_port), (op::RESPONSE, 777, 5000));
    let (mut s, _) = listener.accept().unwrap();
    r.send(ghdr(op::RW, 777, 5000, 5), b"hello");
    let mut b = [0u8; 5];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");
    // Nobody listens on 5001: refused.
    r.send(ghdr(op::REQUEST, 778, 5001, 0), &[]);
    let pkts = r.take_rx();
    assert_eq!(pkts[0].0.op, op::RST);
}

#[test]
fn a_host_listener_with_a_full_backlog_is_refused_without_blocking() {
    let mut r = Rig::new();
    let path = format!("{}_5002", r.uds().display());
    let listener = UnixListener::bind(&path).unwrap();
    // SAFETY: listen(2) again on our listener: a backlog of zero (one pending connection).
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let _filler = UnixStream::connect(&path).unwrap();
    r.give_rx(4);
    // (A blocking connect would hang here: the test harness's limit names this test.)
    r.send(ghdr(op::REQUEST, 779, 5002, 0), &[]);
    let pkts = r.take_rx();
    assert_eq!(pkts[0].0.op, op::RST);
}

#[test]
fn malformed_tx_chains_are_returned_and_answered() {
    let mut r = Rig::new();
    r.give_rx(32);
    let mem_end = 16u64 << 20;
    let mut expect_used = 0u16;
    let mut check = |r: &mut Rig, what: &str| {
        expect_used += 1;
        assert_eq!(r.tx.used_idx(), expect_used, "{what}: descriptor not returned");
    };

    // Header shorter than 44 bytes.
    let a = r.buf(&[1u8; 20]);
    r.send_raw(&[(a, 20, 0)]);
    check(&mut r, "short header");
    assert!(r.take_rx().is_empty());

    // Header split across two descriptors: parsed fine (REQUEST to a port nobody serves: RST).
    let bytes = ghdr(op::REQUEST, 9, 6000, 0).to_bytes();
    let a = r.buf(&bytes[..20]);
    let b = r.buf(&bytes[20..]);
    r.send_raw(&[(a, 20, 0), (b, 24, 0)]);
    check(&mut r, "split header");
    let p = r.take_rx();
    assert_eq!((p.len(), p[0].0.op, p[0].0.dst_port), (1, op::RST, 9));

    // Length field larger than the buffers: answered with RST.
    let a = r.buf(&ghdr(op::RW, 10, 1024, 5000).to_bytes());
    r.send_raw(&[(a, 44, 0)]);
    check(&mut r, "len beyond buffer");
    assert_eq!(r.take_rx()[0].0.op, op::RST);

    // Length field beyond the packet limit.
    let a = r.buf(&ghdr(op::RW, 10, 1024, u32::MAX).to_bytes());
    r.send_raw(&[(a, 44, 0)]);
    check(&mut r, "huge len");

    // Buffer outside guest memory, and one that wraps the address space.
    r.send_raw(&[(mem_end - 8, 44, 0)]);
    check(&mut r, "outside memory");
    r.send_raw(&[(u64::MAX - 10, 44, 0)]);
    check(&mut r, "wrapping address");

    // Zero-length descriptors; a device-writable buffer where a readable one belongs.
    r.send_raw(&[(TXBUF, 0, 0), (TXBUF, 0, 0)]);
    check(&mut r, "zero length");
    r.send_raw(&[(TXBUF, 44, WRITE)]);
    check(&mut r, "write-only");

    // A descriptor loop.
    let a = r.buf(&ghdr(op::RW, 10, 1024, 0).to_bytes());
    r.tx.add_raw(&[(a, 22, NEXT, 1), (a + 22, 22, NEXT, 0)]);
    r.dev.process_tx(&mut r.reg);
    r.run_rx();
    check(&mut r, "loop");

    // Wrong source CID, unknown op, packet for an unknown connection.
    let _ = r.take_rx();
    let mut h = ghdr(op::RW, 11, 1024, 0);
    h.src_cid = 99;
    r.send(h, &[]);
    check(&mut r, "bad cid");
    r.send(ghdr(0x77, 12, 1024, 0), &[]);
    check(&mut r, "unknown op");
    r.send(ghdr(op::RW, 13, 1024, 0), &[]);
    check(&mut r, "unknown connection");
    let rx = r.take_rx();
    assert_eq!(rx.len(), 3);
    assert!(rx.iter().all(|(h, _)| h.op == op::RST));
    // An RST for an unknown connection is not answered (no RST storms).
    r.send(ghdr(op::RST, 14, 1024, 0), &[]);
    check(&mut r, "stray rst");
    assert!(r.take_rx().is_empty());

    // After all that, a real connection still works.
    let (mut host, local) = connect(&mut r);
    r.send(ghdr(op::RW, 1024, local, 2), b"ok");
    let mut b = [0u8; 2];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ok");
}

#[test]
fn bad_rx_buffers_and_bad_connect_lines() {
    let mut r = Rig::new();
    // An rx buffer too small for a header is returned empty; the packet waits for a good one.
    let mut host = UnixStream::connect(r.uds()).unwrap();
    host.write_all(b"CONNECT 1024\n").unwrap();
    r.accept();
    r.rx.add_chain(&[(RXBUF, 10, WRITE)]);
    r.run_rx();
    assert_eq!(r.rx.used(0), (0, 0));
    r.rx_seen = 1;
    r.give_rx(1);
    r.run_rx();
    assert_eq!(r.take_rx()[0].0.op, op::REQUEST);
    // Garbage instead of CONNECT: the stream is closed, nothing reaches the guest.
    let mut bad = UnixStream::connect(r.uds()).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bad.write_all(b"HELLO THERE THIS IS NOT A CONNECT LINE AT ALL\n").unwrap();
    r.accept();
    let mut buf = Vec::new();
    match bad.read_to_end(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the stream to be closed, got {other:?}"),
    }
    r.give_rx(2);
    r.run_rx();
    assert!(r.take_rx().is_empty());
    drop(host);
}

#[test]
fn busy_socket_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.sock");
    let _a = Vsock::new(3, p.clone()).unwrap();
    assert!(Vsock::new(3, p).is_err(), "a live listener must not be stolen");
    assert!(Vsock::new(3, dir.path().join("no/such/dir/v.sock")).is_err());
}

#[test]
fn a_wake_up_takes_at_most_its_budget_and_comes_back_for_the_rest() {
    let mut r = Rig::new();
    r.dev.set_budget(2);
    for port in 0..5 {
        let a = r.buf(&ghdr(op::RW, 100 + port, 1024, 0).to_bytes());
        r.tx.add_chain(&[(a, HDR_LEN as u32, 0)]);
    }
    let _ = r.dev.queue_evts[TX].read();
    for want in [2, 4, 5] {
        r.dev.process_tx(&mut r.reg);
        assert_eq!(r.tx.used_idx(), want);
        let rearmed = r.dev.queue_evts[TX].read().is_ok();
        assert_eq!(rearmed, want < 5, "the tx event is raised while work may remain");
    }
    // Five answers (RST: no such connections) wait; rx hands out two per wake-up too.
    r.give_rx(8);
    for want in [2, 4, 5] {
        r.run_rx();
        assert_eq!(r.rx.used_idx(), want);
        let rearmed = r.dev.queue_evts[RX].read().is_ok();
        assert_eq!(rearmed, want < 5, "the rx event is raised while packets may remain");
    }
}
