//! The virtio-vsock packet header (virtio spec 5.10.6) and moving packets between descriptor
//! chains and host memory. Every field comes from the guest and is validated by the caller.

use std::io::{Read, Write};

use vm_memory::bitmap::BitmapSlice;

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// Largest payload we accept from or send to the guest in one packet.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The host's context id.
pub const HOST_CID: u64 = 2;
/// Stream sockets, the only type supported.
pub const TYPE_STREAM: u16 = 1;

/// Operations.
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset / refused.
    pub const RST: u16 = 3;
    /// Half or full shutdown (see flags).
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Credit information, unsolicited or in reply.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Asks the peer for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// A decoded header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

impl Header {
    /// Parses the little-endian wire form.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap_or_default());
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The little-endian wire form.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A packet taken from or destined for the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Header (its `len` equals `data.len()` for packets we build).
    pub hdr: Header,
    /// Payload.
    pub data: Vec<u8>,
}

/// Why a guest packet was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    /// Fewer than 44 readable bytes.
    #[error("header shorter than {HDR_LEN} bytes")]
    ShortHeader,
    /// `len` is larger than the readable buffers or than [`MAX_PAYLOAD`].
    #[error("payload length {0} does not fit the buffers or the limit")]
    BadLength(u32),
    /// The descriptors could not be read.
    #[error("cannot read the descriptor chain")]
    Unreadable,
}

/// Reads a whole packet (header + payload) from a driver-readable chain. On failure the
/// header is returned too when it could be read, so the sender can be answered.
pub fn read_packet<B: BitmapSlice>(
    reader: &mut virtio_queue::Reader<'_, B>,
) -> Result<Packet, (PacketError, Option<Header>)> {
    if reader.available_bytes() < HDR_LEN {
        return Err((PacketError::ShortHeader, None));
    }
    let mut raw = [0u8; HDR_LEN];
    reader.read_exact(&mut raw).map_err(|_| (PacketError::Unreadable, None))?;
    let hdr = Header::from_bytes(&raw);
    let len = hdr.len as usize;
    if len > MAX_PAYLOAD || len > reader.available_bytes() {
        return Err((PacketError::BadLength(hdr.len), Some(hdr)));
    }
    let mut data = vec![0u8; len];
    reader.read_exact(&mut data).map_err(|_| (PacketError::Unreadable, Some(hdr)))?;
    Ok(Packet { hdr, data })
}

/// Writes a packet into a device-writable chain; returns the bytes written, or `None` when
/// the chain cannot hold the header and payload.
pub fn write_packet<B: BitmapSlice>(
    writer: &mut virtio_queue::Writer<'_, B>,
    pkt: &Packet,
) -> Option<u32> {
    let total = HDR_LEN + pkt.data.len();
    if writer.available_bytes() < total {
        return None;
    }
    let mut hdr = pkt.hdr;
    hdr.len = pkt.data.len() as u32;
    writer.write_all(&hdr.to_bytes()).ok()?;
    writer.write_all(&pkt.data).ok()?;
    Some(total as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1024,
            dst_port: 0xdead_beef,
            len: 10,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 3,
            buf_alloc: 1 << 18,
            fwd_cnt: 77,
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
    }
}
