//! The user-space proxy behind published ports: it listens in the host's namespace and
//! connects, from the pod network's namespace, to the pod's address.
//!
//! Why a proxy and not nftables DNAT: ports publish on the host's loopback, and DNAT of
//! loopback traffic to another host needs `route_localnet=1`, which opens the host's
//! 127.0.0.0/8 services to its neighbours (Kubernetes' CVE-2020-8558); Docker keeps its
//! userland proxy for loopback for the same reason. TCP bytes move with splice(2) through a
//! pipe (no copy through user space); `cargo xtask bench net` measures it.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::NetworkError;
use crate::netns;
use crate::ports::{PortMapping, Protocol};

/// How long a UDP flow with no traffic either way is kept.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// Bytes one splice moves at most (and the pipe's size).
const SPLICE_CHUNK: usize = 1 << 20;
/// TCP connections, and UDP flows, one published port carries at once (each costs threads
/// and descriptors of the process serving it): past it, a new connection is closed at once
/// and a new flow's datagrams are dropped until one ends.
pub const MAX_FLOWS: usize = 1024;

/// A bound port, before its proxy runs.
enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Binds every mapping (so that a taken port fails the start, before anything runs), then
/// serves them on threads of their own for the life of the process. Returns the mappings
/// with the host ports actually bound.
pub fn publish(
    mappings: &[PortMapping],
    net_ns: &Path,
    pod: Ipv4Addr,
) -> Result<Vec<PortMapping>, NetworkError> {
    publish_bounded(mappings, net_ns, pod, MAX_FLOWS).map(|(m, p)| {
        // Served for the life of the process.
        std::mem::forget(p);
        m
    })
}

/// Published ports that stop being served when this is dropped (their listening sockets
/// are shut down; connections under way finish on their own).
pub struct Publication {
    stop: Arc<AtomicBool>,
    sockets: Vec<OwnedFd>,
}

