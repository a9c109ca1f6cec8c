//! After a restore from a snapshot: what every clone of a VM must not share with the others.
//!
//! Each clone starts from the same memory, so from the same state of the kernel's random
//! generator: until it reseeds (once a minute, or on enough new entropy) every clone would
//! hand out the same "random" bytes — the same TLS keys, UUIDs, TCP sequence numbers. The
//! host sends fresh entropy, which goes into the input pool (`RNDADDENTROPY`, credited), and
//! the generator is reseeded from it at once (`RNDRESEEDCRNG`; the per-CPU generators follow
//! on their next use, as they see the new generation).

use std::os::fd::AsRawFd;

use ironpod_protocol::{AgentError, ErrorKind, RESEED_BYTES};

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// How far off the guest's time of day may be before it is set to the host's: a little more
/// than the request's way from the host (well under a millisecond on hardware), so that a
/// clock already right is not moved back by that much. (A clone's clock is restored with
/// the host's time, but one measured 0.47–0.50 s behind in the rig, which the former slack
/// of 0.5 s let stand.)
const CLOCK_SLACK_NS: u128 = 20_000_000;

/// Handles [`ironpod_protocol::RequestBody::Restored`].
pub fn restored(entropy: &[u8], unix_time_ns: u64) -> Result<(), AgentError> {
    if entropy.len() != RESEED_BYTES {
        return Err(AgentError::new(
            ErrorKind::BadRequest,
            format!("{} bytes of entropy, expected {RESEED_BYTES}", entropy.len()),
        ));
    }
    reseed(entropy).map_err(|e| AgentError::new(ErrorKind::Io, format!("reseed: {e}")))?;
    set_clock(unix_time_ns).map_err(|e| AgentError::new(ErrorKind::Io, format!("clock: {e}")))
}

/// Adds `entropy` to the input pool, credited in full, and reseeds the generator from it.
fn reseed(entropy: &[u8]) -> std::io::Result<()> {
    let dev = std::fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    info.extend_from_slice(entropy);
    // SAFETY: `info` is a rand_pool_info whose buf_size matches the bytes that follow; the
    // kernel reads only that many; the buffer lives across the call.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the guest's time of day `guest_ns` is too far from the host's `host_ns`.
fn clock_is_off(guest_ns: u128, host_ns: u128) -> bool {
    guest_ns.abs_diff(host_ns) > CLOCK_SLACK_NS
}

/// Sets the time of day to the host's if the guest's is off by more than
/// [`CLOCK_SLACK_NS`] (where the VMM could restore kvmclock with the host's time, it is not).
fn set_clock(unix_time_ns: u64) -> std::io::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    if !clock_is_off(now, u128::from(unix_time_ns)) {
        return Ok(());
    }
    let ts = libc::timespec {
        tv_sec: (unix_time_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_time_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec, which lives across the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_amounts_of_entropy_are_refused() {
        for n in [0, 1, RESEED_BYTES - 1, RESEED_BYTES + 1, 4096] {
            let e = restored(&vec![7u8; n], 0).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest, "{n}");
        }
    }

    #[test]
    fn a_clock_off_by_a_fraction_of_a_second_is_set() {
        let host = 1_796_428_623_000_000_000u128;
        assert!(!clock_is_off(host, host));
        assert!(!clock_is_off(host - 5_000_000, host), "5 ms: the request's way");
        assert!(clock_is_off(host - 470_000_000, host), "0.47 s behind, as measured");
        assert!(clock_is_off(host + 100_000_000, host), "ahead");
        assert!(clock_is_off(0, host));
    }

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
        let ioc =
            |dir: u64, nr: u64, size: u64| (dir << 30) | (size << 16) | ((b'R' as u64) << 8) | nr;
        assert_eq!(RNDADDENTROPY, ioc(1, 0x03, 8));
        assert_eq!(RNDRESEEDCRNG, ioc(0, 0x07, 0));
    }
}
