//! One vsock stream connection between a guest port and a host unix stream: state and credit
//! accounting (virtio spec 5.10.6.3).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use super::packet::{op, Header, Packet, HOST_CID, MAX_PAYLOAD, TYPE_STREAM};

/// Receive buffer we advertise to the guest: the most guest→host bytes we ever hold.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Send a credit update after forwarding this many bytes since the last one.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// Lifecycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST sent to the guest, waiting for RESPONSE or RST.
    Connecting,
    /// Data flows.
    Established,
}

/// Why forwarding guest data to the host failed (the connection is then reset).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The guest sent more than the credit we gave it.
    #[error("the guest exceeded its send credit")]
    CreditExceeded,
    /// The host end is closed or failed.
    #[error("the host stream failed: {0}")]
    Host(io::Error),
}

/// What reading from the host stream produced.
#[derive(Debug, PartialEq, Eq)]
pub enum HostRead {
    /// Bytes for the guest.
    Data(Vec<u8>),
    /// Nothing available now.
    WouldBlock,
    /// The host closed its end (or the stream failed).
    Eof,
}

/// A connection.
#[derive(Debug)]
pub struct Connection {
    /// Host side (non-blocking).
    pub stream: UnixStream,
    /// Event-loop token of the stream.
    pub token: u32,
    /// Port on the host side (CID 2).
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
    /// Guest CID.
    pub guest_cid: u64,
    /// Lifecycle.
    pub state: State,
    /// The host stream may have data to read (edge-triggered readiness not yet consumed).
    pub rx_ready: bool,
    /// The guest said it will send nothing more.
    pub guest_shut_send: bool,
    /// The host stream reached EOF (we told the guest with SHUTDOWN).
    pub host_eof: bool,
    /// Guest→host bytes not yet accepted by the host stream.
    tx_buf: VecDeque<u8>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    credit_requested: bool,
}

impl Connection {
    /// A new connection over `stream` (set non-blocking by the caller).
    pub fn new(
        stream: UnixStream,
        token: u32,
        local_port: u32,
        peer_port: u32,
        guest_cid: u64,
        state: State,
    ) -> Self {
        Connection {
            stream,
            token,
            local_port,
            peer_port,
            guest_cid,
            state,
            rx_ready: false,
            guest_shut_send: false,
            host_eof: false,
            tx_buf: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            credit_requested: false,
        }
    }

