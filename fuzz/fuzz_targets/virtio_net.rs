//! virtio-net from a hostile guest (transmit chains, receive buffers) and hostile frames
//! from the tap side, through a backend that hands out fuzzed frames.
#![no_main]

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};

use ironpod_vmm::virtio::net::{Net, NetBackend};
use ironpod_vmm::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;
use vm_memory::VolatileSlice;
use vmm_sys_util::eventfd::EventFd;

struct Frames {
    inbox: VecDeque<Vec<u8>>,
    fd: EventFd,
}

impl AsRawFd for Frames {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl NetBackend for Frames {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        Ok(self.inbox.pop_front().map(|f| {
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            n
        }))
    }
    fn recv_parts(&mut self, parts: &[VolatileSlice<'_>]) -> std::io::Result<Option<usize>> {
        // Write as a tap's readv would: every part must lie in guest memory and the parts
        // must hold any frame.
        let room: usize = parts.iter().map(|p| p.len()).sum();
        assert!(room >= ironpod_vmm::virtio::net::MAX_FRAME);
        Ok(self.inbox.pop_front().map(|f| {
            let mut off = 0;
            for p in parts {
                let n = p.len().min(f.len() - off);
                p.copy_from(&f[off..off + n]);
                off += n;
            }
            off
        }))
    }

    fn send(&mut self, parts: &[VolatileSlice<'_>]) -> std::io::Result<()> {
        // Read every byte, as a tap's writev would: each part must lie in guest memory.
        let mut frame = Vec::new();
        for p in parts {
            let mut v = vec![0u8; p.len()];
            p.copy_to(&mut v[..]);
            frame.extend(v);
        }
        assert!(frame.len() <= ironpod_vmm::virtio::net::MAX_FRAME);
        Ok(())
    }
    fn set_offloads(&mut self, _: bool, _: bool, _: bool) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    // [frames length][frames: length-prefixed pieces][features + guest memory]
    let Some((&n, data)) = data.split_first() else { return };
    let (frames, data) = data.split_at((n as usize * 8).min(data.len()));
    let inbox = ironpod_fuzz::pieces(frames, 8).into_iter().map(<[u8]>::to_vec).collect();
    let backend = Frames { inbox, fd: EventFd::new(0).expect("eventfd") };
    let mut net = Net::new(backend, [2, 0, 0, 0, 0, 1], 1500).expect("device");
    let (features, memory) = ironpod_fuzz::features_and_memory(data, net.avail_features());
    let (_queues, ctx) = ironpod_fuzz::guest(memory, 2, features);
    if net.activate(ctx).is_ok() {
        for _ in 0..3 {
            net.process_tx();
            net.process_rx();
        }
    }
});
