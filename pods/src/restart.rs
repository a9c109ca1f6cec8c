//! Restart policies (`--restart`, `HostConfig.RestartPolicy`): when a container that
//! ended is started again, and how long to wait first (Docker's back-off).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A container's restart policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never restarted (the default).
    #[default]
    No,
    /// Restarted when it exits with a non-zero code, at most `max` times (0: no limit).
    OnFailure {
        /// The most restarts (0: no limit).
        max: u32,
    },
    /// Always restarted; also when the service starts, even if a user had stopped it.
    Always,
    /// Always restarted, except once a user stopped it (also across service starts).
    UnlessStopped,
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, max) = match s.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (s, None),
        };
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "on-failure" => {
                let max = match max {
                    None => 0,
                    Some(m) => m
                        .parse::<u32>()
                        .map_err(|_| format!("maximum retry count {m:?} is not a number"))?,
                };
                return Ok(RestartPolicy::OnFailure { max });
            }
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            other => {
                return Err(format!(
                    "invalid restart policy {other:?}: no, on-failure[:N], always or unless-stopped"
                ))
            }
        };
        if max.is_some() {
            return Err(format!("restart policy {name:?} takes no maximum retry count"));
        }
        Ok(policy)
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max } => write!(f, "on-failure:{max}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl RestartPolicy {
    /// Docker's name (`no`, `on-failure`, `always`, `unless-stopped`).
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// The most restarts `on-failure` allows (0: no limit, and for other policies).
    pub fn max_retries(&self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max } => *max,
            _ => 0,
        }
    }

    /// Whether a container that just exited with `exit_code` is started again, having been
    /// restarted `count` times. A container a user stopped is not.
    pub fn restarts_after_exit(&self, exit_code: i32, count: u32, manually_stopped: bool) -> bool {
        if manually_stopped {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max } => exit_code != 0 && (*max == 0 || count < *max),
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }

    /// Whether a container found exited when the service starts is started again: `always`
    /// even after a user stopped it, as Docker does when its daemon starts.
    pub fn restarts_at_service_start(
        &self,
        exit_code: i32,
        count: u32,
        manually_stopped: bool,
    ) -> bool {
        match self {
            RestartPolicy::Always => true,
            other => other.restarts_after_exit(exit_code, count, manually_stopped),
        }
    }
}

/// Docker's restart back-off: 100 ms before the first restart, doubling each time the
/// container ran for less than 10 seconds, at most a minute; back to 100 ms after a run of
/// 10 seconds or more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    last: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(60);
    const STABLE: Duration = Duration::from_secs(10);

    /// The wait before the next restart of a container that ran for `ran`.
    pub fn next(&mut self, ran: Duration) -> Duration {
        let d = match self.last {
            Some(last) if ran < Self::STABLE => (last * 2).min(Self::MAX),
            _ => Self::FIRST,
        };
        self.last = Some(d);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print_as_docker_names_them() {
        for s in ["no", "on-failure", "on-failure:3", "always", "unless-stopped"] {
            assert_eq!(s.parse::<RestartPolicy>().unwrap().to_string(), s);
        }
        assert_eq!("".parse::<RestartPolicy>().unwrap(), RestartPolicy::No);
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        assert!("always:3".parse::<RestartPolicy>().is_err());
        let json = serde_json::to_string(&RestartPolicy::OnFailure { max: 2 }).unwrap();
        assert_eq!(json, "\"on-failure:2\"");
        assert!(serde_json::from_str::<RestartPolicy>("\"never\"").is_err());
    }

    #[test]
    fn decisions_follow_docker() {
        let f2 = RestartPolicy::OnFailure { max: 2 };
        assert!(f2.restarts_after_exit(1, 0, false) && f2.restarts_after_exit(1, 1, false));
        assert!(!f2.restarts_after_exit(1, 2, false), "the limit");
        assert!(!f2.restarts_after_exit(0, 0, false), "a success");
        assert!(RestartPolicy::OnFailure { max: 0 }.restarts_after_exit(1, 1000, false));
        for p in [RestartPolicy::Always, RestartPolicy::UnlessStopped] {
            assert!(p.restarts_after_exit(0, 99, false));
            assert!(!p.restarts_after_exit(0, 0, true), "stopped by a user");
        }
        assert!(!RestartPolicy::No.restarts_after_exit(1, 0, false));
        assert!(RestartPolicy::Always.restarts_at_service_start(0, 0, true));
        assert!(!RestartPolicy::UnlessStopped.restarts_at_service_start(0, 0, true));
        assert!(RestartPolicy::UnlessStopped.restarts_at_service_start(0, 0, false));
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_after_a_stable_run() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(1);
        let waits: Vec<u64> = (0..12).map(|_| b.next(short).as_millis() as u64).collect();
        assert_eq!(&waits[..4], &[100, 200, 400, 800]);
        assert_eq!(*waits.last().unwrap(), 60_000);
        assert_eq!(b.next(Duration::from_secs(10)), Duration::from_millis(100));
    }
}
