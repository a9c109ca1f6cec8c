//! One host connection: handshake, then requests answered in order.

use ironpod_protocol::{
    self as proto, AgentError, ErrorKind, FrameError, Hello, HelloReply, Request, RequestBody,
    Response, StdioStream, PROTOCOL_VERSION,
};

use crate::listener::Stream;
use crate::{container, handlers, init, log};

fn open_file(path: &str) -> Result<std::fs::File, AgentError> {
    let p = handlers::absolute(path)?;
    std::fs::File::open(p).map_err(|e| AgentError::new(ErrorKind::from(&e), format!("{path}: {e}")))
}

/// What to do after answering a request.
pub enum After {
    /// Keep serving.
    Continue,
    /// End the VM (or, off-VM, the process).
    Shutdown,
}

/// Serves one connection until it closes or breaks.
pub fn serve(mut stream: Box<dyn Stream>, pid1: bool) {
    let hello: Hello = match proto::recv(&mut stream) {
        Ok(h) => h,
        Err(FrameError::Closed) => return,
        Err(e) => {
            let reply = HelloReply::Err(AgentError::new(
                ErrorKind::BadRequest,
                format!("expected hello: {e}"),
            ));
            let _ = proto::send(&mut stream, &reply);
            return;
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let reply = HelloReply::Err(AgentError::new(
            ErrorKind::Incompatible,
            format!("agent speaks protocol {PROTOCOL_VERSION}, client {}", hello.protocol_version),
        ));
        let _ = proto::send(&mut stream, &reply);
        return;
    }
    let ok = HelloReply::Ok {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    if proto::send(&mut stream, &ok).is_err() {
        return;
    }
    loop {
        let body = match proto::read_frame(&mut stream) {
            Ok(b) => b,
            Err(FrameError::Closed) => return,
            Err(FrameError::TooLarge(n)) => {
                // The stream cannot be resynchronised after an oversized frame: answer, close.
                let err = AgentError::new(ErrorKind::TooLarge, format!("frame of {n} bytes"));
                let _ = proto::send(&mut stream, &Response { id: 0, result: Err(err).into() });
                return;
            }
            Err(_) => return,
        };
        let request: Request = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                // Frame boundaries are intact: report and go on. The id is unknown, so 0.
                let err = AgentError::new(ErrorKind::BadRequest, format!("malformed request: {e}"));
                if proto::send(&mut stream, &Response { id: 0, result: Err(err).into() }).is_err() {
                    return;
                }
                continue;
            }
        };
        let (result, after) = match request.body {
            RequestBody::Shutdown => (Ok(proto::ResponseBody::Done), After::Shutdown),
            RequestBody::OpenStdio { process, stream: which } => {
                match container::runtime().take_stdio(&process, which) {
                    Ok((fd, tty)) => {
                        let done = Response {
                            id: request.id,
                            result: Ok(proto::ResponseBody::Done).into(),
                        };
                        if proto::send(&mut stream, &done).is_ok() {
                            match which {
                                StdioStream::Stdin => container::pump_in(&mut stream, fd, tty),
                                _ => container::pump_out(fd, &mut stream),
                            }
                        }
                        return;
                    }
                    Err(e) => (Err(e), After::Continue),
                }
            }
            RequestBody::OpenFile { path } => match open_file(&path) {
                Ok(file) => {
                    let done =
                        Response { id: request.id, result: Ok(proto::ResponseBody::Done).into() };
                    if proto::send(&mut stream, &done).is_ok() {
                        let mut file = file;
                        let _ = std::io::copy(&mut file, &mut stream);
                    }
                    return;
                }
                Err(e) => (Err(e), After::Continue),
            },
            RequestBody::ReadArchive { container, path } => {
                // Checked first, so that a missing path is an answer, not a cut stream.
                match container::runtime().stat_path(&container, &path) {
                    Ok(_) => {
                        let done = Response {
                            id: request.id,
                            result: Ok(proto::ResponseBody::Done).into(),
                        };
                        if proto::send(&mut stream, &done).is_err() {
                            return;
                        }
                        let mut out = proto::ChunkWriter::new(&mut stream, proto::ARCHIVE_CHUNK);
                        let result = container::runtime().read_archive(&container, &path, &mut out);
                        if out.finish().is_err() {
                            return; // the host went away
                        }
                        if let Err(e) = &result {
                            log::line(&format!("archive of {path} in {container}: {e}"));
                        }
                        (result.map(|()| proto::ResponseBody::Done), After::Continue)
                    }
                    Err(e) => (Err(e), After::Continue),
                }
            }
            RequestBody::WriteArchive(req) => {
                let done =
                    Response { id: request.id, result: Ok(proto::ResponseBody::Done).into() };
                if proto::send(&mut stream, &done).is_err() {
                    return;
                }
                let mut upload = proto::ChunkReader::new(&mut stream);
                let result = container::runtime().write_archive(&req, &mut upload);
                if upload.drain().is_err() {
                    return;
                }
                (result.map(|()| proto::ResponseBody::Done), After::Continue)
            }
            body => (handlers::handle(body), After::Continue),
        };
        let sent = proto::send(&mut stream, &Response { id: request.id, result: result.into() });
        if let After::Shutdown = after {
            drop(stream);
            if pid1 {
                log::line("shutdown requested");
                init::end_vm();
            }
            std::process::exit(0);
        }
        if sent.is_err() {
            return;
        }
    }
}
