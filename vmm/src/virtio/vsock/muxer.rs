//! The host side of vsock: the hybrid unix-socket backend (Firecracker / Cloud Hypervisor
//! protocol) and the table of connections.
//!
//! Host → guest: a process connects to `uds_path` and writes `CONNECT <port>\n`; we send the
//! guest a REQUEST and, on its RESPONSE, answer `OK <host_port>\n`; a guest RST closes the
//! stream. Guest → host: a REQUEST to host port P connects to `<uds_path>_P`.
//! Packets for the guest wait in a bounded queue until the driver gives us rx buffers.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::EventSet;

use super::connection::{Connection, HostRead, State};
use super::packet::{op, Header, Packet, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// Most simultaneous connections (including ones still sending their CONNECT line).
pub const MAX_CONNECTIONS: usize = 1024;
/// Most control packets waiting for guest rx buffers.
const MAX_PENDING: usize = 4096;
/// Longest `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// First token for streams (smaller ones are the device's own fds).
pub const FIRST_STREAM_TOKEN: u32 = 16;
/// First host port handed to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Registers and unregisters fds with the event loop (EventOps in the VMM, a fake in tests).
pub trait Registrar {
    /// Watches `fd`, reporting events with `token`.
    fn add(&mut self, fd: RawFd, token: u32, events: EventSet);
    /// Stops watching `fd`.
    fn remove(&mut self, fd: RawFd, token: u32, events: EventSet);
}

/// Edge-triggered stream readiness: we read/write until WouldBlock, so level-triggered
/// wakeups for data we cannot deliver yet (no credit, no rx buffers) never spin the loop.
pub const STREAM_EVENTS: EventSet =
    EventSet::IN.union(EventSet::OUT).union(EventSet::EDGE_TRIGGERED).union(EventSet::READ_HANG_UP);

type Key = (u32, u32); // (local host port, guest port)

enum Token {
    /// A host client that has not finished its CONNECT line.
    Pending(UnixStream, Vec<u8>),
    /// An established or connecting stream.
    Conn(Key),
}

/// Connection table and backend.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    conns: HashMap<Key, Connection>,
    tokens: HashMap<u32, Token>,
    pending: VecDeque<Packet>,
    next_token: u32,
    next_local_port: u32,
}

/// Errors creating the backend.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// The unix socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// Socket path.
        path: String,
        /// Underlying error.
        source: io::Error,
    },
}

fn reply_rst(hdr: &Header) -> Packet {
    Packet {
        hdr: Header {
            src_cid: hdr.dst_cid,
            dst_cid: hdr.src_cid,
            src_port: hdr.dst_port,
            dst_port: hdr.src_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op::RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        },
        data: Vec::new(),
    }
}

fn push(pending: &mut VecDeque<Packet>, pkt: Packet) {
    if pending.len() < MAX_PENDING {
        pending.push_back(pkt);
    }
}

/// Connects to the unix socket at `path` without ever blocking: a host listener whose
/// backlog is full refuses (`EAGAIN`) instead of stalling the VMM's event loop until it
/// accepts.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use std::os::fd::FromRawFd;
    let bytes = path.as_os_str().as_encoded_bytes();
    // SAFETY: sockaddr_un is plain data; all zeros is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path too long"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just made and is owned by nothing else.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len();
    // SAFETY: addr is a valid sockaddr_un whose first `len` bytes hold the family and path.
    let rc = unsafe {
        libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len as libc::socklen_t)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let port = text.strip_prefix("CONNECT ")?.trim_end_matches('\n').trim_end_matches('\r');
    port.parse().ok()
}

