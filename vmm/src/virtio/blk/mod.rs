//! virtio-blk over a raw disk image file.
//!
//! Requests are parsed from untrusted descriptor chains with `virtio_queue`'s checked
//! Reader/Writer (every guest address is validated against guest memory). A malformed request
//! is answered with `VIRTIO_BLK_S_IOERR` when it has a status byte to write to, and its
//! descriptors are always returned to the used ring so the guest never stalls. A read-only
//! disk advertises `VIRTIO_BLK_F_RO` and refuses writes itself as well.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use super::{
    device_type, read_config_bytes, ActivateContext, ActivateError, GuestMemoryMmap, Interrupt,
    VirtioDevice,
};

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;
/// Queue size of read-only disks (image layers).
const QUEUE_SIZE_RO: u16 = 64;
/// Largest data segment count per request we advertise.
const SEG_MAX: u32 = 128;
/// Largest single request we accept (keeps one bad request from tying up the loop).
const MAX_REQUEST_BYTES: usize = 16 << 20;

const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;
const VIRTIO_BLK_ID_BYTES: usize = 20;

/// Request completed.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Request type not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Errors creating a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// A medium was inserted into a slot that has one.
    #[error("the disk slot is in use")]
    Busy,
    /// The backing file could not be opened.
    #[error("cannot open disk {path}: {source}")]
    Open {
        /// Path of the image.
        path: String,
        /// Underlying error.
        source: io::Error,
    },
    /// The eventfd for the queue could not be created.
    #[error("cannot create eventfd: {0}")]
    EventFd(io::Error),
}

/// Why a single request failed (reported to the guest as a status byte).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum RequestError {
    #[error("descriptor chain is malformed")]
    Malformed,
    #[error("request is out of the disk's range")]
    OutOfRange,
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("I/O error: {0}")]
    Io(String),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        }
    }
}

/// Counters, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStats {
    /// Requests completed with OK.
    pub ok: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Chains so malformed no status could be written.
    pub dropped: u64,
}

/// The backing file of a disk (its "medium": a hot-plug slot may have none).
struct Medium {
    file: File,
    path: std::path::PathBuf,
    capacity_sectors: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES],
}

impl Medium {
    fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let open_err = |source| BlockError::Open { path: path.display().to_string(), source };
        let file = OpenOptions::new().read(true).write(!read_only).open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(open_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
        let name = crate::api::serial_of(path);
        id[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Medium {
            file,
            path: path.to_path_buf(),
            capacity_sectors: meta.len() / SECTOR_SIZE,
            id,
        })
    }
}

/// A virtio-blk device. Its medium (backing file) can be swapped while the guest runs:
/// a slot created [`Block::empty`] has capacity 0 until [`Block::insert`] gives it a file,
/// and the guest learns of every change through a configuration-change interrupt.
pub struct Block {
    medium: Option<Medium>,
    read_only: bool,
    config: [u8; 16],
    generation: u32,
    queue_evts: [EventFd; 1],
    active: Option<Active>,
    stats: BlockStats,
    /// Requests taken per wake-up (a queue's worth): then the event loop serves the rest
    /// of the VM, and the queue's own event brings the device back.
    budget: usize,
}

struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

impl Block {
    /// Opens `path` as a disk; `read_only` opens the file read-only too.
    pub fn new(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let mut b = Block::empty(read_only)?;
        b.medium = Some(Medium::open(path, read_only)?);
        b.update_config();
        Ok(b)
    }

    /// A disk slot with no medium (capacity 0, empty serial), for hot-plug.
    pub fn empty(read_only: bool) -> Result<Self, BlockError> {
        let mut config = [0u8; 16];
        config[8..12].copy_from_slice(&0u32.to_le_bytes()); // size_max (not offered)
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        Ok(Block {
            medium: None,
            read_only,
            config,
            generation: 0,
            queue_evts: [EventFd::new(EFD_NONBLOCK).map_err(BlockError::EventFd)?],
            active: None,
            stats: BlockStats::default(),
            budget: usize::from(QUEUE_SIZE),
        })
    }

    fn update_config(&mut self) {
        let sectors = self.medium.as_ref().map_or(0, |m| m.capacity_sectors);
        self.config[0..8].copy_from_slice(&sectors.to_le_bytes());
    }

    /// Tells the driver the capacity and serial changed.
    fn medium_changed(&mut self) {
        self.update_config();
        self.generation = self.generation.wrapping_add(1);
        if let Some(a) = &self.active {
            let _ = a.interrupt.signal_config_change();
        }
    }

    /// Whether the device is read-only (a feature fixed when the driver probes it).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The serial the guest reads (the backing file's name, at most 20 bytes), if a medium
    /// is inserted.
    pub fn serial(&self) -> Option<String> {
        let m = self.medium.as_ref()?;
        let end = m.id.iter().position(|&b| b == 0).unwrap_or(m.id.len());
        Some(String::from_utf8_lossy(&m.id[..end]).into_owned())
    }

