//! A web server in a pod and a client on the host's loopback, for tests of published ports.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A shell command for the demo image: a busybox web server in the pod serving `body` at /
/// and `seq 1 N` at /big.
pub fn web_server(body: &str, big: u32) -> String {
    format!(
        "mkdir -p /www && echo {body} > /www/index.html && seq 1 {big} > /www/big && \
         exec httpd -f -p 80 -h /www"
    )
}

/// One GET of `path` from 127.0.0.1:`port` (HTTP/1.0), the whole answer as text.
pub fn try_http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    c.set_read_timeout(Some(timeout))?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut s = Vec::new();
    c.read_to_end(&mut s)?;
    Ok(String::from_utf8_lossy(&s).into_owned())
}

/// GET `path` from 127.0.0.1:`port` (HTTP/1.0), retrying while the pod's server starts.
pub fn http_get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_http_get(port, path, Duration::from_secs(30)) {
            Ok(s) if s.starts_with("HTTP/1") => return s,
            other => {
                assert!(Instant::now() < deadline, "no answer on 127.0.0.1:{port}: {other:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
