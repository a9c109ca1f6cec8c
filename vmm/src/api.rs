//! The control API: a unix socket through which the VMM's owner changes the running VM.
//!
//! One JSON request per line, one JSON reply per line (format in `vmm/README.md`). It
//! attaches and detaches disks on the empty slots the VM was booted with (`spare_disks`,
//! read-only, and `spare_writable_disks`) — the guest sees the slot's capacity and serial
//! change through a virtio configuration-change interrupt, a hot-plug without PCI — plugs
//! file system servers into its spare virtio-fs devices, and pauses, resumes and snapshots
//! the VM.
//!
//! Everything read from the socket is untrusted: lines are bounded, bad JSON gets an error
//! reply, and a misbehaving client only loses its own connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use serde::{Deserialize, Serialize};
use vmm_sys_util::epoll::EventSet;

use crate::bus::lock;
use crate::virtio::blk::Block;

fn read_only_default() -> bool {
    true
}

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Most clients connected at once.
const MAX_CONNS: usize = 16;

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiRequest {
    /// Puts a raw disk file into a free spare slot, read-only unless `read_only` is false
    /// (then into a writable slot). Its serial, as the guest reads it, is the file name (at
    /// most 20 bytes) and must not be attached already.
    AttachDisk {
        /// The disk image.
        path: PathBuf,
        /// Read-only (the default) or writable.
        #[serde(default = "read_only_default")]
        read_only: bool,
    },
    /// Empties the spare slot holding the disk with this serial. The guest must have
    /// unmounted it.
    DetachDisk {
        /// Serial the disk was attached with.
        serial: String,
    },
    /// Lists the disks: [`ApiReply::Disks`].
    ListDisks,
    /// Stops every vCPU where its state is consistent (the guest's clock keeps counting);
    /// devices finish the request in hand and take no new ones from the guest.
    Pause,
    /// Lets a paused VM run again.
    Resume,
    /// Writes a paused VM's state and memory to two new files (see vmm/README.md).
    Snapshot {
        /// The state file.
        state: PathBuf,
        /// The memory file.
        memory: PathBuf,
    },
    /// Connects the vhost-user file system server (virtiofsd) listening on `socket` to the
    /// spare virtio-fs device with `tag`. A VM whose memory is private moves it into a
    /// shared memory file first (the server maps guest memory too), with its vCPUs paused
    /// for the copy.
    AttachFs {
        /// The spare device's tag.
        tag: String,
        /// The server's socket.
        socket: PathBuf,
    },
}

