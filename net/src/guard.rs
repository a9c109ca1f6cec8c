//! A pod's anti-spoofing guard, written to nf_tables over netlink from this process (no
//! `nft` run per pod): a `netdev` table in the pod's namespace whose ingress chain on the
//! VM's tap passes the guest's frames to the veth only when they carry its own MAC address
//! and its own IPv4 address (IPv4, and ARP for that address); its policy drops everything
//! else — another address, another MAC, IPv6, VLAN-tagged frames.
//!
//! The rules are the ones `nft` makes of
//! `ether saddr MAC ip saddr IP fwd to "eth0"` and
//! `ether saddr MAC arp saddr ether MAC arp saddr ip IP fwd to "eth0"`: the source MAC and
//! the EtherType are read together from the link-layer header, where the kernel puts a
//! VLAN tag back in front of the EtherType, so a tagged frame never matches.

use std::net::Ipv4Addr;

use netlink_packet_core::{
    Emitable, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, Nla, NLA_F_NESTED, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// The guard's table in a pod's namespace.
pub const GUARD_TABLE: &str = "ironpod_guard";
const CHAIN: &str = "guard";

// uapi/linux/netfilter/nfnetlink.h and nf_tables.h.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_NETDEV: u8 = 5;
const NF_NETDEV_INGRESS: u32 = 0;
const NF_DROP: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_IIFTYPE: u32 = 8;
const NFT_CMP_EQ: u32 = 0;
const NFT_PAYLOAD_LL_HEADER: u32 = 0;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const ARPHRD_ETHER: u16 = 1;

/// One attribute of an nf_tables message: a string, a big-endian u32, raw bytes or a nest.
#[derive(Debug, Clone)]
enum Attr {
    Str(u16, String),
    U32(u16, u32),
    Bytes(u16, Vec<u8>),
    Nest(u16, Vec<Attr>),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Str(_, s) => s.len() + 1,
            Attr::U32(..) => 4,
            Attr::Bytes(_, b) => b.len(),
            Attr::Nest(_, a) => a.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Str(k, _) | Attr::U32(k, _) | Attr::Bytes(k, _) => *k,
            Attr::Nest(k, _) => *k | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::Str(_, s) => {
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            Attr::U32(_, v) => buffer[..4].copy_from_slice(&v.to_be_bytes()),
            Attr::Bytes(_, b) => buffer[..b.len()].copy_from_slice(b),
            Attr::Nest(_, a) => a.as_slice().emit(buffer),
        }
    }
}

/// An nfnetlink message: its type within the nf_tables subsystem (or a batch marker), the
/// `nfgenmsg` header (family, version 0, resource id) and attributes.
#[derive(Debug, Clone)]
struct NftMessage {
    message_type: u16,
    family: u8,
    res_id: u16,
    attrs: Vec<Attr>,
}

impl NftMessage {
    fn nft(kind: u16, attrs: Vec<Attr>) -> Self {
        NftMessage {
            message_type: (NFNL_SUBSYS_NFTABLES << 8) | kind,
            family: NFPROTO_NETDEV,
            res_id: 0,
            attrs,
        }
    }

    fn batch(kind: u16) -> Self {
        NftMessage {
            message_type: kind,
            family: libc::AF_UNSPEC as u8,
            res_id: NFNL_SUBSYS_NFTABLES,
            attrs: Vec::new(),
        }
    }
}

impl NetlinkSerializable for NftMessage {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        4 + self.attrs.as_slice().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = 0; // NFNETLINK_V0
        buffer[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        self.attrs.as_slice().emit(&mut buffer[4..]);
    }
}

impl NetlinkDeserializable for NftMessage {
    type Error = std::io::Error;

    /// Only acknowledgements and errors are expected back.
    fn deserialize(header: &NetlinkHeader, _: &[u8]) -> Result<Self, Self::Error> {
        Err(std::io::Error::other(format!(
            "unexpected nf_tables reply of type {}",
            header.message_type
        )))
    }
}

