//! virtio-blk requests from a hostile guest: descriptor tables, rings, request headers and
//! buffers all from the fuzzer, against a real disk file.
#![no_main]

use ironpod_vmm::virtio::blk::Block;
use ironpod_vmm::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let disk = tempfile::NamedTempFile::new().expect("temp file");
    disk.as_file().set_len(64 << 10).expect("size the disk");
    let mut b = Block::new(disk.path(), mode & 1 == 1).expect("open the disk");
    let (features, memory) = ironpod_fuzz::features_and_memory(data, b.avail_features());
    let (_queues, ctx) = ironpod_fuzz::guest(memory, 1, features);
    if b.activate(ctx).is_ok() {
        b.process_queue();
        b.process_queue();
        if mode & 2 == 2 {
            // A disk taken away and put back while requests are queued.
            b.eject();
            b.process_queue();
        }
    }
});
