//! virtio-fs through a vhost-user backend (virtiofsd): the file system server runs in its own
//! process and works on the queues itself. The VMM only negotiates, hands the backend the
//! guest memory (its file descriptors), the queue addresses and two eventfds per queue: the
//! guest's notifications reach the backend directly through KVM's ioeventfd ("kick"), and
//! the backend's "call" is the device's irqfd itself, so its interrupts reach the guest
//! without passing through the VMM. virtio-mmio's interrupt status register cannot then be
//! set per interrupt: while the device is active it always reads "used buffers"
//! ([`Interrupt::set_sticky`]), as the driver only needs to look at its queues.
//!
//! The VMM connects when the device is made (a backend that is not listening fails the VM's
//! set-up at once) but talks to it only when the guest's driver activates the device: the
//! backend starts up (virtiofsd sets its sandbox up before it answers) while the guest
//! boots, instead of delaying the boot. The guest is offered the features every virtio-fs
//! backend has; activation checks the backend's own.

use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{
    features, read_config_bytes, ActivateContext, ActivateError, GuestMemoryMmap, Interrupt,
    QueueT, VirtioDevice,
};
use crate::config::MAX_FS_TAG;

/// Virtio device type of a file system device.
pub const DEVICE_TYPE_FS: u32 = 26;

/// The high-priority queue and one request queue.
const NUM_QUEUES: usize = 2;

/// Errors while connecting to the backend.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The vhost-user conversation failed.
    #[error("vhost-user backend {socket}: {what}: {source}")]
    Backend {
        /// The backend's socket.
        socket: String,
        /// The step.
        what: &'static str,
        /// Why.
        source: vhost::Error,
    },
    /// The backend lacks what a virtio-fs device needs.
    #[error("vhost-user backend {0}: does not offer VIRTIO_F_VERSION_1")]
    NoVersion1(String),
    /// An eventfd could not be made.
    #[error("eventfd: {0}")]
    EventFd(#[from] std::io::Error),
    /// [`Fs::plug`] on a device that has a backend.
    #[error("virtio-fs {0}: a backend is connected already")]
    Plugged(String),
    /// The backend plugged into a started device could not take its queues.
    #[error("{0}")]
    Start(String),
}

struct Active {
    interrupt: Arc<Interrupt>,
}

/// The connection to the backend.
struct Conn {
    frontend: Frontend,
    socket: String,
    /// The backend's features and whether it speaks vhost-user protocol features, once
    /// asked (at the first activation).
    backend: Option<(u64, bool)>,
}

/// A virtio-fs device backed by a vhost-user file system server.
///
/// A spare device ([`Fs::empty`]) has no backend yet: the guest probes it and its driver
/// starts it like any other, and its queues wait (nothing reaches them before the guest
/// mounts the tag) until [`Fs::plug`] connects a backend — a pod template's VM has one,
/// and each VM restored from it plugs in its own virtiofsd.
pub struct Fs {
    conn: Option<Conn>,
    tag: String,
    config: [u8; MAX_FS_TAG + 4],
    queue_sizes: [u16; NUM_QUEUES],
    kicks: Vec<EventFd>,
    active: Option<Active>,
    /// The driver started the device before a backend was plugged in: its queues, until
    /// one is.
    waiting: Option<ActivateContext>,
}

/// What the guest is offered: what virtio-fs backends have (virtiofsd does).
const OFFERED: u64 = features::VIRTIO_F_VERSION_1
    | features::VIRTIO_RING_F_EVENT_IDX
    | features::VIRTIO_RING_F_INDIRECT_DESC;

impl Conn {
    fn connect(socket: &Path) -> Result<Self, FsError> {
        let name = socket.display().to_string();
        let frontend = Frontend::connect(socket, NUM_QUEUES as u64)
            .map_err(|source| FsError::Backend { socket: name.clone(), what: "connect", source })?;
        Ok(Conn { frontend, socket: name, backend: None })
    }

