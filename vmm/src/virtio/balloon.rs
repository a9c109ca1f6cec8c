//! virtio-balloon, for free page reporting: the guest tells the VMM which of its pages are
//! free (in 2 MiB or larger blocks), and the VMM gives their host memory back with
//! `madvise(MADV_DONTNEED)`. An idle pod then holds on the host only what its guest really
//! uses, not everything it touched once (the initramfs copy, boot-time allocations).
//!
//! The inflate and deflate queues exist because the driver always sets them up; the VMM never
//! asks for inflation, and inflated pages a driver sends anyway are released as well.

use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::features::VIRTIO_F_VERSION_1;
use super::{
    read_config_bytes, ActivateContext, ActivateError, GuestMemoryMmap, Interrupt, Queue,
    VirtioDevice,
};

/// Virtio device type of the balloon.
pub const BALLOON: u32 = 5;
/// Feature: free page reporting (a third queue).
pub const VIRTIO_BALLOON_F_PAGE_REPORTING: u64 = 1 << 5;
const QUEUE_SIZE: u16 = 64;
const PAGE: u64 = 4096;
const INFLATE: usize = 0;
const DEFLATE: usize = 1;
const REPORTING: usize = 2;

/// Counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BalloonStats {
    /// Bytes handed back to the host.
    pub released_bytes: u64,
    /// Ranges refused (unaligned, outside guest memory, empty).
    pub rejected: u64,
}

struct Active {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
}

/// The balloon device.
pub struct Balloon {
    config: [u8; 16],
    queue_evts: [EventFd; 3],
    active: Option<Active>,
    stats: BalloonStats,
    /// Chains taken per wake-up and queue (a queue's worth): then the event loop serves the
    /// rest of the VM, and the queue's own event brings the device back.
    budget: usize,
}