/// `[ meta load iiftype => reg 1 ] [ cmp eq reg 1 ether ]`, then for each `(base, offset,
/// value)`: `[ payload load len(value) @ base + offset => reg 1 ] [ cmp eq reg 1 value ]`,
/// then `[ immediate reg 1 veth ] [ fwd sreg_dev 1 ]`.
fn forward_rule(matches: &[(u32, u32, Vec<u8>)], veth: u32) -> Vec<Attr> {
    let expr = |name: &str, data: Vec<Attr>| {
        Attr::Nest(1, vec![Attr::Str(1, name.into()), Attr::Nest(2, data)])
    };
    let cmp = |value: Vec<u8>| {
        expr(
            "cmp",
            vec![
                Attr::U32(1, NFT_REG_1),
                Attr::U32(2, NFT_CMP_EQ),
                Attr::Nest(3, vec![Attr::Bytes(1, value)]),
            ],
        )
    };
    let mut exprs = vec![
        expr("meta", vec![Attr::U32(1, NFT_REG_1), Attr::U32(2, NFT_META_IIFTYPE)]),
        cmp(ARPHRD_ETHER.to_ne_bytes().to_vec()),
    ];
    for (base, offset, value) in matches {
        exprs.push(expr(
            "payload",
            vec![
                Attr::U32(1, NFT_REG_1),
                Attr::U32(2, *base),
                Attr::U32(3, *offset),
                Attr::U32(4, value.len() as u32),
            ],
        ));
        exprs.push(cmp(value.clone()));
    }
    exprs.push(expr(
        "immediate",
        vec![
            Attr::U32(1, NFT_REG_1),
            Attr::Nest(2, vec![Attr::Bytes(1, veth.to_ne_bytes().to_vec())]),
        ],
    ));
    exprs.push(expr("fwd", vec![Attr::U32(1, NFT_REG_1)]));
    vec![Attr::Str(1, GUARD_TABLE.into()), Attr::Str(2, CHAIN.into()), Attr::Nest(4, exprs)]
}

/// The transaction that (re)makes the guard: the table made if missing and deleted, so
/// that a guard set up again replaces the old one atomically; the chain on `tap`'s
/// ingress, dropping by default; the two rules when there is an `address` (without one,
/// nothing passes: a card that could send as any address would be worse than one that
/// sends nothing).
fn guard_batch(tap: &str, veth: u32, mac: [u8; 6], address: Option<Ipv4Addr>) -> Vec<NftMessage> {
    let table = || vec![Attr::Str(1, GUARD_TABLE.into())];
    let mut batch = vec![
        NftMessage::batch(NFNL_MSG_BATCH_BEGIN),
        NftMessage::nft(NFT_MSG_NEWTABLE, table()),
        NftMessage::nft(NFT_MSG_DELTABLE, table()),
        NftMessage::nft(NFT_MSG_NEWTABLE, table()),
        NftMessage::nft(
            NFT_MSG_NEWCHAIN,
            vec![
                Attr::Str(1, GUARD_TABLE.into()),
                Attr::Str(3, CHAIN.into()),
                Attr::Nest(
                    4,
                    vec![
                        Attr::U32(1, NF_NETDEV_INGRESS),
                        Attr::U32(2, 0),
                        Attr::Str(3, tap.into()),
                    ],
                ),
                Attr::U32(5, NF_DROP),
                Attr::Str(7, "filter".into()),
            ],
        ),
    ];
    if let Some(ip) = address {
        let with_type = |ethertype: u16| [&mac[..], &ethertype.to_be_bytes()[..]].concat();
        batch.push(NftMessage::nft(
            NFT_MSG_NEWRULE,
            forward_rule(
                &[
                    (NFT_PAYLOAD_LL_HEADER, 6, with_type(0x0800)),
                    (NFT_PAYLOAD_NETWORK_HEADER, 12, ip.octets().to_vec()),
                ],
                veth,
            ),
        ));
        batch.push(NftMessage::nft(
            NFT_MSG_NEWRULE,
            forward_rule(
                &[
                    (NFT_PAYLOAD_LL_HEADER, 6, with_type(0x0806)),
                    (NFT_PAYLOAD_NETWORK_HEADER, 8, [&mac[..], &ip.octets()[..]].concat()),
                ],
                veth,
            ),
        ));
    }
    batch.push(NftMessage::batch(NFNL_MSG_BATCH_END));
    batch
}