    /// Takes ownership of the backend and negotiates protocol features (once).
    fn handshake(&mut self) -> Result<(u64, bool), FsError> {
        if let Some(b) = self.backend {
            return Ok(b);
        }
        let socket = self.socket.clone();
        let err = |what| {
            let socket = socket.clone();
            move |source| FsError::Backend { socket, what, source }
        };
        self.frontend.set_owner().map_err(err("set owner"))?;
        let features = self.frontend.get_features().map_err(err("get features"))?;
        if features & features::VIRTIO_F_VERSION_1 == 0 {
            return Err(FsError::NoVersion1(socket));
        }
        let protocol = features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
        if protocol {
            let offered =
                self.frontend.get_protocol_features().map_err(err("get protocol features"))?;
            // REPLY_ACK: every request that changes the backend is acknowledged, so the
            // memory table is in place before the queues are.
            let wanted =
                offered & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK);
            self.frontend.set_protocol_features(wanted).map_err(err("set protocol features"))?;
        }
        self.backend = Some((features, protocol));
        Ok((features, protocol))
    }

    fn err(&self, what: &'static str) -> impl FnOnce(vhost::Error) -> ActivateError + '_ {
        move |e| ActivateError::Backend(format!("{}: {what}: {e}", self.socket))
    }

    /// Hands the backend the guest memory and the driver's queues; its calls go to the
    /// device's interrupt (irqfd), the guest's kicks through `kicks`.
    fn start(
        &mut self,
        ctx: &ActivateContext,
        sizes: &[u16; NUM_QUEUES],
        kicks: &[EventFd],
    ) -> Result<(), ActivateError> {
        let (backend_features, protocol) =
            self.handshake().map_err(|e| ActivateError::Backend(e.to_string()))?;
        let mut acked = ctx.acked_features & OFFERED;
        if acked & !backend_features != 0 {
            return Err(ActivateError::Backend(format!(
                "{}: the driver accepted features {:#x} the backend lacks",
                self.socket,
                acked & !backend_features
            )));
        }
        if protocol {
            acked |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        self.frontend.set_features(acked).map_err(self.err("set features"))?;
        let table = memory_table(&ctx.mem)?;
        self.frontend.set_mem_table(&table).map_err(self.err("set memory table"))?;
        for (i, q) in ctx.queues.iter().enumerate() {
            let addr = VringConfigData {
                queue_max_size: sizes[i],
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: host_address(&ctx.mem, q.desc_table())?,
                used_ring_addr: host_address(&ctx.mem, q.used_ring())?,
                avail_ring_addr: host_address(&ctx.mem, q.avail_ring())?,
                log_addr: None,
            };
            self.frontend.set_vring_num(i, q.size()).map_err(self.err("set vring num"))?;
            self.frontend.set_vring_addr(i, &addr).map_err(self.err("set vring addr"))?;
            self.frontend.set_vring_base(i, q.next_avail()).map_err(self.err("set vring base"))?;
            self.frontend
                .set_vring_call(i, ctx.interrupt.irqfd())
                .map_err(self.err("set vring call"))?;
            self.frontend.set_vring_kick(i, &kicks[i]).map_err(self.err("set vring kick"))?;
            if protocol {
                self.frontend.set_vring_enable(i, true).map_err(self.err("enable vring"))?;
            }
        }
        Ok(())
    }

    /// Stops the backend's work on every queue (GET_VRING_BASE).
    fn stop(&mut self) {
        let protocol = self.backend.is_some_and(|b| b.1);
        for i in 0..NUM_QUEUES {
            if protocol {
                let _ = self.frontend.set_vring_enable(i, false);
            }
            let _ = self.frontend.get_vring_base(i);
        }
    }
}

/// The vhost-user description of guest memory: every region must be backed by a file.
fn memory_table(mem: &GuestMemoryMmap) -> Result<Vec<VhostUserMemoryRegionInfo>, ActivateError> {
    mem.iter()
        .map(|r| {
            VhostUserMemoryRegionInfo::from_guest_region(r).map_err(|_| {
                ActivateError::Backend(
                    "guest memory is not shared (the VM needs shared_memory)".into(),
                )
            })
        })
        .collect()
}

fn host_address(mem: &GuestMemoryMmap, gpa: u64) -> Result<u64, ActivateError> {
    mem.get_host_address(GuestAddress(gpa)).map(|p| p as u64).map_err(|_| {
        ActivateError::Backend(format!("queue address {gpa:#x} is not in guest memory"))
    })
}

impl Fs {
    /// Connects to the backend listening on `socket`; the guest will see `tag`.
    pub fn new(socket: &Path, tag: &str, queue_size: u16) -> Result<Self, FsError> {
        let mut fs = Self::empty(tag, queue_size)?;
        fs.conn = Some(Conn::connect(socket)?);
        Ok(fs)
    }

    /// A device with no backend yet (see [`Fs::plug`]); the guest will see `tag`.
    pub fn empty(tag: &str, queue_size: u16) -> Result<Self, FsError> {
        let mut config = [0u8; MAX_FS_TAG + 4];
        let n = tag.len().min(MAX_FS_TAG);
        config[..n].copy_from_slice(&tag.as_bytes()[..n]);
        // num_request_queues
        config[MAX_FS_TAG..].copy_from_slice(&1u32.to_le_bytes());
        let mut kicks = Vec::new();
        for _ in 0..NUM_QUEUES {
            kicks.push(EventFd::new(EFD_NONBLOCK)?);
        }
        Ok(Fs {
            conn: None,
            tag: tag.to_string(),
            config,
            queue_sizes: [queue_size; NUM_QUEUES],
            kicks,
            active: None,
            waiting: None,
        })
    }

    /// The tag the guest sees.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Whether a backend is connected.
    pub fn is_plugged(&self) -> bool {
        self.conn.is_some()
    }

    /// Connects the backend listening on `socket` to a device that has none; when the
    /// driver has started the device already, the backend takes its queues now.
    pub fn plug(&mut self, socket: &Path) -> Result<(), FsError> {
        if self.conn.is_some() {
            return Err(FsError::Plugged(self.tag.clone()));
        }
        let mut conn = Conn::connect(socket)?;
        if let Some(ctx) = &self.waiting {
            conn.start(ctx, &self.queue_sizes, &self.kicks)
                .map_err(|e| FsError::Start(e.to_string()))?;
            ctx.interrupt.set_sticky(super::INT_VRING);
            let interrupt = ctx.interrupt.clone();
            self.waiting = None;
            self.active = Some(Active { interrupt });
        }
        self.conn = Some(conn);
        Ok(())
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        OFFERED
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn queue_events(&self) -> &[EventFd] {
        &self.kicks
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != NUM_QUEUES {
            return Err(ActivateError::QueueCount { expected: NUM_QUEUES, got: ctx.queues.len() });
        }
        let Some(conn) = &mut self.conn else {
            // A spare device: the guest sends nothing before it mounts the tag, which it
            // does only once a backend is plugged in.
            self.waiting = Some(ctx);
            return Ok(());
        };
        conn.start(&ctx, &self.queue_sizes, &self.kicks)?;
        ctx.interrupt.set_sticky(super::INT_VRING);
        self.active = Some(Active { interrupt: ctx.interrupt });
        Ok(())
    }

    fn set_memory(&mut self, mem: &GuestMemoryMmap) {
        // A waiting device hands its backend the memory as it is mapped when plugged.
        if let Some(ctx) = &mut self.waiting {
            ctx.mem = mem.clone();
        }
    }

    fn is_activated(&self) -> bool {
        self.active.is_some() || self.waiting.is_some()
    }

    fn reset(&mut self) {
        self.waiting = None;
        if let Some(active) = self.active.take() {
            active.interrupt.set_sticky(0);
            if let Some(conn) = &mut self.conn {
                conn.stop();
            }
        }
    }

    fn queue_states(&self) -> Vec<crate::virtio::QueueState> {
        // Only a device without a backend can be saved: its queues are untouched.
        match &self.waiting {
            Some(ctx) => ctx.queues.iter().map(|q| q.state()).collect(),
            None => Vec::new(),
        }
    }

    fn save_extra(&self) -> Result<serde_json::Value, String> {
        match self.conn {
            // The VM restored from it plugs in a backend of its own.
            None => Ok(serde_json::Value::Null),
            Some(_) => Err("a shared directory (virtio-fs) cannot be snapshotted: virtiofsd \
                            runs its queues and holds its open files (a spare virtio-fs device, \
                            with no backend yet, can)"
                .into()),
        }
    }
}

/// The backend signals the guest itself (through the irqfd): nothing to watch here.
impl MutEventSubscriber for Fs {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {}

    fn init(&mut self, _ops: &mut EventOps) {}
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::virtio::Queue;

    /// virtiofsd as `cargo xtask deps` installs it (the tests need it, as ironpod does).
    const VIRTIOFSD: &str = "/var/cache/ironpod/virtiofsd/bin/virtiofsd";

    struct Backend {
        child: Child,
        _dir: tempfile::TempDir,
        socket: std::path::PathBuf,
    }

    impl Drop for Backend {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn virtiofsd() -> Backend {
        assert!(Path::new(VIRTIOFSD).is_file(), "{VIRTIOFSD} is missing: run `cargo xtask deps`");
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fs.sock");
        let child = Command::new(VIRTIOFSD)
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(dir.path())
            .args(["--sandbox", "none", "--log-level", "error"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Backend { child, _dir: dir, socket }
    }

    /// Connects, retrying while virtiofsd is still starting to listen.
    fn connect(b: &Backend) -> Fs {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Fs::new(&b.socket, "vol", 256) {
                Ok(fs) => return fs,
                Err(e) if Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn queues(size: u16) -> Vec<Queue> {
        (0..NUM_QUEUES as u64)
            .map(|i| {
                let mut q = Queue::new(size).unwrap();
                let base = 0x10000 * (i * 4 + 1);
                q.set_desc_table_address(Some(base as u32), Some(0));
                q.set_avail_ring_address(Some((base + 0x10000) as u32), Some(0));
                q.set_used_ring_address(Some((base + 0x20000) as u32), Some(0));
                q.set_ready(true);
                q
            })
            .collect()
    }

    fn ctx(mem: GuestMemoryMmap, acked: u64) -> ActivateContext {
        ActivateContext {
            mem,
            queues: queues(256),
            interrupt: Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
            acked_features: acked,
        }
    }

    #[test]
    fn negotiates_and_activates_with_virtiofsd() {
        let b = virtiofsd();
        let mut fs = connect(&b);
        assert_eq!(fs.device_type(), DEVICE_TYPE_FS);
        assert_eq!(fs.queue_max_sizes(), &[256, 256]);
        assert_ne!(fs.avail_features() & features::VIRTIO_F_VERSION_1, 0);
        let mut cfg = [0u8; MAX_FS_TAG + 4];
        fs.read_config(0, &mut cfg);
        assert_eq!(&cfg[..4], b"vol\0");
        assert_eq!(u32::from_le_bytes(cfg[MAX_FS_TAG..].try_into().unwrap()), 1);

        // Private memory cannot be handed to a backend.
        let private = crate::memory::guest_memory(16 << 20, false).unwrap();
        let err = fs.activate(ctx(private, fs.avail_features())).unwrap_err();
        assert!(err.to_string().contains("shared"), "{err}");
        assert!(!fs.is_activated());

        // Shared memory: the backend takes the table and the queues (each step acknowledged).
        let shared = crate::memory::guest_memory(16 << 20, true).unwrap();
        let c = ctx(shared, fs.avail_features());
        let irq = c.interrupt.clone();
        fs.activate(c).unwrap();
        assert!(fs.is_activated());
        assert_eq!(irq.status(), crate::virtio::INT_VRING, "the status always says used buffers");
        fs.reset();
        assert!(!fs.is_activated());
        assert_eq!(irq.status(), 0);
    }

    #[test]
    fn a_spare_device_waits_for_its_backend() {
        let mut fs = Fs::empty("vol", 256).unwrap();
        assert_eq!(fs.tag(), "vol");
        let shared = crate::memory::guest_memory(16 << 20, true).unwrap();
        let c = ctx(shared, fs.avail_features());
        let irq = c.interrupt.clone();
        // The driver starts it with no backend: the queues wait, and can be saved.
        fs.activate(c).unwrap();
        assert!(fs.is_activated());
        assert_eq!(fs.queue_states().len(), NUM_QUEUES);
        assert_eq!(fs.save_extra().unwrap(), serde_json::Value::Null);
        assert_eq!(irq.status(), 0);

        let dir = tempfile::tempdir().unwrap();
        let err = fs.plug(&dir.path().join("none.sock")).unwrap_err();
        assert!(err.to_string().contains("connect"), "{err}");
        assert!(fs.is_activated(), "a failed plug keeps the queues waiting");

        // The backend takes the queues when it is plugged in.
        let b = virtiofsd();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = fs.plug(&b.socket) {
            assert!(Instant::now() < deadline, "{e}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(fs.is_activated());
        assert_eq!(irq.status(), crate::virtio::INT_VRING);
        assert!(fs.save_extra().is_err(), "a device with a backend cannot be saved");
        let again = fs.plug(&b.socket).unwrap_err();
        assert!(again.to_string().contains("connected already"), "{again}");
        fs.reset();
        assert!(!fs.is_activated());
    }

    #[test]
    fn a_missing_backend_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Fs::new(&dir.path().join("none.sock"), "t", 128).err().unwrap();
        assert!(err.to_string().contains("connect"), "{err}");
    }
}