impl Balloon {
    /// A balloon that never asks for pages and takes free page reports.
    pub fn new() -> std::io::Result<Self> {
        Ok(Balloon {
            config: [0; 16],
            queue_evts: [
                EventFd::new(EFD_NONBLOCK)?,
                EventFd::new(EFD_NONBLOCK)?,
                EventFd::new(EFD_NONBLOCK)?,
            ],
            active: None,
            stats: BalloonStats::default(),
            budget: usize::from(QUEUE_SIZE),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> BalloonStats {
        self.stats
    }

    /// Gives the host memory behind a guest range back (it reads as zeros afterwards).
    fn release(mem: &GuestMemoryMmap, addr: u64, len: u64, stats: &mut BalloonStats) {
        if len == 0 || !addr.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            stats.rejected += 1;
            return;
        }
        let Ok(len_usize) = usize::try_from(len) else {
            stats.rejected += 1;
            return;
        };
        // One region only: a range that crosses a region boundary (or leaves memory) is refused.
        let Ok(slice) = mem.get_slice(GuestAddress(addr), len_usize) else {
            stats.rejected += 1;
            return;
        };
        let ptr = slice.ptr_guard_mut().as_ptr();
        // Shared memory (a memory file, for vhost-user backends) keeps its pages in the file:
        // only punching them out of it frees them.
        // (A snapshot's memory file mapped private is not: MADV_DONTNEED drops the guest's
        // copies of those pages.)
        let shared =
            mem.find_region(GuestAddress(addr)).is_some_and(|r| r.flags() & libc::MAP_SHARED != 0);
        let advice = if shared { libc::MADV_REMOVE } else { libc::MADV_DONTNEED };
        // SAFETY: ptr..ptr+len lies inside one guest memory mapping owned by this process
        // (checked by get_slice), page aligned because guest regions are; dropping the pages
        // of guest RAM is what the guest asked for, and it is memory-safe for us: the mapping
        // stays valid and reads back as zeros.
        let rc = unsafe { libc::madvise(ptr as *mut libc::c_void, len_usize, advice) };
        if rc == 0 {
            stats.released_bytes += len;
        } else {
            stats.rejected += 1;
        }
    }

    /// Processes the guest's buffers on queue `index` (inflate, deflate, stats, free page
    /// reporting); returns whether the guest must be interrupted.
    pub fn process_queue(&mut self, index: usize) -> bool {
        let Some(active) = self.active.as_mut() else { return false };
        let mem = active.mem.clone();
        let Some(queue) = active.queues.get_mut(index) else { return false };
        let mut used_any = false;
        for taken in 0.. {
            if taken == self.budget {
                // A queue's worth: the rest after the other events.
                let _ = self.queue_evts[index].write(1);
                break;
            }
            let Some(chain) = queue.pop_descriptor_chain(&mem) else { break };
            let head = chain.head_index();
            for d in chain.clone() {
                match index {
                    REPORTING => Self::release(&mem, d.addr().0, d.len() as u64, &mut self.stats),
                    INFLATE => {
                        // An array of 32-bit page frame numbers.
                        let n = d.len() as u64 / 4;
                        for i in 0..n.min(1 << 16) {
                            match mem.read_obj::<u32>(GuestAddress(d.addr().0.wrapping_add(4 * i)))
                            {
                                Ok(pfn) => {
                                    Self::release(&mem, pfn as u64 * PAGE, PAGE, &mut self.stats)
                                }
                                Err(_) => {
                                    self.stats.rejected += 1;
                                    break;
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            let _ = queue.add_used(&mem, head, 0);
            used_any = true;
        }
        used_any
    }

    fn handle(&mut self, index: usize) {
        let _ = self.queue_evts[index].read();
        if self.process_queue(index) {
            if let Some(a) = &self.active {
                let _ = a.interrupt.signal_used_queue();
            }
        }
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_PAGE_REPORTING
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (offset 4, 4 bytes) is the driver's to write.
        if offset == 4 && data.len() == 4 {
            self.config[4..8].copy_from_slice(data);
        }
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 3 {
            return Err(ActivateError::QueueCount { expected: 3, got: ctx.queues.len() });
        }
        self.active = Some(Active { mem: ctx.mem, queues: ctx.queues, interrupt: ctx.interrupt });
        for q in [INFLATE, DEFLATE, REPORTING] {
            self.handle(q);
        }
        Ok(())
    }

    fn set_memory(&mut self, mem: &GuestMemoryMmap) {
        // Freed pages of a memory file mapped shared leave the file (`release`).
        if let Some(a) = &mut self.active {
            a.mem = mem.clone();
        }
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn queue_states(&self) -> Vec<crate::virtio::QueueState> {
        self.active.iter().flat_map(|a| a.queues.iter().map(|q| q.state())).collect()
    }
}

impl MutEventSubscriber for Balloon {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        let fd = events.fd();
        for i in 0..3 {
            if std::os::fd::AsRawFd::as_raw_fd(&self.queue_evts[i]) == fd {
                self.handle(i);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for e in &self.queue_evts {
            if let Err(err) = ops.add(Events::new(e, EventSet::IN)) {
                eprintln!("ironpod-vmm: cannot register virtio-balloon queue event: {err:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_queue::{TestQueue, WRITE};

    fn resident(mem: &GuestMemoryMmap, addr: u64, len: usize) -> usize {
        let slice = mem.get_slice(GuestAddress(addr), len).unwrap();
        let ptr = slice.ptr_guard_mut().as_ptr();
        let pages = len / PAGE as usize;
        let mut v = vec![0u8; pages];
        // SAFETY: ptr..ptr+len is mapped guest memory; v has one byte per page.
        assert_eq!(unsafe { libc::mincore(ptr as *mut libc::c_void, len, v.as_mut_ptr()) }, 0);
        v.iter().filter(|b| **b & 1 == 1).count()
    }

    /// An active balloon with free page reporting, its guest memory queue, its reporting
    /// queue and its interrupt.
    fn reporting_balloon() -> (Balloon, TestQueue, TestQueue, Arc<Interrupt>) {
        let tq = TestQueue::new(QUEUE_SIZE);
        let rep = tq.sibling(0x8000, QUEUE_SIZE);
        let mut dev = Balloon::new().unwrap();
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let queues = vec![
            tq.sibling(0, QUEUE_SIZE).queue(),
            tq.sibling(0x4000, QUEUE_SIZE).queue(),
            rep.queue(),
        ];
        dev.activate(ActivateContext {
            mem: tq.mem.clone(),
            queues,
            interrupt: irq.clone(),
            acked_features: VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_PAGE_REPORTING,
        })
        .unwrap();
        (dev, tq, rep, irq)
    }

    #[test]
    fn reported_pages_go_back_to_the_host_and_bad_ranges_are_refused() {
        let (mut dev, tq, mut rep, irq) = reporting_balloon();
        // The guest touched 2 MiB at 4 MiB, then freed and reported it.
        tq.write(4 << 20, &vec![0xaa; 2 << 20]);
        assert_eq!(resident(&tq.mem, 4 << 20, 2 << 20), 512);
        rep.add_chain(&[(4 << 20, 2 << 20, WRITE)]);
        // Hostile: unaligned, empty, beyond memory, wrapping.
        rep.add_chain(&[(4097, 4096, WRITE)]);
        rep.add_chain(&[(8 << 20, 0, WRITE)]);
        rep.add_chain(&[(15 << 20, 4 << 20, WRITE)]);
        rep.add_chain(&[(u64::MAX - 4095, 8192, WRITE)]);
        dev.handle(REPORTING);
        assert_eq!(rep.used_idx(), 5, "every chain is returned");
        assert_eq!(resident(&tq.mem, 4 << 20, 2 << 20), 0, "the host memory is released");
        assert_eq!(tq.read(4 << 20, 4), vec![0; 4], "released pages read as zeros");
        assert_eq!(dev.stats(), BalloonStats { released_bytes: 2 << 20, rejected: 4 });
        assert!(irq.status() & crate::virtio::INT_VRING != 0);
    }

    #[test]
    fn a_wake_up_takes_at_most_its_budget_and_comes_back_for_the_rest() {
        let (mut dev, _tq, mut rep, _irq) = reporting_balloon();
        dev.budget = 2;
        for i in 0..5u64 {
            rep.add_chain(&[((4 << 20) + i * 4096, 4096, WRITE)]);
        }
        let _ = dev.queue_evts[REPORTING].read();
        for want in [2, 4, 5] {
            dev.handle(REPORTING);
            assert_eq!(rep.used_idx(), want);
            let rearmed = dev.queue_evts[REPORTING].read().is_ok();
            assert_eq!(rearmed, want < 5, "the queue's event is raised while work may remain");
        }
    }

    #[test]
    fn reported_pages_of_shared_memory_leave_the_memory_file() {
        use std::os::unix::fs::MetadataExt;
        use vm_memory::{Bytes, GuestMemoryRegion};
        let mem = crate::memory::guest_memory(16 << 20, true).unwrap();
        let file_blocks = || {
            let region = mem.find_region(GuestAddress(0)).unwrap();
            region.file_offset().unwrap().file().metadata().unwrap().blocks()
        };
        mem.write_slice(&vec![0xaa; 2 << 20], GuestAddress(4 << 20)).unwrap();
        let before = file_blocks();
        assert!(before >= (2 << 20) / 512, "{before}");
        let mut stats = BalloonStats::default();
        Balloon::release(&mem, 4 << 20, 2 << 20, &mut stats);
        assert_eq!(stats.released_bytes, 2 << 20);
        // MADV_DONTNEED would only unmap them: the file would keep its pages.
        assert_eq!(file_blocks(), before - (2 << 20) / 512);
        let mut back = [1u8; 4];
        mem.read_slice(&mut back, GuestAddress(4 << 20)).unwrap();
        assert_eq!(back, [0; 4]);
    }

    #[test]
    fn reported_pages_of_a_restored_vm_drop_its_copies() {
        use vm_memory::Bytes;
        let dir = tempfile::tempdir().unwrap();
        let mem = crate::memory::guest_memory(8 << 20, false).unwrap();
        mem.write_slice(&vec![0x11; 2 << 20], GuestAddress(2 << 20)).unwrap();
        let path = dir.path().join("mem");
        let info = crate::snapshot::memory_file::save(&mem, &path).unwrap();
        let restored = crate::snapshot::memory_file::restore(&path, &info, false).unwrap();
        // The guest writes a page of the snapshot's (a private copy), then reports it free.
        restored.write_slice(&[0x22; 4096], GuestAddress(2 << 20)).unwrap();
        let mut stats = BalloonStats::default();
        Balloon::release(&restored, 2 << 20, 4096, &mut stats);
        assert_eq!(stats, BalloonStats { released_bytes: 4096, rejected: 0 });
        // The copy is gone: the page is the memory file's again, which is unchanged.
        let mut back = [0u8; 4];
        restored.read_slice(&mut back, GuestAddress(2 << 20)).unwrap();
        assert_eq!(back, [0x11; 4]);
    }

    #[test]
    fn config_and_queue_count() {
        let mut dev = Balloon::new().unwrap();
        dev.write_config(4, &7u32.to_le_bytes());
        dev.write_config(0, &9u32.to_le_bytes());
        let mut d = [0u8; 8];
        dev.read_config(0, &mut d);
        assert_eq!(d, [0, 0, 0, 0, 7, 0, 0, 0], "num_pages stays 0: we never ask for pages");
        let tq = TestQueue::new(QUEUE_SIZE);
        let (ctx, _) = tq.activate_ctx(2, 0);
        assert!(dev.activate(ctx).is_err());
    }
}
