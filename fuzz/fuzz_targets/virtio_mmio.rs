//! The virtio-mmio register file driven by a hostile guest: any sequence of reads and
//! writes of any width at any offset (feature selection, queue set-up with addresses
//! anywhere, status transitions, activation, reset), with a real block device behind it.
#![no_main]

use std::sync::{Arc, Mutex};

use ironpod_vmm::bus::BusDevice;
use ironpod_vmm::virtio::blk::Block;
use ironpod_vmm::virtio::mmio::MmioTransport;
use ironpod_vmm::virtio::Interrupt;
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fuzz_target!(|data: &[u8]| {
    // [op count][ops: kind, offset (2), value (4)][guest memory]
    let Some((&n, data)) = data.split_first() else { return };
    let (ops, memory) = data.split_at((n as usize * 7).min(data.len()));
    let disk = tempfile::NamedTempFile::new().expect("temp file");
    disk.as_file().set_len(16 << 10).expect("size the disk");
    let dev = Arc::new(Mutex::new(Block::new(disk.path(), false).expect("open the disk")));
    let (_queues, ctx) = ironpod_fuzz::guest(memory, 0, 0);
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")));
    let mut t = MmioTransport::new(dev.clone(), ctx.mem, irq);
    for op in ops.chunks_exact(7) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]) & 0x3ff);
        let width = [1usize, 2, 4, 8][(op[0] >> 1) as usize & 3];
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&op[3..7]);
        if op[0] & 1 == 1 {
            t.write(offset, &buf[..width]);
        } else {
            t.read(offset, &mut buf[..width]);
        }
        if op[0] & 0x80 != 0 {
            // The guest kicked: the device works on whatever the queue holds.
            if let Ok(mut b) = dev.lock() {
                b.process_queue();
            }
        }
    }
});