/// Serializes `batch` into one buffer, each message with its sequence number (from 1);
/// every message but the batch markers asks for an acknowledgement.
fn serialize(batch: &[NftMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for (seq, m) in batch.iter().enumerate() {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq as u32 + 1;
        header.flags = NLM_F_REQUEST;
        let kind = m.message_type & 0xff;
        if m.message_type >> 8 == NFNL_SUBSYS_NFTABLES {
            header.flags |= NLM_F_ACK;
            if kind == NFT_MSG_NEWTABLE || kind == NFT_MSG_NEWCHAIN {
                header.flags |= NLM_F_CREATE;
            } else if kind == NFT_MSG_NEWRULE {
                header.flags |= NLM_F_CREATE | NLM_F_APPEND;
            }
        }
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(m.clone()));
        msg.finalize();
        let start = out.len();
        out.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut out[start..]);
    }
    out
}

/// In the calling thread's network namespace, makes `tap`'s guard (see the module doc):
/// the guest's frames pass to `veth` (an interface index) only as `mac` and `address`.
pub fn apply(tap: &str, veth: u32, mac: [u8; 6], address: Option<Ipv4Addr>) -> Result<(), String> {
    let batch = guard_batch(tap, veth, mac, address);
    let acks = batch.iter().filter(|m| m.message_type >> 8 == NFNL_SUBSYS_NFTABLES).count();
    let mut socket =
        Socket::new(NETLINK_NETFILTER).map_err(|e| format!("nf_tables netlink socket: {e}"))?;
    socket.bind_auto().map_err(|e| format!("bind the nf_tables socket: {e}"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| format!("connect the nf_tables socket: {e}"))?;
    socket.send(&serialize(&batch), 0).map_err(|e| format!("send the guard to nf_tables: {e}"))?;
    let mut acked = 0;
    while acked < acks {
        let (data, _) =
            socket.recv_from_full().map_err(|e| format!("read nf_tables' answer: {e}"))?;
        let mut at = 0;
        while at < data.len() {
            let msg = NetlinkMessage::<NftMessage>::deserialize(&data[at..])
                .map_err(|e| format!("nf_tables' answer: {e}"))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(format!("filter {tap}'s frames: {}", e.to_io()));
                }
                NetlinkPayload::Error(_) => acked += 1,
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += (len + 3) & !3;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(batch: &[NftMessage]) -> Vec<u8> {
        serialize(batch)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn the_guard_passes_only_the_guests_own_addresses() {
        let mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        let batch = guard_batch("tap0", 7, mac, Some([10, 88, 0, 2].into()));
        let kinds: Vec<u16> = batch.iter().map(|m| m.message_type).collect();
        let t = |k: u16| (NFNL_SUBSYS_NFTABLES << 8) | k;
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                t(NFT_MSG_NEWTABLE),
                t(NFT_MSG_DELTABLE),
                t(NFT_MSG_NEWTABLE),
                t(NFT_MSG_NEWCHAIN),
                t(NFT_MSG_NEWRULE),
                t(NFT_MSG_NEWRULE),
                NFNL_MSG_BATCH_END
            ]
        );
        let b = bytes(&batch);
        // Source MAC and EtherType in one comparison (a VLAN tag sits between them).
        assert!(contains(&b, &[0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x08, 0x00]));
        assert!(contains(&b, &[0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x08, 0x06]));
        // ARP: sender hardware and protocol addresses together.
        assert!(contains(&b, &[0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 10, 88, 0, 2]));
        assert!(contains(&b, b"tap0\0") && contains(&b, b"fwd\0"));
        // Without an address: the chain (policy drop) and no rule.
        let none = guard_batch("tap0", 7, mac, None);
        assert!(none.iter().all(|m| m.message_type != t(NFT_MSG_NEWRULE)));
        assert!(!contains(&bytes(&none), b"fwd\0"));
    }

    #[test]
    fn messages_are_aligned_and_sized() {
        let batch = guard_batch("tap0", 7, [2, 0, 0, 0, 0, 1], Some([10, 0, 0, 2].into()));
        let b = serialize(&batch);
        let mut at = 0;
        let mut n = 0;
        while at < b.len() {
            let len = u32::from_ne_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            assert!(len >= 20 && len.is_multiple_of(4), "message {n}: length {len}");
            at += len;
            n += 1;
        }
        assert_eq!((at, n), (b.len(), batch.len()));
    }
}
