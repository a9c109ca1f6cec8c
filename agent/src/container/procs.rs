//! Process listings for `top`, from /proc.

use std::fs;

use ironpod_protocol::ProcessInfo;

fn clock_ticks() -> u64 {
    // SAFETY: sysconf with a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn page_kib() -> u64 {
    // SAFETY: sysconf with a constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64 / 1024
    } else {
        4
    }
}

/// Parses /proc/PID/stat: (ppid, utime+stime ticks, start ticks, rss pages). The command
/// name may contain spaces and parentheses, so fields are counted from the last ')'.
pub fn parse_stat(stat: &str) -> Option<(i32, u64, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(0) ppid(1) ... utime(11) stime(12) ... starttime(19) vsize(20) rss(21)
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((f.get(1)?.parse().ok()?, num(11)? + num(12)?, num(19)?, num(21)?))
}

/// The process group of a /proc/PID/stat text (the field after the parent's pid).
fn group_in(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The process group of process `pid` (`None` once it is gone).
pub fn group_of(pid: i32) -> Option<i32> {
    group_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn uid_of(status: &str) -> u32 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Facts about each pid (pids that vanished meanwhile are skipped).
pub fn list(pids: &[i32]) -> Vec<ProcessInfo> {
    let hz = clock_ticks();
    let mut out = Vec::new();
    for &pid in pids {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((ppid, cpu, start, rss)) = parse_stat(&stat) else { continue };
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let mut cmd: String = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        if cmd.is_empty() {
            let comm = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(c, _)| c);
            cmd = format!("[{}]", comm.unwrap_or("?"));
        }
        out.push(ProcessInfo {
            pid,
            ppid,
            uid: uid_of(&status),
            cpu_ms: cpu * 1000 / hz,
            rss_kib: rss * page_kib(),
            start_ms: start * 1000 / hz,
            cmd,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// CPUs online in the guest.
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf with a constant.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as u32
}

/// Guest uptime in microseconds.
pub fn uptime_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_read_past_the_command_name() {
        assert_eq!(group_in("12 (a) b) S 1 77 77 0 -1"), Some(77));
        assert_eq!(group_in("garbage"), None);
        // SAFETY: getpgrp takes no arguments.
        let ours = unsafe { libc::getpgrp() };
        assert_eq!(group_of(std::process::id() as i32), Some(ours));
    }

    #[test]
    fn stat_with_odd_names() {
        let s = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 30 20 0 0 20 0 1 0 500 1000 25 18446744073709551615";
        assert_eq!(parse_stat(s), Some((7, 50, 500, 25)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn lists_this_process() {
        let me = std::process::id() as i32;
        let l = list(&[me, -5]);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].pid, me);
        assert!(!l[0].cmd.is_empty());
    }
}