    /// Puts `path` into an empty slot; the guest sees the new capacity and serial.
    pub fn insert(&mut self, path: &Path) -> Result<(), BlockError> {
        if self.medium.is_some() {
            return Err(BlockError::Busy);
        }
        self.medium = Some(Medium::open(path, self.read_only)?);
        self.medium_changed();
        Ok(())
    }

    /// Removes the medium: the guest sees capacity 0 and every request fails from now on.
    /// The guest must have stopped using the disk (unmounted it) first.
    pub fn eject(&mut self) {
        if self.medium.take().is_some() {
            self.medium_changed();
        }
    }

    /// Sets the requests taken per wake-up (tests).
    #[cfg(test)]
    pub(crate) fn set_budget(&mut self, n: usize) {
        self.budget = n.max(1);
    }

    /// Request counters.
    pub fn stats(&self) -> BlockStats {
        self.stats
    }

    /// Processes the available requests, at most a queue's worth: a guest that keeps
    /// adding requests cannot hold the event loop (when the budget runs out, the queue's
    /// event is raised again and the rest waits its turn). Returns whether the guest must be
    /// interrupted.
    pub fn process_queue(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else { return false };
        let mem = active.mem.clone();
        let mut used_any = false;
        let mut budget = self.budget;
        loop {
            if active.queue.disable_notification(&mem).is_err() {
                break;
            }
            let chains: Vec<_> = match active.queue.iter(&mem) {
                Ok(it) => it.take(budget).collect(),
                Err(_) => break,
            };
            budget -= chains.len();
            for chain in chains {
                let head = chain.head_index();
                let (len, outcome) = execute(self.medium.as_ref(), self.read_only, &mem, chain);
                match outcome {
                    Outcome::Ok => self.stats.ok += 1,
                    Outcome::Error => self.stats.errors += 1,
                    Outcome::Dropped => self.stats.dropped += 1,
                }
                // A head index the queue produced is always in range; a failure here means
                // the used ring itself is outside guest memory: nothing more can be done.
                let _ = active.queue.add_used(&mem, head, len);
                used_any = true;
            }
            if budget == 0 {
                // Come back after the other events (notifications stay off meanwhile).
                let _ = self.queue_evts[0].write(1);
                break;
            }
            match active.queue.enable_notification(&mem) {
                Ok(true) => continue, // more requests arrived meanwhile
                _ => break,
            }
        }
        used_any && active.queue.needs_notification(&mem).unwrap_or(true)
    }

    fn handle_queue_event(&mut self) {
        let _ = self.queue_evts[0].read();
        if self.process_queue() {
            if let Some(a) = &self.active {
                let _ = a.interrupt.signal_used_queue();
            }
        }
    }
}

enum Outcome {
    Ok,
    Error,
    Dropped,
}

/// Executes one request; returns (bytes written to the guest, outcome).
fn execute<M>(
    medium: Option<&Medium>,
    read_only: bool,
    mem: &GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<M>,
) -> (u32, Outcome)
where
    M: std::ops::Deref<Target = GuestMemoryMmap> + Clone,
{
    let Ok(mut reader) = chain.clone().reader(mem) else { return (0, Outcome::Dropped) };
    let Ok(mut writer) = chain.writer(mem) else { return (0, Outcome::Dropped) };
    let writable = writer.available_bytes();
    if writable == 0 {
        return (0, Outcome::Dropped);
    }
    // The status byte is the last writable byte of the chain.
    let Ok(mut status) = writer.split_at(writable - 1) else { return (0, Outcome::Dropped) };
    let result = request(medium, read_only, &mut reader, &mut writer);
    let (code, outcome) = match &result {
        Ok(()) => (VIRTIO_BLK_S_OK, Outcome::Ok),
        Err(e) => (e.status(), Outcome::Error),
    };
    if status.write_all(&[code]).is_err() {
        return (0, Outcome::Dropped);
    }
    (writer.bytes_written() as u32 + 1, outcome)
}