/// A reply on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiReply {
    /// Attached; the guest finds the disk by this serial.
    Attached {
        /// The disk's serial.
        serial: String,
    },
    /// Detached.
    Detached,
    /// The VM is paused.
    Paused,
    /// The VM runs again.
    Resumed,
    /// The snapshot's files are written.
    Snapshotted,
    /// The file system server is connected.
    FsAttached,
    /// The disks by slot (boot disks, then spare slots); `null` for an empty slot.
    Disks {
        /// Serials.
        serials: Vec<Option<String>>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// What the API asks of the VM as a whole; the VMM implements it.
pub trait VmControl: Send {
    /// Pauses every vCPU.
    fn pause(&mut self) -> Result<(), String>;
    /// Resumes a paused VM.
    fn resume(&mut self) -> Result<(), String>;
    /// Writes the paused VM's snapshot: `state` and `memory` are new files.
    fn snapshot(&mut self, state: &Path, memory: &Path) -> Result<(), String>;
    /// Plugs the server listening on `socket` into the spare virtio-fs device `tag`.
    fn attach_fs(&mut self, tag: &str, socket: &Path) -> Result<(), String>;
}

/// What the API server acts on: the disk slots and the VM.
pub struct Controls {
    /// The block devices.
    pub slots: DiskSlots,
    /// The VM as a whole.
    pub vm: Box<dyn VmControl>,
}

impl Controls {
    /// Carries out one request.
    pub fn handle(&mut self, req: ApiRequest) -> ApiReply {
        let done = |r: Result<(), String>, ok: ApiReply| match r {
            Ok(()) => ok,
            Err(message) => ApiReply::Error { message },
        };
        match req {
            ApiRequest::Pause => done(self.vm.pause(), ApiReply::Paused),
            ApiRequest::Resume => done(self.vm.resume(), ApiReply::Resumed),
            ApiRequest::Snapshot { state, memory } => {
                if !state.is_absolute() || !memory.is_absolute() {
                    return ApiReply::Error { message: "snapshot paths must be absolute".into() };
                }
                done(self.vm.snapshot(&state, &memory), ApiReply::Snapshotted)
            }
            ApiRequest::AttachFs { tag, socket } => {
                if !socket.is_absolute() || socket.as_os_str().len() > 107 {
                    return ApiReply::Error {
                        message: format!(
                            "socket path {} must be absolute and at most 107 bytes",
                            socket.display()
                        ),
                    };
                }
                done(self.vm.attach_fs(&tag, &socket), ApiReply::FsAttached)
            }
            other => self.slots.handle(other),
        }
    }
}

/// The VM's block devices as the API sees them.
pub struct DiskSlots {
    /// Disks given at boot (never detached).
    pub fixed: Vec<Arc<Mutex<Block>>>,
    /// Empty read-only slots for hot-plug.
    pub spare: Vec<Arc<Mutex<Block>>>,
}

impl DiskSlots {
    /// Carries out one request.
    pub fn handle(&self, req: ApiRequest) -> ApiReply {
        let err = |message: String| ApiReply::Error { message };
        match req {
            ApiRequest::AttachDisk { path, read_only } => match self.attach(&path, read_only) {
                Ok(serial) => ApiReply::Attached { serial },
                Err(e) => err(e),
            },
            ApiRequest::DetachDisk { serial } => {
                if self.fixed.iter().any(|b| lock(b).serial().as_deref() == Some(&serial)) {
                    return err(format!("disk {serial:?} was given at boot and stays"));
                }
                match self.spare.iter().find(|b| lock(b).serial().as_deref() == Some(&serial)) {
                    Some(slot) => {
                        lock(slot).eject();
                        ApiReply::Detached
                    }
                    None => err(format!("no disk with serial {serial:?} is attached")),
                }
            }
            ApiRequest::ListDisks => {
                ApiReply::Disks { serials: self.all().map(|b| lock(b).serial()).collect() }
            }
            ApiRequest::Pause
            | ApiRequest::Resume
            | ApiRequest::Snapshot { .. }
            | ApiRequest::AttachFs { .. } => {
                err("this request is about the VM, not its disks".into())
            }
        }
    }

    /// Puts the disk at `path` into a free spare slot that is read-only or writable as
    /// asked; returns its serial.
    pub fn attach(&self, path: &Path, read_only: bool) -> Result<String, String> {
        if !path.is_absolute() {
            return Err(format!("disk path {} is not absolute", path.display()));
        }
        let serial = serial_of(path);
        if serial.is_empty() {
            return Err(format!("disk path {} has no file name", path.display()));
        }
        if self.all().any(|b| lock(b).serial().as_deref() == Some(serial.as_str())) {
            return Err(format!("a disk with serial {serial:?} is already attached"));
        }
        let kind = |b: &Arc<Mutex<Block>>| lock(b).read_only() == read_only;
        let Some(slot) = self.spare.iter().find(|b| kind(b) && lock(b).serial().is_none()) else {
            return Err(format!(
                "no free {} disk slot (the VM has {} such spare slots)",
                if read_only { "read-only" } else { "writable" },
                self.spare.iter().filter(|b| kind(b)).count()
            ));
        };
        lock(slot).insert(path).map_err(|e| e.to_string())?;
        Ok(serial)
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Mutex<Block>>> {
        self.fixed.iter().chain(self.spare.iter())
    }
}

/// The serial a disk file gets: its file name, cut to the 20 bytes virtio-blk carries.
pub fn serial_of(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut end = name.len().min(20);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// Parses one request line and carries it out with `handle`.
pub fn handle_line(line: &[u8], handle: impl FnOnce(ApiRequest) -> ApiReply) -> ApiReply {
    match serde_json::from_slice::<ApiRequest>(line) {
        Ok(req) => handle(req),
        Err(e) => ApiReply::Error { message: format!("bad request: {e}") },
    }
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// The control socket in the VMM's event loop.
pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    conns: HashMap<i32, Conn>,
    controls: Controls,
}

impl ApiServer {
    /// Binds the socket at `path` (a stale socket file is replaced; one a live process
    /// listens on is not).
    pub fn bind(path: &Path, controls: Controls) -> io::Result<Self> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process listens on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(ApiServer { listener, path: path.to_path_buf(), conns: HashMap::new(), controls })
    }

    fn accept(&mut self, ops: &mut EventOps) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.conns.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                continue; // dropped: the client sees the connection close
            }
            let fd = stream.as_raw_fd();
            if ops.add(Events::with_data_raw(fd, fd as u32, EventSet::IN)).is_ok() {
                self.conns.insert(fd, Conn { stream, buf: Vec::new() });
            }
        }
    }

    /// Reads what the client sent and answers every complete line; returns false when the
    /// connection must close.
    fn serve(conn: &mut Conn, controls: &mut Controls) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            if conn.buf.len() > MAX_LINE {
                break;
            }
        }
        while let Some(end) = conn.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = conn.buf.drain(..=end).collect();
            let reply = handle_line(&line[..end], |r| controls.handle(r));
            if !send(&conn.stream, &reply) {
                return false;
            }
        }
        if conn.buf.len() > MAX_LINE {
            let reply =
                ApiReply::Error { message: format!("request longer than {MAX_LINE} bytes") };
            let _ = send(&conn.stream, &reply);
            return false;
        }
        true
    }
}

