//! The kubelet's restart back-off: a container that ends is started again at once the
//! first time, then after 10 s, 20 s, 40 s … up to 5 minutes; one that ran for 10 minutes
//! starts the count again.

use std::time::{Duration, Instant};

/// Longest wait between restarts.
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// First wait.
pub const FIRST_DELAY: Duration = Duration::from_secs(10);
/// A run this long resets the back-off.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// One container's back-off.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// Restarts counted since the last reset.
    failures: u32,
}

impl Backoff {
    /// The wait before the next start, for a run that lasted `ran`.
    pub fn next_delay(&mut self, ran: Duration) -> Duration {
        if ran >= RESET_AFTER {
            self.failures = 0;
        }
        let n = self.failures;
        self.failures = self.failures.saturating_add(1);
        match n {
            0 => Duration::ZERO,
            n => FIRST_DELAY.saturating_mul(1u32 << (n - 1).min(10)).min(MAX_DELAY),
        }
    }
}

/// When a delayed start is due.
pub fn due(after: Duration) -> Instant {
    Instant::now() + after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_five_minutes_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(1);
        let got: Vec<u64> = (0..8).map(|_| b.next_delay(short).as_secs()).collect();
        assert_eq!(got, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.next_delay(RESET_AFTER), Duration::ZERO);
        assert_eq!(b.next_delay(short).as_secs(), 10);
    }
}
