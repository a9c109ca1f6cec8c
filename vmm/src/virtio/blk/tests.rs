use std::io::Write as _;

use super::*;
use crate::virtio::test_queue::{TestQueue, NEXT, WRITE};

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

fn disk(content: &[u8], read_only: bool) -> (tempfile::NamedTempFile, Block) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content).unwrap();
    let b = Block::new(f.path(), read_only).unwrap();
    (f, b)
}

fn header(t: &TestQueue, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    t.write(HDR, &h);
}

fn activate(b: &mut Block, t: &TestQueue) -> Arc<Interrupt> {
    let (ctx, irq) = t.activate_ctx(1, VIRTIO_F_VERSION_1);
    b.activate(ctx).unwrap();
    irq
}

fn status(t: &TestQueue) -> u8 {
    t.read(STATUS, 1)[0]
}

#[test]
fn read_write_flush_get_id() {
    let mut content = vec![0u8; 4096];
    content[512..517].copy_from_slice(b"hello");
    let (f, mut b) = disk(&content, false);
    let mut t = TestQueue::new(16);
    let irq = activate(&mut b, &t);

    header(&t, VIRTIO_BLK_T_IN, 1);
    t.write(STATUS, &[0xff]);
    t.add_chain(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
    assert!(b.process_queue());
    assert_eq!(status(&t), VIRTIO_BLK_S_OK);
    assert_eq!(&t.read(DATA, 5), b"hello");
    assert_eq!(t.used(0).1, 513);

    header(&t, VIRTIO_BLK_T_OUT, 7);
    t.write(DATA, &[0xab; 512]);
    t.add_chain(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_OK);
    let on_disk = std::fs::read(f.path()).unwrap();
    assert_eq!(&on_disk[7 * 512..8 * 512], &[0xab; 512][..]);

    header(&t, VIRTIO_BLK_T_FLUSH, 0);
    t.add_chain(&[(HDR, 16, 0), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_OK);

    header(&t, VIRTIO_BLK_T_GET_ID, 0);
    t.add_chain(&[(HDR, 16, 0), (DATA, 20, WRITE), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_OK);
    let name = f.path().file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(&t.read(DATA, name.len().min(20)), &name.as_bytes()[..name.len().min(20)]);
    assert_eq!(t.used_idx(), 4);
    assert_eq!(b.stats(), BlockStats { ok: 4, errors: 0, dropped: 0 });
    assert!(irq.status() & crate::virtio::INT_VRING == 0, "process_queue itself doesn't signal");
}

#[test]
fn read_only_disk_refuses_writes() {
    let (f, mut b) = disk(&[1u8; 1024], true);
    assert_ne!(b.avail_features() & VIRTIO_BLK_F_RO, 0);
    let mut t = TestQueue::new(16);
    activate(&mut b, &t);
    header(&t, VIRTIO_BLK_T_OUT, 0);
    t.write(DATA, &[0u8; 512]);
    t.add_chain(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_IOERR);
    assert_eq!(std::fs::read(f.path()).unwrap(), vec![1u8; 1024]);
}

#[test]
fn malformed_chains_get_errors_and_device_stays_up() {
    let (_f, mut b) = disk(&[0u8; 4096], false);
    let mut t = TestQueue::new(64);
    activate(&mut b, &t);
    let mem_end = 16u64 << 20;

    // 1. Read past the end of the disk.
    header(&t, VIRTIO_BLK_T_IN, 8);
    t.write(STATUS, &[0xff]);
    t.add_chain(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_IOERR);

    // 2. Sector number that overflows.
    header(&t, VIRTIO_BLK_T_IN, u64::MAX);
    t.write(STATUS, &[0xff]);
    t.add_chain(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_IOERR);

    // 3. Data length not a multiple of the sector size.
    header(&t, VIRTIO_BLK_T_IN, 0);
    t.write(STATUS, &[0xff]);
    t.add_chain(&[(HDR, 16, 0), (DATA, 100, WRITE), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_IOERR);

    // 4. Header shorter than 16 bytes.
    t.write(STATUS, &[0xff]);
    t.add_chain(&[(HDR, 8, 0), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_IOERR);

    // 5. Unknown request type.
    header(&t, 0x7777, 0);
    t.write(STATUS, &[0xff]);
    t.add_chain(&[(HDR, 16, 0), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_UNSUPP);

    let before = b.stats();
    // 6. Buffer outside guest memory: whole chain rejected, descriptor still returned.
    let used = t.used_idx();
    t.add_chain(&[(HDR, 16, 0), (mem_end - 256, 512, WRITE), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(t.used_idx(), used + 1);
    assert_eq!(t.used(used).1, 0);

    // 7. Address that wraps around the address space.
    let used = t.used_idx();
    t.add_chain(&[(u64::MAX - 4, 16, 0), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(t.used_idx(), used + 1);

    // 8. No writable descriptor at all (no status byte).
    let used = t.used_idx();
    header(&t, VIRTIO_BLK_T_IN, 0);
    t.add_chain(&[(HDR, 16, 0)]);
    b.process_queue();
    assert_eq!((t.used_idx(), t.used(used).1), (used + 1, 0));

    // 9. Zero-length buffers.
    let used = t.used_idx();
    t.add_chain(&[(HDR, 0, 0), (DATA, 0, WRITE), (STATUS, 0, WRITE)]);
    b.process_queue();
    assert_eq!(t.used_idx(), used + 1);

    // 10. A descriptor loop: 0 -> 1 -> 0 ...
    let used = t.used_idx();
    t.add_raw(&[(HDR, 16, NEXT, 1), (DATA, 512, NEXT | WRITE, 0)]);
    b.process_queue();
    assert_eq!(t.used_idx(), used + 1, "a looping chain is returned, not spun on");

    // 11. `next` pointing outside the table.
    let used = t.used_idx();
    t.add_raw(&[(HDR, 16, NEXT, 60000)]);
    b.process_queue();
    assert_eq!(t.used_idx(), used + 1);

    let after = b.stats();
    assert!(after.dropped + after.errors > before.dropped + before.errors);

    // The device still serves a good request afterwards.
    let mut content_check = vec![0u8; 5];
    header(&t, VIRTIO_BLK_T_IN, 0);
    t.write(STATUS, &[0xff]);
    t.add_chain(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_OK);
    content_check.copy_from_slice(&t.read(DATA, 5));
    assert_eq!(content_check, vec![0u8; 5]);
}

#[test]
fn not_activated_ignores_queue() {
    let (_f, mut b) = disk(&[0u8; 512], false);
    assert!(!b.process_queue());
    assert!(!b.is_activated());
}

#[test]
fn open_errors() {
    assert!(Block::new(Path::new("/nonexistent/disk.img"), true).is_err());
    assert!(Block::new(Path::new("/tmp"), true).is_err());
}

#[test]
fn config_space_reports_capacity() {
    let (_f, b) = disk(&[0u8; 8192], false);
    let mut cap = [0u8; 8];
    b.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 16);
}

#[test]
fn empty_slot_takes_and_releases_a_medium() {
    let mut b = Block::empty(true).unwrap();
    let mut t = TestQueue::new(16);
    let irq = activate(&mut b, &t);
    let capacity = |b: &Block| {
        let mut cap = [0u8; 8];
        b.read_config(0, &mut cap);
        u64::from_le_bytes(cap)
    };
    assert_eq!((capacity(&b), b.serial()), (0, None));

    // No medium: reads fail, the serial reads as zeros.
    header(&t, VIRTIO_BLK_T_IN, 0);
    t.add_chain(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_IOERR);
    header(&t, VIRTIO_BLK_T_GET_ID, 0);
    t.write(DATA, &[0xff; 20]);
    t.add_chain(&[(HDR, 16, 0), (DATA, 20, WRITE), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(&t.read(DATA, 20), &[0u8; 20][..]);

    // Insert: capacity, serial and generation change, and the driver is told.
    let mut f = tempfile::Builder::new().suffix(".erofs").tempfile().unwrap();
    let mut content = vec![0u8; 4096];
    content[0..4].copy_from_slice(b"erof");
    f.write_all(&content).unwrap();
    let gen = b.config_generation();
    b.insert(f.path()).unwrap();
    assert_eq!(capacity(&b), 8);
    assert_ne!(b.config_generation(), gen);
    assert!(irq.status() & crate::virtio::INT_CONFIG != 0);
    let serial = crate::api::serial_of(f.path());
    assert_eq!(b.serial().as_deref(), Some(serial.as_str()));
    assert!(matches!(b.insert(f.path()), Err(BlockError::Busy)));
    header(&t, VIRTIO_BLK_T_IN, 0);
    t.add_chain(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_OK);
    assert_eq!(&t.read(DATA, 4), b"erof");
    // Spare slots are read-only.
    header(&t, VIRTIO_BLK_T_OUT, 0);
    t.add_chain(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, WRITE)]);
    b.process_queue();
    assert_eq!(status(&t), VIRTIO_BLK_S_IOERR);

    // Eject: back to capacity 0.
    irq.ack(crate::virtio::INT_CONFIG);
    b.eject();
    assert_eq!((capacity(&b), b.serial()), (0, None));
    assert!(irq.status() & crate::virtio::INT_CONFIG != 0);
}

#[test]
fn a_wake_up_takes_at_most_its_budget_and_comes_back_for_the_rest() {
    let (_f, mut b) = disk(&[0u8; 4096], false);
    b.set_budget(2);
    let mut t = TestQueue::new(16);
    activate(&mut b, &t);
    header(&t, VIRTIO_BLK_T_FLUSH, 0);
    for _ in 0..5 {
        t.add_chain(&[(HDR, 16, 0), (STATUS, 1, WRITE)]);
    }
    let _ = b.queue_evts[0].read();
    for want in [2, 4, 5] {
        b.process_queue();
        assert_eq!(t.used_idx(), want);
        let rearmed = b.queue_evts[0].read().is_ok();
        assert_eq!(rearmed, want < 5, "the queue's event is raised while work may remain");
    }
}
