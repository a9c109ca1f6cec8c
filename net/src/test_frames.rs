//! Frames a hostile guest might send, for the anti-spoofing tests: each is tagged with its
//! name in its payload, so a receiver can tell which got through.

/// The tags of the frames that must pass: the guest's own IPv4 and its own ARP.
pub const ALLOWED: [&str; 2] = ["ok-ip4", "ok-arp"];
/// Every tag, in the order the frames are made.
pub const ALL: [&str; 7] = ["ok-ip4", "bad-ip", "badmac", "bad-arp", "ok-arp", "bad-v6", "b-vlan"];

fn checksum(h: &[u8]) -> u16 {
    let sum: u32 = h.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    let sum = (sum & 0xffff) + (sum >> 16);
    !((sum & 0xffff) + (sum >> 16)) as u16
}

/// Broadcast frames (each behind a 12-byte virtio-net header, as a VMM writes them to its
/// tap) from a guest with `mac` and address `me` on a subnet whose other host is `peer`:
/// its own IPv4 packet, one from another address, one from another MAC, an ARP reply
/// claiming `peer`'s address, its own ARP reply, an IPv6 packet and its own IPv4 packet
/// behind a VLAN tag.
pub fn frames(mac: [u8; 6], me: [u8; 4], peer: [u8; 4]) -> Vec<Vec<u8>> {
    let frame = |src: [u8; 6], kind: u16, body: &[u8], tag: &str| {
        let mut f = vec![0u8; 12];
        f.extend([0xff; 6]);
        f.extend(src);
        f.extend(kind.to_be_bytes());
        f.extend(body);
        f.extend(tag.as_bytes());
        f
    };
    // A header for a 6-byte payload (the tag), with a valid checksum: a bridge that hands
    // frames to netfilter drops bad headers.
    let ipv4 = |src: [u8; 4]| {
        let mut h = vec![0x45, 0, 0, 26, 0, 0, 0, 0, 64, 253, 0, 0];
        h.extend(src);
        h.extend([255; 4]);
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    };
    let arp = |spa: [u8; 4]| {
        let mut h = vec![0, 1, 8, 0, 6, 4, 0, 2];
        h.extend(mac);
        h.extend(spa);
        h.extend([0xff; 6]);
        h.extend(peer);
        h
    };
    let mut stranger = me;
    stranger[3] = stranger[3].wrapping_add(97);
    vec![
        frame(mac, 0x0800, &ipv4(me), ALL[0]),
        frame(mac, 0x0800, &ipv4(stranger), ALL[1]),
        frame([0x02, 0xde, 0xad, 0xbe, 0xef, 0x01], 0x0800, &ipv4(me), ALL[2]),
        frame(mac, 0x0806, &arp(peer), ALL[3]),
        frame(mac, 0x0806, &arp(me), ALL[4]),
        frame(mac, 0x86dd, &[0x60; 40], ALL[5]),
        // Its own IPv4 packet behind an 802.1Q tag (VLAN 5): the kernel takes tags off
        // before a device's ingress filters see the frame.
        frame(mac, 0x8100, &[[0x00, 0x05, 0x08, 0x00].as_slice(), &ipv4(me)].concat(), ALL[6]),
    ]
}

/// The tags found in a received frame.
pub fn tags(frame: &[u8]) -> Vec<&'static str> {
    let text = String::from_utf8_lossy(frame);
    ALL.iter().copied().filter(|t| text.contains(t)).collect()
}

/// Sends `frame` through `tap` as a VMM sends a guest's frame: in parts (here the
/// virtio-net header, then the rest), one `writev`.
pub fn send_in_parts(tap: &mut ironpod_vmm::virtio::net::tap::Tap, frame: &mut [u8]) {
    use ironpod_vmm::virtio::net::NetBackend;
    let (hdr, rest) = frame.split_at_mut(12);
    // SAFETY: both halves of `frame` outlive the slices, which live only for this call.
    let parts = unsafe {
        [
            vm_memory::VolatileSlice::new(hdr.as_mut_ptr(), hdr.len()),
            vm_memory::VolatileSlice::new(rest.as_mut_ptr(), rest.len()),
        ]
    };
    tap.send(&parts).unwrap();
}
