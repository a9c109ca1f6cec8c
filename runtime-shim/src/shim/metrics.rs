//! A container's resource use as containerd's cgroup v2 metrics (what `ctr task metrics`
//! and the CRI's stats read).

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageField;
use ironpod_protocol::ContainerStats;

/// The metrics message of `s`.
pub fn metrics(s: &ContainerStats) -> Metrics {
    Metrics {
        pids: MessageField::some(PidsStat {
            current: s.pids,
            limit: s.pids_limit.unwrap_or(0),
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat { usage_usec: s.cpu_usage_usec, ..Default::default() }),
        memory: MessageField::some(MemoryStat {
            usage: s.memory_bytes,
            usage_limit: s.memory_limit.unwrap_or(u64::MAX),
            ..Default::default()
        }),
        io: MessageField::some(IOStat {
            usage: vec![IOEntry {
                rbytes: s.io_read_bytes,
                wbytes: s.io_write_bytes,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `s` packed for a StatsResponse (type `io.containerd.cgroups.v2.Metrics`).
pub fn to_any(s: &ContainerStats) -> Result<Any, String> {
    containerd_shim::util::convert_to_any(Box::new(metrics(s))).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::Message;

    #[test]
    fn packs_as_cgroup_v2_metrics() {
        let s = ContainerStats {
            cpu_usage_usec: 1500,
            memory_bytes: 4096,
            memory_limit: Some(64 << 20),
            pids: 3,
            pids_limit: None,
            ..Default::default()
        };
        let any = to_any(&s).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.cpu.usage_usec, 1500);
        assert_eq!(m.memory.usage_limit, 64 << 20);
        assert_eq!(m.pids.current, 3);
    }
}
