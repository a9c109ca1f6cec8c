//! The agent binary off-VM (`--listen-unix`): handshake, requests, hostile frames, shutdown.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ironpod_protocol::{
    self as proto, ErrorKind, Hello, HelloReply, Outcome, Request, RequestBody, Response,
    ResponseBody,
};

struct Agent {
    child: Child,
    sock: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_ironpod-agent"))
            .arg("--listen-unix")
            .arg(&sock)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "agent did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent { child, sock, _dir: dir }
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn session(&self) -> UnixStream {
        let mut s = self.connect();
        proto::send(
            &mut s,
            &Hello { protocol_version: proto::PROTOCOL_VERSION, client: "test".into() },
        )
        .unwrap();
        let r: HelloReply = proto::recv(&mut s).unwrap();
        assert!(matches!(r, HelloReply::Ok { .. }), "{r:?}");
        s
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(s: &mut UnixStream, id: u64, body: RequestBody) -> Response {
    proto::send(s, &Request { id, body }).unwrap();
    proto::recv(s).unwrap()
}

#[test]
fn handshake_ping_info() {
    let a = Agent::start();
    let mut s = a.session();
    let r = call(&mut s, 1, RequestBody::Ping { nonce: 42 });
    assert_eq!(r, Response { id: 1, result: Outcome::Ok(ResponseBody::Pong { nonce: 42 }) });
    let r = call(&mut s, 2, RequestBody::Info);
    assert!(matches!(r.result, Outcome::Ok(ResponseBody::Info(_))), "{r:?}");
}

#[test]
fn incompatible_version_refused() {
    let a = Agent::start();
    let mut s = a.connect();
    proto::send(&mut s, &Hello { protocol_version: 999, client: "old".into() }).unwrap();
    let r: HelloReply = proto::recv(&mut s).unwrap();
    assert!(matches!(r, HelloReply::Err(ref e) if e.kind == ErrorKind::Incompatible), "{r:?}");
}

#[test]
fn hostile_frames_get_errors_and_agent_survives() {
    let a = Agent::start();
    // Garbage instead of a hello.
    let mut s = a.connect();
    proto::write_frame(&mut s, b"\x00\x01garbage").unwrap();
    let r: HelloReply = proto::recv(&mut s).unwrap();
    assert!(matches!(r, HelloReply::Err(_)));
    // Malformed request inside a session: error reply, session continues.
    let mut s = a.session();
    proto::write_frame(&mut s, br#"{"id":5,"body":{"format_disk":{}}}"#).unwrap();
    let r: Response = proto::recv(&mut s).unwrap();
    assert!(matches!(r.result, Outcome::Err(ref e) if e.kind == ErrorKind::BadRequest), "{r:?}");
    let r = call(&mut s, 6, RequestBody::Ping { nonce: 1 });
    assert_eq!(r.id, 6);
    // An oversized length prefix: error reply, then the connection closes.
    s.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
    let r: Response = proto::recv(&mut s).unwrap();
    assert!(matches!(r.result, Outcome::Err(ref e) if e.kind == ErrorKind::TooLarge), "{r:?}");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    // A truncated frame then hang-up.
    let mut s = a.session();
    s.write_all(&[0, 0, 0, 50, b'{']).unwrap();
    drop(s);
    // The agent still serves new sessions.
    let mut s = a.session();
    assert_eq!(call(&mut s, 7, RequestBody::Ping { nonce: 2 }).id, 7);
}

#[test]
fn shutdown_answers_then_exits() {
    let mut a = Agent::start();
    let mut s = a.session();
    let r = call(&mut s, 1, RequestBody::Shutdown);
    assert_eq!(r.result, Outcome::Ok(ResponseBody::Done));
    let status = a.child.wait().unwrap();
    assert!(status.success());
}
