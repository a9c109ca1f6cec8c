//! virtio-balloon from a hostile guest: inflate/deflate page lists, statistics and free page
//! reports pointing anywhere.
#![no_main]

use ironpod_vmm::virtio::balloon::Balloon;
use ironpod_vmm::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = Balloon::new().expect("device");
    let (features, memory) = ironpod_fuzz::features_and_memory(data, b.avail_features());
    let n = b.queue_max_sizes().len();
    let (_queues, ctx) = ironpod_fuzz::guest(memory, n, features);
    if b.activate(ctx).is_ok() {
        for i in 0..n {
            b.process_queue(i);
        }
    }
});
