//! The vsock packet header and the muxer's connection state machine: any sequence of
//! guest packets (every op, port, credit and length), with a host service on port 1024,
//! and the packets the muxer sends back in between.
#![no_main]

use std::os::unix::net::UnixListener;

use ironpod_vmm::virtio::vsock::muxer::Muxer;
use ironpod_vmm::virtio::vsock::packet::{Header, Packet, HDR_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let _service = UnixListener::bind(dir.path().join("v.sock_1024")).expect("listen");
    let mut m = Muxer::new(3, &dir.path().join("v.sock")).expect("muxer");
    let mut rest = data;
    while rest.len() >= HDR_LEN {
        let (raw, tail) = rest.split_at(HDR_LEN);
        let hdr = Header::from_bytes(raw.try_into().expect("header size"));
        let len = (hdr.len as usize).min(tail.len()).min(4096);
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        m.guest_packet(Packet { hdr, data: payload.to_vec() }, &mut ironpod_fuzz::NoLoop);
        for _ in 0..8 {
            match m.next_for_guest(64 << 10, &mut ironpod_fuzz::NoLoop) {
                Some(p) => assert_eq!(p.hdr.len as usize, p.data.len()),
                None => break,
            }
        }
    }
    m.reset_all(&mut ironpod_fuzz::NoLoop);
});
