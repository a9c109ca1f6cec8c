//! A UDP answerer and asker for the rig tests of UDP Services (the demo image's busybox has
//! no UDP server or client). Linked statically by `cargo xtask test`: the demo image has no
//! C library.
//!
//! - `udp-echo serve PORT`: answers every datagram with `HOSTNAME PAYLOAD` (in a kube pod the
//!   host name is the pod's name), forever.
//! - `udp-echo ask ADDR:PORT COUNT`: sends COUNT datagrams, each from a socket of its own
//!   (a new flow each, as separate clients would be), and prints each answer on a line, or
//!   `timeout` when none came within 2 s. Exits 1 when any timed out.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", port] => serve(port),
        ["ask", addr, count] => ask(addr, count),
        _ => Err("usage: udp-echo serve PORT | udp-echo ask ADDR:PORT COUNT".to_string()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("udp-echo: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(port: &str) -> Result<ExitCode, String> {
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("host name: {e}"))?;
    let sock = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("bind {port}: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) => return Err(format!("receive: {e}")),
        };
        let mut reply = format!("{} ", name.trim()).into_bytes();
        reply.extend_from_slice(&buf[..n]);
        // A client gone before its answer is its business, not the server's.
        let _ = sock.send_to(&reply, from);
    }
}

fn ask(addr: &str, count: &str) -> Result<ExitCode, String> {
    let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    let count: u32 = count.parse().map_err(|_| format!("bad count {count:?}"))?;
    let mut missed = false;
    for i in 0..count {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        sock.send_to(format!("ping-{i}").as_bytes(), addr).map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 1500];
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => println!("{}", String::from_utf8_lossy(&buf[..n])),
            Err(_) => {
                println!("timeout");
                missed = true;
            }
        }
    }
    Ok(if missed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
