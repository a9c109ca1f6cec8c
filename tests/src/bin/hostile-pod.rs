//! A hostile program for a pod (tests only): run as root in a privileged container, it
//! floods every way out of the VM at once and never stops —
//!
//! - the serial console (a `ttyS0` node it makes itself), as fast as the UART takes bytes;
//! - the network card: UDP datagrams of 1400 bytes to `TARGET:9`, without pause;
//! - vsock: connection requests to every host port (the VMM answers each with a reset);
//! - its own stdout (which the agent streams to the host's log);
//! - its writable disk: a file grown until the disk is full, then rewritten.
//!
//! Every half second it writes what it has sent so far to `/dev/shm/flood-stats` (tmpfs, so
//! a full disk does not stop the report), as `name count` lines.
//!
//! Usage: `hostile-pod TARGET-IPV4`. It must be linked statically: the demo image has no C
//! library (`cargo xtask test` builds it so).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What each flood has sent: bytes, datagrams or attempts.
#[derive(Default)]
struct Counts {
    console: AtomicU64,
    udp: AtomicU64,
    vsock: AtomicU64,
    stdout: AtomicU64,
    disk: AtomicU64,
    disk_full: AtomicU64,
}

fn main() {
    let target: Ipv4Addr = match std::env::args().nth(1).and_then(|a| a.parse().ok()) {
        Some(t) => t,
        None => {
            eprintln!("usage: hostile-pod TARGET-IPV4");
            std::process::exit(2);
        }
    };
    let counts = Arc::new(Counts::default());
    spawn(&counts, console);
    spawn(&counts, move |c| udp(c, target));
    for _ in 0..2 {
        spawn(&counts, vsock);
    }
    spawn(&counts, stdout);
    spawn(&counts, disk);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let c = &counts;
        let report = format!(
            "console {}\nudp {}\nvsock {}\nstdout {}\ndisk {}\ndisk_full {}\n",
            c.console.load(Ordering::Relaxed),
            c.udp.load(Ordering::Relaxed),
            c.vsock.load(Ordering::Relaxed),
            c.stdout.load(Ordering::Relaxed),
            c.disk.load(Ordering::Relaxed),
            c.disk_full.load(Ordering::Relaxed),
        );
        if std::fs::write("/dev/shm/flood-stats.new", report).is_ok() {
            let _ = std::fs::rename("/dev/shm/flood-stats.new", "/dev/shm/flood-stats");
        }
    }
}

fn spawn(counts: &Arc<Counts>, f: impl FnOnce(&Counts) + Send + 'static) {
    let c = counts.clone();
    std::thread::spawn(move || f(&c));
}

/// Writes lines to the first serial port through a device node of its own.
fn console(c: &Counts) {
    let node = c"/dev/hostile-ttyS0";
    // SAFETY: a valid C string; mknod only reads it.
    let rc = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(4, 64)) };
    if rc != 0 {
        eprintln!("hostile-pod: mknod ttyS0: {}", std::io::Error::last_os_error());
        return;
    }
    let mut tty = match std::fs::OpenOptions::new().write(true).open("/dev/hostile-ttyS0") {
        Ok(f) => f,
        Err(e) => return eprintln!("hostile-pod: open ttyS0: {e}"),
    };
    let line = b"hostile-pod: console flood console flood console flood console flood\n";
    loop {
        match tty.write(line) {
            Ok(n) => {
                c.console.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Sends datagrams to `target:9` (discard) without pause.
fn udp(c: &Counts, target: Ipv4Addr) {
    let sock = match UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(e) => return eprintln!("hostile-pod: udp socket: {e}"),
    };
    let payload = [0x5au8; 1400];
    let to = SocketAddrV4::new(target, 9);
    loop {
        if sock.send_to(&payload, to).is_ok() {
            c.udp.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Asks the host for a connection on one port after another.
fn vsock(c: &Counts) {
    let mut port: u32 = 1024;
    loop {
        // SAFETY: plain socket call, no pointers.
        let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            eprintln!("hostile-pod: vsock socket: {}", std::io::Error::last_os_error());
            return;
        }
        // SAFETY: zeroed sockaddr_vm is a valid value; fields set below.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = libc::VMADDR_CID_HOST;
        addr.svm_port = port;
        // SAFETY: addr is a valid sockaddr_vm of the length given; fd is ours.
        unsafe {
            libc::connect(
                fd,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            );
            libc::close(fd);
        }
        c.vsock.fetch_add(1, Ordering::Relaxed);
        port = if port == u32::MAX - 1 { 1024 } else { port + 1 };
    }
}

/// Writes lines to its stdout.
fn stdout(c: &Counts) {
    let line = b"hostile-pod: log flood log flood log flood log flood log flood log flood\n";
    let mut out = std::io::stdout().lock();
    loop {
        match out.write(line) {
            Ok(n) => {
                c.stdout.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Grows a file until the disk is full, then rewrites it from the start, forever.
fn disk(c: &Counts) {
    let chunk = vec![0xa5u8; 1 << 20];
    let mut f = match std::fs::File::create("/fill") {
        Ok(f) => f,
        Err(e) => return eprintln!("hostile-pod: create /fill: {e}"),
    };
    loop {
        match f.write(&chunk) {
            Ok(n) => {
                c.disk.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                c.disk_full.fetch_add(1, Ordering::Relaxed);
                let _ = f.sync_all();
                let _ = std::io::Seek::rewind(&mut f);
            }
        }
    }
}