impl Muxer {
    /// Binds the host socket at `uds_path`, replacing a stale socket file but refusing to
    /// steal one a live process still listens on.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, MuxerError> {
        let bind_err = |source| MuxerError::Bind { path: uds_path.display().to_string(), source };
        if uds_path.exists() {
            if UnixStream::connect(uds_path).is_ok() {
                return Err(bind_err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening there",
                )));
            }
            std::fs::remove_file(uds_path).map_err(bind_err)?;
        }
        let listener = UnixListener::bind(uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            pending: VecDeque::new(),
            next_token: FIRST_STREAM_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
        })
    }

    /// The listening socket's fd.
    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Number of live connections (for tests and diagnostics).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn alloc_token(&mut self) -> u32 {
        loop {
            let t = self.next_token;
            self.next_token = self.next_token.checked_add(1).unwrap_or(FIRST_STREAM_TOKEN);
            if !self.tokens.contains_key(&t) {
                return t;
            }
        }
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self.next_local_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    fn queue(&mut self, pkt: Packet) {
        push(&mut self.pending, pkt);
    }

    /// Accepts host clients waiting on the listener.
    pub fn accept(&mut self, reg: &mut dyn Registrar) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.tokens.len() >= MAX_CONNECTIONS || stream.set_nonblocking(true).is_err()
                    {
                        continue; // dropped: the client sees EOF
                    }
                    let token = self.alloc_token();
                    reg.add(stream.as_raw_fd(), token, STREAM_EVENTS);
                    self.tokens.insert(token, Token::Pending(stream, Vec::new()));
                    // Data may already be there (edge-triggered: no event for it).
                    self.stream_event(token, EventSet::IN, reg);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Handles readiness of a host stream.
    pub fn stream_event(&mut self, token: u32, events: EventSet, reg: &mut dyn Registrar) {
        match self.tokens.get_mut(&token) {
            None => {}
            Some(Token::Pending(..)) => self.pending_readable(token, reg),
            Some(Token::Conn(key)) => {
                let key = *key;
                self.conn_event(key, events, reg);
            }
        }
    }

    fn pending_readable(&mut self, token: u32, reg: &mut dyn Registrar) {
        let Some(Token::Pending(stream, line)) = self.tokens.get_mut(&token) else { return };
        let mut byte = [0u8; 1];
        // Read byte by byte up to the newline so no payload after it is consumed here.
        let done = loop {
            match stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) => {
                    line.push(byte[0]);
                    if byte[0] == b'\n' {
                        break Ok(true);
                    }
                    if line.len() > MAX_CONNECT_LINE {
                        break Err(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(_) => break Err(()),
            }
        };
        match done {
            Ok(false) => {}
            Ok(true) => {
                let Some(Token::Pending(stream, line)) = self.tokens.remove(&token) else { return };
                match parse_connect(&line) {
                    Some(port) => {
                        let local = self.alloc_local_port(port);
                        let mut conn = Connection::new(
                            stream,
                            token,
                            local,
                            port,
                            self.guest_cid,
                            State::Connecting,
                        );
                        let req = conn.control(op::REQUEST, 0);
                        self.queue(req);
                        self.conns.insert((local, port), conn);
                        self.tokens.insert(token, Token::Conn((local, port)));
                    }
                    None => reg.remove(stream.as_raw_fd(), token, STREAM_EVENTS),
                }
            }
            Err(()) => {
                if let Some(Token::Pending(stream, _)) = self.tokens.remove(&token) {
                    reg.remove(stream.as_raw_fd(), token, STREAM_EVENTS);
                }
            }
        }
    }

    fn conn_event(&mut self, key: Key, events: EventSet, reg: &mut dyn Registrar) {
        let Some(conn) = self.conns.get_mut(&key) else { return };
        if events.contains(EventSet::OUT) && conn.has_buffered() {
            if conn.flush_to_host().is_err() {
                self.reset(key, reg);
                return;
            }
            // The host was slow and the guest may be waiting for room: tell it once the
            // backlog is gone, or whenever a good chunk was freed.
            let drained = !conn.has_buffered() && conn.has_unannounced_credit();
            if (drained || conn.needs_credit_update()) && conn.state == State::Established {
                let p = conn.control(op::CREDIT_UPDATE, 0);
                push(&mut self.pending, p);
            }
            if !conn.has_buffered() && conn.guest_shut_send {
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            }
        }
        if events
            .intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR)
        {
            if conn.state == State::Connecting
                && events.intersects(EventSet::HANG_UP | EventSet::ERROR)
            {
                // The host client gave up before the guest answered.
                self.reset(key, reg);
                return;
            }
            conn.rx_ready = true;
        }
    }

    /// Sends RST to the guest and forgets the connection.
    fn reset(&mut self, key: Key, reg: &mut dyn Registrar) {
        if let Some(mut conn) = self.conns.remove(&key) {
            let rst = conn.control(op::RST, 0);
            self.queue(rst);
            self.drop_conn(conn, reg);
        }
    }

    fn drop_conn(&mut self, conn: Connection, reg: &mut dyn Registrar) {
        reg.remove(conn.stream.as_raw_fd(), conn.token, STREAM_EVENTS);
        self.tokens.remove(&conn.token);
    }

    fn remove(&mut self, key: Key, reg: &mut dyn Registrar) {
        if let Some(conn) = self.conns.remove(&key) {
            self.drop_conn(conn, reg);
        }
    }

    /// Handles a packet the guest sent.
    pub fn guest_packet(&mut self, pkt: Packet, reg: &mut dyn Registrar) {
        let h = pkt.hdr;
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID || h.type_ != TYPE_STREAM {
            if h.op != op::RST {
                self.queue(reply_rst(&h));
            }
            return;
        }
        let key = (h.dst_port, h.src_port);
        if h.op == op::REQUEST {
            self.guest_connect(&h, reg);
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            if h.op != op::RST {
                self.queue(reply_rst(&h));
            }
            return;
        };
        conn.update_peer_credit(&h);
        match h.op {
            op::RESPONSE if conn.state == State::Connecting => {
                let line = format!("OK {}\n", conn.local_port);
                if conn.stream.write_all(line.as_bytes()).is_err() {
                    self.reset(key, reg);
                    return;
                }
                conn.state = State::Established;
                conn.rx_ready = true; // the client may have sent data after CONNECT
            }
            op::RW if conn.state == State::Established => {
                if conn.send_to_host(&pkt.data).is_err() {
                    self.reset(key, reg);
                    return;
                }
                if conn.needs_credit_update() {
                    let p = conn.control(op::CREDIT_UPDATE, 0);
                    self.queue(p);
                }
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => {
                let p = conn.control(op::CREDIT_UPDATE, 0);
                self.queue(p);
            }
            op::SHUTDOWN => {
                if h.flags & SHUTDOWN_SEND != 0 {
                    conn.guest_shut_send = true;
                    if !conn.has_buffered() {
                        let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                    }
                }
                let both = SHUTDOWN_SEND | SHUTDOWN_RCV;
                if h.flags & both == both || (conn.guest_shut_send && conn.host_eof) {
                    // Done in both directions: acknowledge with RST and forget it.
                    self.reset(key, reg);
                }
            }
            op::RST => self.remove(key, reg),
            _ => self.reset(key, reg), // RESPONSE/RW in the wrong state, unknown op
        }
    }

    fn guest_connect(&mut self, h: &Header, reg: &mut dyn Registrar) {
        let key = (h.dst_port, h.src_port);
        if self.conns.contains_key(&key) || self.tokens.len() >= MAX_CONNECTIONS {
            self.queue(reply_rst(h));
            return;
        }
        let path = format!("{}_{}", self.uds_path.display(), h.dst_port);
        let stream = match connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(_) => {
                self.queue(reply_rst(h));
                return;
            }
        };
        let token = self.alloc_token();
        let mut conn = Connection::new(
            stream,
            token,
            h.dst_port,
            h.src_port,
            self.guest_cid,
            State::Established,
        );
        conn.update_peer_credit(h);
        conn.rx_ready = true;
        reg.add(conn.stream.as_raw_fd(), token, STREAM_EVENTS);
        let resp = conn.control(op::RESPONSE, 0);
        self.queue(resp);
        self.tokens.insert(token, Token::Conn(key));
        self.conns.insert(key, conn);
    }

    /// Whether anything may be sent to the guest.
    pub fn has_work(&self) -> bool {
        !self.pending.is_empty()
            || self
                .conns
                .values()
                .any(|c| c.rx_ready && !c.host_eof && c.state == State::Established)
    }

    /// The next packet for the guest that fits `room` bytes of payload, if any.
    pub fn next_for_guest(&mut self, room: usize, reg: &mut dyn Registrar) -> Option<Packet> {
        if let Some(p) = self.pending.pop_front() {
            return Some(p);
        }
        let keys: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.rx_ready && !c.host_eof && c.state == State::Established)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(&key) else { continue };
            match conn.read_from_host(room) {
                HostRead::Data(d) => return Some(conn.data_packet(d)),
                HostRead::WouldBlock => {
                    conn.rx_ready = false;
                    if conn.take_credit_request() {
                        // Data may be waiting but the guest has no room: ask for credit and
                        // retry when it answers.
                        conn.rx_ready = true;
                        return Some(conn.control(op::CREDIT_REQUEST, 0));
                    }
                    if conn.peer_credit() == 0 {
                        conn.rx_ready = true; // retry on the next credit update
                    }
                }
                HostRead::Eof => {
                    // The host will send nothing more; the guest may still send to it.
                    conn.rx_ready = false;
                    conn.host_eof = true;
                    if conn.guest_shut_send {
                        let rst = conn.control(op::RST, 0);
                        self.remove(key, reg);
                        return Some(rst);
                    }
                    return Some(conn.control(op::SHUTDOWN, SHUTDOWN_SEND));
                }
            }
        }
        None
    }

    /// Gives back a packet that did not fit the guest's buffer, to be sent first next time.
    pub fn unsend(&mut self, pkt: Packet) {
        self.pending.push_front(pkt);
    }

    /// Closes every connection (device reset): streams are dropped, nothing is sent.
    pub fn reset_all(&mut self, reg: &mut dyn Registrar) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for k in keys {
            self.remove(k, reg);
        }
        let pending: Vec<u32> = self.tokens.keys().copied().collect();
        for t in pending {
            if let Some(Token::Pending(s, _)) = self.tokens.remove(&t) {
                reg.remove(s.as_raw_fd(), t, STREAM_EVENTS);
            }
        }
        self.pending.clear();
    }

    /// Whether a waiting stream with no credit should be retried (credit arrived).
    pub fn credit_blocked(&self) -> bool {
        self.conns.values().any(|c| c.rx_ready && c.peer_credit() == 0)
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1024\n"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT 52\r\n"), Some(52));
        assert_eq!(parse_connect(b"CONNECT -1\n"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999\n"), None);
        assert_eq!(parse_connect(b"connect 1\n"), None);
        assert_eq!(parse_connect(b"\xff\n"), None);
    }
}
