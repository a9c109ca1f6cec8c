//! virtio-vsock from a hostile guest: transmit chains (packet headers and payloads) and
//! receive buffers from the fuzzer, with a host service listening on port 1024, so
//! connections open, carry data, run out of credit and are reset.
#![no_main]

use std::os::unix::net::UnixListener;

use ironpod_vmm::virtio::vsock::Vsock;
use ironpod_vmm::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let uds = dir.path().join("v.sock");
    let _service = UnixListener::bind(dir.path().join("v.sock_1024")).expect("listen");
    let mut dev = Vsock::new(3, uds).expect("device");
    let (features, memory) = ironpod_fuzz::features_and_memory(data, dev.avail_features());
    let (_queues, ctx) = ironpod_fuzz::guest(memory, 3, features);
    if dev.activate(ctx).is_ok() {
        for _ in 0..3 {
            dev.process_tx(&mut ironpod_fuzz::NoLoop);
            dev.process_rx(&mut ironpod_fuzz::NoLoop);
        }
    }
});