impl Drop for Publication {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in &self.sockets {
            // SAFETY: shutdown on a descriptor we own (a duplicate of the served socket):
            // the thread blocked in accept or recvfrom on it returns.
            unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

/// Like [`publish`], served until the returned [`Publication`] is dropped (a Service's node
/// port, which goes with its Service).
pub fn publish_until_dropped(
    mappings: &[PortMapping],
    net_ns: &Path,
    target: Ipv4Addr,
) -> Result<(Vec<PortMapping>, Publication), NetworkError> {
    publish_bounded(mappings, net_ns, target, MAX_FLOWS)
}

fn publish_bounded(
    mappings: &[PortMapping],
    net_ns: &Path,
    pod: Ipv4Addr,
    max_flows: usize,
) -> Result<(Vec<PortMapping>, Publication), NetworkError> {
    let mut bound = Vec::new();
    let mut out = Vec::new();
    for m in mappings {
        let at = SocketAddr::from((m.host_ip, m.host_port));
        let taken = |e: io::Error| {
            NetworkError::Publish(format!("bind for {}:{} failed: {e}", m.host_ip, m.host_port))
        };
        let (b, port) = match m.protocol {
            Protocol::Tcp => {
                let l = TcpListener::bind(at).map_err(taken)?;
                let port = l.local_addr().map_err(taken)?.port();
                (Bound::Tcp(l), port)
            }
            Protocol::Udp => {
                let s = UdpSocket::bind(at).map_err(taken)?;
                let port = s.local_addr().map_err(taken)?.port();
                (Bound::Udp(s), port)
            }
        };
        bound.push((b, SocketAddr::from((pod, m.pod_port))));
        out.push(PortMapping { host_port: port, ..*m });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut sockets = Vec::new();
    for (b, target) in bound {
        let ns = std::fs::File::open(net_ns)
            .map_err(|e| NetworkError::Publish(format!("open {}: {e}", net_ns.display())))?;
        let ns = Arc::new(ns);
        let dup = match &b {
            Bound::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Bound::Udp(s) => s.as_fd().try_clone_to_owned(),
        };
        sockets.push(dup.map_err(|e| NetworkError::Publish(format!("dup: {e}")))?);
        let stop = stop.clone();
        std::thread::spawn(move || match b {
            Bound::Tcp(l) => serve_tcp(l, ns, target, max_flows, &stop),
            Bound::Udp(s) => serve_udp(s, ns, target, max_flows, &stop),
        });
    }
    Ok((out, Publication { stop, sockets }))
}

/// One connection counted while it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn serve_tcp(
    listener: TcpListener,
    ns: Arc<std::fs::File>,
    target: SocketAddr,
    max: usize,
    stop: &AtomicBool,
) {
    let live = Arc::new(AtomicUsize::new(0));
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if live.fetch_add(1, Ordering::Relaxed) >= max {
            // Full: this one is closed at once (the client sees the end of the stream).
            live.fetch_sub(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        let slot = Slot(live.clone());
        let ns = ns.clone();
        std::thread::spawn(move || {
            let _slot = slot;
            // The connection to the pod is made from the network's namespace.
            if netns::enter(&ns).is_err() {
                return;
            }
            let Ok(pod) = TcpStream::connect_timeout(&target, Duration::from_secs(10)) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = pod.set_nodelay(true);
            let (Ok(c2), Ok(p2)) = (client.try_clone(), pod.try_clone()) else { return };
            let back = std::thread::spawn(move || pump(&p2, &c2));
            pump(&client, &pod);
            let _ = back.join();
        });
    }
}

/// Moves bytes from `from` to `to` until `from` ends, then ends `to`'s sending side.
fn pump(from: &TcpStream, to: &TcpStream) {
    if splice_all(from, to).is_err() {
        // One side failed: take both down (the other pump notices).
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
        return;
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fds nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A larger pipe moves more per call; a refusal (limit reached) keeps the default.
    // SAFETY: fcntl with an integer argument on our own fd.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, SPLICE_CHUNK as libc::c_int) };
    Ok((r, w))
}

fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: splice between fds we hold, no offsets.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Socket → pipe → socket until the end of the stream.
fn splice_all(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let (r, w) = pipe()?;
    loop {
        let n = splice(from.as_raw_fd(), w.as_raw_fd(), SPLICE_CHUNK)?;
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            let m = splice(r.as_raw_fd(), to.as_raw_fd(), left)?;
            if m == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed"));
            }
            left -= m;
        }
    }
}

fn serve_udp(
    socket: UdpSocket,
    ns: Arc<std::fs::File>,
    target: SocketAddr,
    max: usize,
    stop: &AtomicBool,
) {
    // This thread makes the flows' sockets: in the network's namespace (the bound socket
    // stays where it was made).
    if netns::enter(&ns).is_err() {
        return;
    }
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let received = socket.recv_from(&mut buf);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((n, client)) = received else { continue };
        let flow = {
            let mut map = flows.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&client) {
                Some(f) => f.clone(),
                // Full: a new client's datagrams are dropped until a flow idles out.
                None if map.len() >= max => continue,
                None => {
                    let Ok(f) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else { continue };
                    if f.connect(target).is_err() || f.set_read_timeout(Some(UDP_IDLE)).is_err() {
                        continue;
                    }
                    let f = Arc::new(f);
                    map.insert(client, f.clone());
                    let (f2, socket, flows) = (f.clone(), socket.clone(), flows.clone());
                    // Replies go back to the client until the flow idles out.
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = f2.recv(&mut buf) {
                            let _ = socket.send_to(&buf[..n], client);
                        }
                        flows.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
                    });
                    f
                }
            }
        };
        let _ = flow.send(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A namespace of the test's own with loopback up: the "pod" side of the proxy.
    struct Ns(String);

    impl Ns {
        fn new(tag: &str) -> Ns {
            if unsafe { libc::geteuid() } != 0 {
                panic!("this test needs root (network namespaces)");
            }
            let name = format!("ironpod-unit-{tag}-{}", std::process::id());
            let p = netns::create(&name).unwrap();
            let ok = std::process::Command::new("ip")
                .args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(ok.success());
            let _ = p;
            Ns(name)
        }

        fn path(&self) -> std::path::PathBuf {
            netns::path(&self.0)
        }

        /// Runs `f` on a thread inside the namespace (sockets made there stay there).
        fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            let file = std::fs::File::open(self.path()).unwrap();
            std::thread::spawn(move || {
                netns::enter(&file).unwrap();
                f()
            })
            .join()
            .unwrap()
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = netns::remove(&self.0);
        }
    }

    /// A TCP echo server on the namespace's loopback (it ends each echo by ending its
    /// sending side); returns the mapping that publishes it.
    fn echo_server(ns: &Ns) -> PortMapping {
        let server = ns.spawn(|| TcpListener::bind("127.0.0.1:0").unwrap());
        let target_port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in server.incoming() {
                let mut c = c.unwrap();
                std::thread::spawn(move || {
                    let mut w = c.try_clone().unwrap();
                    if std::io::copy(&mut c, &mut w).is_ok() {
                        let _ = w.shutdown(Shutdown::Write);
                    }
                });
            }
        });
        PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 0,
            pod_port: target_port,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn tcp_both_ways_large_and_half_closed() {
        let ns = Ns::new("tcp");
        let m = echo_server(&ns);
        let out = publish(&[m], &ns.path(), Ipv4Addr::LOCALHOST).unwrap();
        assert_ne!(out[0].host_port, 0, "the bound port is reported");
        // Nothing listens on that port in the host's namespace but the proxy.
        let c = TcpStream::connect((Ipv4Addr::LOCALHOST, out[0].host_port)).unwrap();
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        (&c).read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "the bytes came back changed");
        // A taken port fails the publish.
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = PortMapping { host_port: busy.local_addr().unwrap().port(), ..m };
        let e = publish(&[taken], &ns.path(), Ipv4Addr::LOCALHOST).unwrap_err().to_string();
        assert!(e.contains("bind for 127.0.0.1"), "{e}");
    }

    #[test]
    fn a_port_carries_a_bounded_number_of_connections() {
        let ns = Ns::new("tcpmax");
        let m = echo_server(&ns);
        let (maps, publication) =
            publish_bounded(&[m], &ns.path(), Ipv4Addr::LOCALHOST, 2).unwrap();
        let port = maps[0].host_port;
        let open = || {
            let c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c
        };
        let echoes = |mut c: &TcpStream| {
            let mut b = [0u8; 1];
            c.write_all(b"x").is_ok() && matches!(c.read(&mut b), Ok(1))
        };
        let (a, b) = (open(), open());
        assert!(echoes(&a) && echoes(&b));
        assert!(!echoes(&open()), "a third connection is closed while two are open");
        drop(a);
        // Once one ends, a new one is carried again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !echoes(&open()) {
            assert!(std::time::Instant::now() < deadline, "no slot came free");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(echoes(&b));
        // Dropped, the port is served no more.
        drop(publication);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "still listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn udp_flows_get_their_own_replies() {
        let ns = Ns::new("udp");
        let server = ns.spawn(|| UdpSocket::bind("127.0.0.1:0").unwrap());
        let target_port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                server.send_to(&reply, from).unwrap();
            }
        });
        let m = PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 0,
            pod_port: target_port,
            protocol: Protocol::Udp,
        };
        let port = publish(&[m], &ns.path(), Ipv4Addr::LOCALHOST).unwrap()[0].host_port;
        let clients: Vec<UdpSocket> =
            (0..2).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for (i, c) in clients.iter().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.send_to(format!("client{i}").as_bytes(), (Ipv4Addr::LOCALHOST, port)).unwrap();
        }
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], format!("echo:client{i}").as_bytes());
        }
    }
}