fn request<W, R>(
    medium: Option<&Medium>,
    read_only: bool,
    reader: &mut R,
    writer: &mut W,
) -> Result<(), RequestError>
where
    R: ReaderLen,
    W: WriterLen,
{
    let mut hdr = [0u8; 16];
    reader.read_exact(&mut hdr).map_err(|_| RequestError::Malformed)?;
    let kind = u32::from_le_bytes(hdr[0..4].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
    let capacity_sectors = medium.map_or(0, |m| m.capacity_sectors);
    // An empty slot: every transfer is out of range (capacity 0).
    let file = || medium.map(|m| &m.file).ok_or(RequestError::OutOfRange);
    let check_range = |len: usize| -> Result<u64, RequestError> {
        if !(len as u64).is_multiple_of(SECTOR_SIZE) || len > MAX_REQUEST_BYTES {
            return Err(RequestError::Malformed);
        }
        let end = sector.checked_add(len as u64 / SECTOR_SIZE).ok_or(RequestError::OutOfRange)?;
        if end > capacity_sectors {
            return Err(RequestError::OutOfRange);
        }
        Ok(sector * SECTOR_SIZE)
    };
    match kind {
        VIRTIO_BLK_T_IN => {
            let len = writer.remaining();
            let mut off = check_range(len)?;
            let mut buf = vec![0u8; len.min(1 << 20)];
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len());
                file()?
                    .read_exact_at(&mut buf[..n], off)
                    .map_err(|e| RequestError::Io(e.to_string()))?;
                writer.write_all(&buf[..n]).map_err(|_| RequestError::Malformed)?;
                off += n as u64;
                left -= n;
            }
            Ok(())
        }
        VIRTIO_BLK_T_OUT => {
            if read_only {
                return Err(RequestError::ReadOnly);
            }
            let len = reader.remaining();
            let mut off = check_range(len)?;
            let mut buf = vec![0u8; len.min(1 << 20)];
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len());
                reader.read_exact(&mut buf[..n]).map_err(|_| RequestError::Malformed)?;
                file()?
                    .write_all_at(&buf[..n], off)
                    .map_err(|e| RequestError::Io(e.to_string()))?;
                off += n as u64;
                left -= n;
            }
            Ok(())
        }
        VIRTIO_BLK_T_FLUSH => match medium {
            Some(m) if !read_only => m.file.sync_data(),
            _ => return Ok(()),
        }
        .map_err(|e| RequestError::Io(e.to_string())),
        VIRTIO_BLK_T_GET_ID => {
            if writer.remaining() < VIRTIO_BLK_ID_BYTES {
                return Err(RequestError::Malformed);
            }
            let id = medium.map_or([0u8; VIRTIO_BLK_ID_BYTES], |m| m.id);
            writer.write_all(&id).map_err(|_| RequestError::Malformed)
        }
        other => Err(RequestError::Unsupported(other)),
    }
}

/// Bytes left in a descriptor reader (abstracted for tests).
trait ReaderLen: Read {
    fn remaining(&self) -> usize;
}
/// Bytes left in a descriptor writer (abstracted for tests).
trait WriterLen: Write {
    fn remaining(&self) -> usize;
}
impl<B: vm_memory::bitmap::BitmapSlice> ReaderLen for virtio_queue::Reader<'_, B> {
    fn remaining(&self) -> usize {
        self.available_bytes()
    }
}
impl<B: vm_memory::bitmap::BitmapSlice> WriterLen for virtio_queue::Writer<'_, B> {
    fn remaining(&self) -> usize {
        self.available_bytes()
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        if self.read_only {
            &[QUEUE_SIZE_RO]
        } else {
            &[QUEUE_SIZE]
        }
    }

    fn avail_features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_BLK_F_FLUSH
            | VIRTIO_BLK_F_SEG_MAX;
        if self.read_only {
            f |= VIRTIO_BLK_F_RO;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The block config space is read-only for the driver (no writeback feature).
    }

    fn config_generation(&self) -> u32 {
        self.generation
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 1 {
            return Err(ActivateError::QueueCount { expected: 1, got: ctx.queues.len() });
        }
        let mut queue = ctx.queues.remove(0);
        queue.set_event_idx(ctx.acked_features & VIRTIO_RING_F_EVENT_IDX != 0);
        self.active = Some(Active { mem: ctx.mem, queue, interrupt: ctx.interrupt });
        // Requests may already be waiting.
        self.handle_queue_event();
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn queue_states(&self) -> Vec<crate::virtio::QueueState> {
        self.active.iter().map(|a| a.queue.state()).collect()
    }

    fn save_extra(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({
            "disk": self.medium.as_ref().map(|m| m.path.clone()),
            "generation": self.generation,
        }))
    }

    /// A disk that was in a spare slot goes back in (a boot disk comes from the
    /// configuration); the configuration generation is the guest's as it left it.
    fn restore_extra(&mut self, extra: &serde_json::Value) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Extra {
            disk: Option<std::path::PathBuf>,
            generation: u32,
        }
        let e: Extra = serde_json::from_value(extra.clone()).map_err(|e| e.to_string())?;
        match (&self.medium, e.disk) {
            (None, Some(path)) => {
                self.medium = Some(Medium::open(&path, self.read_only).map_err(|e| e.to_string())?);
                self.update_config();
            }
            (Some(_), None) => return Err("a boot disk's slot was empty in the snapshot".into()),
            _ => {}
        }
        self.generation = e.generation;
        Ok(())
    }
}

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.event_set().contains(EventSet::IN) {
            self.handle_queue_event();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.queue_evts[0], EventSet::IN)) {
            eprintln!("ironpod-vmm: cannot register virtio-blk queue event: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests;