/// Writes one reply line (small; the socket is briefly made blocking so it goes whole).
fn send(mut stream: &UnixStream, reply: &ApiReply) -> bool {
    let Ok(mut text) = serde_json::to_vec(reply) else { return false };
    text.push(b'\n');
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(1)));
    let ok = stream.write_all(&text).is_ok();
    let _ = stream.set_nonblocking(true);
    ok
}

impl MutEventSubscriber for ApiServer {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.listener.as_raw_fd() {
            self.accept(ops);
            return;
        }
        let keep = match self.conns.get_mut(&fd) {
            Some(conn) => {
                events.event_set().contains(EventSet::IN)
                    && Self::serve(conn, &mut self.controls)
                    && !events.event_set().intersects(EventSet::HANG_UP | EventSet::ERROR)
            }
            None => false,
        };
        if !keep {
            if let Some(conn) = self.conns.remove(&fd) {
                let _ = ops.remove(Events::with_data_raw(fd, fd as u32, EventSet::IN));
                drop(conn);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.listener, EventSet::IN)) {
            eprintln!("ironpod-vmm: cannot watch the API socket: {e:?}");
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(dir: &Path, spare: usize) -> DiskSlots {
        let boot = dir.join("boot.img");
        std::fs::write(&boot, vec![0u8; 4096]).unwrap();
        DiskSlots {
            fixed: vec![Arc::new(Mutex::new(Block::new(&boot, true).unwrap()))],
            spare: (0..spare).map(|_| Arc::new(Mutex::new(Block::empty(true).unwrap()))).collect(),
        }
    }

    #[test]
    fn attach_list_detach() {
        let dir = tempfile::tempdir().unwrap();
        let s = slots(dir.path(), 2);
        let a = dir.path().join("layer-a.erofs");
        std::fs::write(&a, vec![1u8; 8192]).unwrap();
        let line = format!(r#"{{"attach_disk":{{"path":{a:?}}}}}"#);
        let reply = handle_line(line.as_bytes(), |r| s.handle(r));
        assert_eq!(reply, ApiReply::Attached { serial: "layer-a.erofs".into() });
        // The same serial twice: refused.
        let again = s.handle(ApiRequest::AttachDisk { path: a.clone(), read_only: true });
        assert!(matches!(again, ApiReply::Error { ref message } if message.contains("already")));
        assert_eq!(
            s.handle(ApiRequest::ListDisks),
            ApiReply::Disks {
                serials: vec![Some("boot.img".into()), Some("layer-a.erofs".into()), None]
            }
        );
        // Boot disks stay; unknown serials are an error.
        assert!(matches!(
            s.handle(ApiRequest::DetachDisk { serial: "boot.img".into() }),
            ApiReply::Error { .. }
        ));
        assert!(matches!(
            s.handle(ApiRequest::DetachDisk { serial: "nope".into() }),
            ApiReply::Error { .. }
        ));
        assert_eq!(
            s.handle(ApiRequest::DetachDisk { serial: "layer-a.erofs".into() }),
            ApiReply::Detached
        );
        assert_eq!(
            s.handle(ApiRequest::ListDisks),
            ApiReply::Disks { serials: vec![Some("boot.img".into()), None, None] }
        );
    }

    /// A VM that records what it was asked to plug in.
    struct FakeVm(Arc<Mutex<Vec<(String, PathBuf)>>>);

    impl VmControl for FakeVm {
        fn pause(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn resume(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn snapshot(&mut self, _: &Path, _: &Path) -> Result<(), String> {
            Ok(())
        }
        fn attach_fs(&mut self, tag: &str, socket: &Path) -> Result<(), String> {
            match tag {
                "share" => {
                    lock(&self.0).push((tag.into(), socket.into()));
                    Ok(())
                }
                _ => Err(format!("no spare virtio-fs device with tag {tag:?}")),
            }
        }
    }

    #[test]
    fn attach_fs_reaches_the_vm_with_an_absolute_socket_only() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut c = Controls { slots: slots(dir.path(), 0), vm: Box::new(FakeVm(seen.clone())) };
        let ok = br#"{"attach_fs":{"tag":"share","socket":"/fs.sock"}}"#;
        assert_eq!(handle_line(ok, |r| c.handle(r)), ApiReply::FsAttached);
        assert_eq!(*lock(&seen), vec![("share".to_string(), PathBuf::from("/fs.sock"))]);
        let long = format!(r#"{{"attach_fs":{{"tag":"share","socket":"/{}"}}}}"#, "a".repeat(107));
        for bad in [
            br#"{"attach_fs":{"tag":"share","socket":"fs.sock"}}"#.to_vec(),
            br#"{"attach_fs":{"tag":"other","socket":"/fs.sock"}}"#.to_vec(),
            br#"{"attach_fs":{"tag":"share"}}"#.to_vec(),
            long.into_bytes(),
        ] {
            let reply = handle_line(&bad, |r| c.handle(r));
            assert!(matches!(reply, ApiReply::Error { .. }), "{}", String::from_utf8_lossy(&bad));
        }
        assert_eq!(lock(&seen).len(), 1);
        // The disks' handler does not take it.
        let r = c.slots.handle(ApiRequest::AttachFs { tag: "share".into(), socket: "/s".into() });
        assert!(matches!(r, ApiReply::Error { .. }));
    }

    #[test]
    fn slots_run_out_and_bad_requests_get_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = slots(dir.path(), 1);
        for name in ["a.img", "b.img"] {
            std::fs::write(dir.path().join(name), [0u8; 512]).unwrap();
        }
        assert!(matches!(
            s.handle(ApiRequest::AttachDisk { path: dir.path().join("a.img"), read_only: true }),
            ApiReply::Attached { .. }
        ));
        let full =
            s.handle(ApiRequest::AttachDisk { path: dir.path().join("b.img"), read_only: true });
        assert!(matches!(full, ApiReply::Error { ref message } if message.contains("no free")));
        for bad in [
            &b"not json"[..],
            br#"{"attach_disk":{"path":"relative.img"}}"#,
            br#"{"attach_disk":{"path":"/nonexistent/x.img"}}"#,
            br#"{"attach_disk":{"path":"/"}}"#,
            br#"{"reboot":{}}"#,
        ] {
            assert!(matches!(handle_line(bad, |r| s.handle(r)), ApiReply::Error { .. }), "{bad:?}");
        }
    }

    #[test]
    fn serials_are_cut_at_20_bytes_on_a_char_boundary() {
        assert_eq!(serial_of(Path::new("/x/0123456789abcdef0123456789.erofs")).len(), 20);
        assert_eq!(serial_of(Path::new("/x/ééééééééééé")), "éééééééééé");
        assert_eq!(serial_of(Path::new("/")), "");
    }
}
