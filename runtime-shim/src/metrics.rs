//! A container's resource use as containerd's cgroup v2 metrics message
//! (`io.containerd.cgroups.v2.Metrics`, what `ctr task metrics` and the CRI's stats decode).
//!
//! The containerd-shim crate line that still speaks containerd 1.6's start protocol ships
//! only the cgroup v1 types, so the few v2 fields we fill are encoded here by field number
//! (containerd/cgroups `cgroup2/stats/metrics.proto`).

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use ironpod_protocol::ContainerStats;

/// containerd's type URL of the message.
pub const TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A uint64 field (omitted when zero, as proto3 does).
fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        varint(out, u64::from(field) << 3);
        varint(out, v);
    }
}

/// A nested message field.
fn message(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    varint(out, (u64::from(field) << 3) | 2);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// The encoded `Metrics` message of `s`.
pub fn encode(s: &ContainerStats) -> Vec<u8> {
    let mut pids = Vec::new();
    uint(&mut pids, 1, s.pids);
    uint(&mut pids, 2, s.pids_limit.unwrap_or(0));
    let mut cpu = Vec::new();
    uint(&mut cpu, 1, s.cpu_usage_usec);
    let mut memory = Vec::new();
    uint(&mut memory, 32, s.memory_bytes);
    uint(&mut memory, 33, s.memory_limit.unwrap_or(u64::MAX));
    let mut entry = Vec::new();
    uint(&mut entry, 3, s.io_read_bytes);
    uint(&mut entry, 4, s.io_write_bytes);
    let mut io = Vec::new();
    message(&mut io, 1, &entry);
    let mut m = Vec::new();
    message(&mut m, 1, &pids);
    message(&mut m, 2, &cpu);
    message(&mut m, 4, &memory);
    message(&mut m, 6, &io);
    m
}

/// `s` packed for a StatsResponse.
pub fn to_any(s: &ContainerStats) -> Any {
    let mut any = Any::new();
    any.type_url = TYPE_URL.to_string();
    any.value = encode(s);
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads (field, value) pairs of one message level: varints and length-delimited
    /// bodies (as their bytes).
    fn fields(mut b: &[u8]) -> Vec<(u32, Result<u64, Vec<u8>>)> {
        fn var(b: &mut &[u8]) -> u64 {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let x = b[0];
                *b = &b[1..];
                v |= u64::from(x & 0x7f) << shift;
                if x < 0x80 {
                    return v;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let tag = var(&mut b);
            let field = (tag >> 3) as u32;
            if tag & 7 == 2 {
                let n = var(&mut b) as usize;
                out.push((field, Err(b[..n].to_vec())));
                b = &b[n..];
            } else {
                out.push((field, Ok(var(&mut b))));
            }
        }
        out
    }

    fn sub(fs: &[(u32, Result<u64, Vec<u8>>)], f: u32) -> Vec<u8> {
        fs.iter().find(|x| x.0 == f).unwrap().1.clone().unwrap_err()
    }

    fn val(fs: &[(u32, Result<u64, Vec<u8>>)], f: u32) -> u64 {
        fs.iter().find(|x| x.0 == f).map(|x| x.1.clone().unwrap()).unwrap_or(0)
    }

    #[test]
    fn encodes_the_cgroup_v2_fields() {
        let s = ContainerStats {
            cpu_usage_usec: 1500,
            memory_bytes: 300_000,
            memory_limit: Some(64 << 20),
            pids: 3,
            pids_limit: None,
            io_read_bytes: 4096,
            io_write_bytes: 0,
            ..Default::default()
        };
        let any = to_any(&s);
        assert_eq!(any.type_url, TYPE_URL);
        let top = fields(&any.value);
        assert_eq!(val(&fields(&sub(&top, 1)), 1), 3);
        assert_eq!(val(&fields(&sub(&top, 2)), 1), 1500);
        let mem = fields(&sub(&top, 4));
        assert_eq!((val(&mem, 32), val(&mem, 33)), (300_000, 64 << 20));
        let io = fields(&sub(&top, 6));
        assert_eq!(val(&fields(&sub(&io, 1)), 3), 4096);
    }
}