    /// A header from us to the guest for this connection, with our credit information.
    pub fn header(&mut self, operation: u16, flags: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op: operation,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// A control packet (no payload).
    pub fn control(&mut self, operation: u16, flags: u32) -> Packet {
        Packet { hdr: self.header(operation, flags), data: Vec::new() }
    }

    /// Takes the guest's credit information from any packet it sent.
    pub fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Bytes the guest can still receive.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether we should ask the guest for credit (asks once until credit arrives).
    pub fn take_credit_request(&mut self) -> bool {
        if self.peer_credit() == 0 && !self.credit_requested {
            self.credit_requested = true;
            return true;
        }
        false
    }

    /// Forwards guest data to the host stream, buffering what the stream does not take now.
    /// Fails when the guest sends beyond the credit we gave it.
    pub fn send_to_host(&mut self, data: &[u8]) -> Result<(), ConnError> {
        if self.tx_buf.len() + data.len() > BUF_ALLOC as usize {
            return Err(ConnError::CreditExceeded);
        }
        if !self.tx_buf.is_empty() {
            self.tx_buf.extend(data);
            return Ok(());
        }
        let mut written = 0;
        while written < data.len() {
            match self.stream.write(&data[written..]) {
                Ok(0) => return Err(ConnError::Host(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(ConnError::Host(e)),
            }
        }
        self.fwd_cnt += Wrapping(written as u32);
        self.tx_buf.extend(&data[written..]);
        Ok(())
    }

    /// Writes buffered guest data to the host stream (on writability).
    pub fn flush_to_host(&mut self) -> Result<(), ConnError> {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ConnError::Host(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(ConnError::Host(e)),
            }
        }
        Ok(())
    }

    /// Whether guest data is still waiting for the host stream.
    pub fn has_buffered(&self) -> bool {
        !self.tx_buf.is_empty()
    }

    /// Whether the guest should hear about freed buffer space: after a good chunk was
    /// forwarded (not after every packet: that would double the packet rate).
    pub fn needs_credit_update(&self) -> bool {
        (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD
    }

    /// Whether anything was forwarded since the guest last heard our count.
    pub fn has_unannounced_credit(&self) -> bool {
        self.fwd_cnt != self.last_fwd_cnt_sent
    }

    /// Reads at most `max` bytes (bounded by the guest's credit) from the host stream.
    pub fn read_from_host(&mut self, max: usize) -> HostRead {
        let n = max.min(self.peer_credit() as usize).min(MAX_PAYLOAD);
        if n == 0 {
            return HostRead::WouldBlock;
        }
        let mut buf = vec![0u8; n];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return HostRead::Eof,
                Ok(got) => {
                    buf.truncate(got);
                    self.rx_cnt += Wrapping(got as u32);
                    return HostRead::Data(buf);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HostRead::WouldBlock,
                Err(_) => return HostRead::Eof,
            }
        }
    }

    /// A data packet carrying `data`.
    pub fn data_packet(&mut self, data: Vec<u8>) -> Packet {
        let hdr = self.header(op::RW, 0);
        Packet { hdr, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Connection::new(a, 1, 5000, 1024, 3, State::Established), b)
    }

    #[test]
    fn credit_accounting() {
        let (mut c, mut peer) = pair();
        assert_eq!(c.peer_credit(), 0);
        assert!(c.take_credit_request());
        assert!(!c.take_credit_request(), "asked only once");
        let mut h = Header { buf_alloc: 10, fwd_cnt: 0, ..Default::default() };
        c.update_peer_credit(&h);
        assert_eq!(c.peer_credit(), 10);
        peer.write_all(b"0123456789abcdef").unwrap();
        assert_eq!(c.read_from_host(100), HostRead::Data(b"0123456789".to_vec()));
        assert_eq!(c.peer_credit(), 0);
        assert_eq!(c.read_from_host(100), HostRead::WouldBlock, "no credit, no read");
        h.fwd_cnt = 4;
        c.update_peer_credit(&h);
        assert_eq!(c.read_from_host(100), HostRead::Data(b"abcd".to_vec()));
        assert_eq!(c.read_from_host(100), HostRead::WouldBlock, "credit used up again");
        drop(peer);
        h.fwd_cnt = 14;
        c.update_peer_credit(&h);
        assert_eq!(c.read_from_host(100), HostRead::Data(b"ef".to_vec()));
        assert_eq!(c.read_from_host(100), HostRead::Eof);
    }

    #[test]
    fn guest_overrunning_credit_is_refused() {
        let (mut c, _peer) = pair();
        // Fill the socket buffer until writes would block, then the rest is buffered.
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0usize;
        loop {
            if c.send_to_host(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
            assert!(sent < 64 << 20, "never refused");
        }
        assert!(c.has_buffered());
    }

    #[test]
    fn forwarding_counts_and_updates() {
        let (mut c, mut peer) = pair();
        c.send_to_host(b"hello").unwrap();
        let mut buf = [0u8; 5];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(!c.needs_credit_update(), "not for five bytes");
        assert!(c.has_unannounced_credit());
        let big = vec![1u8; CREDIT_UPDATE_THRESHOLD as usize];
        let reader = std::thread::spawn(move || {
            let mut all = vec![0u8; CREDIT_UPDATE_THRESHOLD as usize];
            peer.read_exact(&mut all).unwrap();
        });
        c.send_to_host(&big).unwrap();
        while c.has_buffered() {
            c.flush_to_host().unwrap();
        }
        reader.join().unwrap();
        assert!(c.needs_credit_update());
        let h = c.header(op::CREDIT_UPDATE, 0);
        assert_eq!(h.fwd_cnt, 5 + CREDIT_UPDATE_THRESHOLD);
        assert!(!c.needs_credit_update());
    }
}
