//! Ids, names and process identities: the small vocabulary every host crate shares.
//!
//! Owns: new random ids (containers, networks), the Docker rules for user-given names, the
//! generated `adjective_noun_xxxx` names, and telling a live process from a reused pid.
//! Knows nothing of pods, records, networks or volumes: it is the bottom of the host side.

use std::fs;
use std::io::Read;

/// A new id: 64 random hex digits (from `/dev/urandom`).
pub fn new_id() -> std::io::Result<String> {
    random_hex(32)
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

const ADJECTIVES: [&str; 16] = [
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "swift", "witty", "zesty",
];
const NOUNS: [&str; 16] = [
    "otter", "falcon", "badger", "heron", "lynx", "marten", "orca", "panda", "quokka", "raven",
    "salmon", "tapir", "urchin", "vole", "walrus", "yak",
];

/// The name a container gets when the user gives none: `adjective_noun_xxxx`, from its id
/// (an id shorter than 6 characters, or not hex, still gets a valid name).
pub fn generated_name(id: &str) -> String {
    let b = id.get(..2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
    let tail = id.get(2..6).unwrap_or("0000");
    format!("{}_{}_{}", ADJECTIVES[(b >> 4) as usize], NOUNS[(b & 15) as usize], tail)
}

/// Checks a user-given name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 bytes, as Docker.
pub fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        && n.len() <= 128
}

/// Start time of a process in clock ticks after boot: with its pid, it tells a process
/// from a later one that reuses the pid. `None` when no such process runs.
pub fn process_start(pid: i32) -> Option<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process recorded as `pid` (started at `start`, when known) still runs.
pub fn process_alive(pid: i32, start: Option<i64>) -> bool {
    match start {
        Some(s) => process_start(pid) == Some(s),
        None => process_start(pid).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("web-1.a_b"));
        for bad in ["", "-x", "a/b", "a b", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&"a".repeat(129)));
        let n = generated_name("a7ffffff");
        assert_eq!(n, "nimble_panda_ffff");
        assert!(valid_name(&n), "{n}");
        assert!(valid_name(&generated_name("é")));
    }

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let start = process_start(me);
        assert!(start.is_some());
        assert!(process_alive(me, start));
        assert!(process_alive(me, None));
        assert!(!process_alive(me, start.map(|s| s + 1)));
        assert_eq!(process_start(-1), None);
    }
}
