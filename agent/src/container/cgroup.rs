//! cgroup v2 for containers: one cgroup per container, its limits from the spec's resources,
//! its statistics, OOM kills, and killing everything in it.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ironpod_protocol::{AgentError, ContainerStats, ErrorKind};
use oci_spec::runtime::LinuxResources;

use super::plan::bad;

/// Where the unified hierarchy is mounted in the guest.
pub const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup directory for a container: the spec's `cgroupsPath` (relative to the root,
/// without `..`) or `ironpod/<id>`.
pub fn path_for(id: &str, spec_path: Option<&Path>) -> Result<PathBuf, AgentError> {
    let rel = match spec_path {
        None => PathBuf::from("ironpod").join(id),
        Some(p) => {
            let s = p.to_string_lossy();
            // systemd-style "slice:prefix:name" paths are not for us: use their last part.
            let s = if s.contains(':') && !s.starts_with('/') {
                s.rsplit(':').next().unwrap_or_default().to_string()
            } else {
                s.into_owned()
            };
            let mut rel = PathBuf::new();
            for c in Path::new(&s).components() {
                match c {
                    Component::Normal(n) => rel.push(n),
                    Component::RootDir | Component::CurDir => {}
                    _ => return Err(bad(format!("cgroupsPath {s:?} must not contain '..'"))),
                }
            }
            if rel.as_os_str().is_empty() {
                return Err(bad("cgroupsPath is empty"));
            }
            rel
        }
    };
    Ok(Path::new(ROOT).join(rel))
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), AgentError> {
    fs::write(dir.join(file), value)
        .map_err(|e| AgentError::new((&e).into(), format!("cgroup {file} = {value}: {e}")))
}

/// Creates the cgroup (and parents, with every controller delegated down) and applies limits.
pub fn create(dir: &Path, resources: Option<&LinuxResources>) -> Result<(), AgentError> {
    let root = Path::new(ROOT);
    let rel = dir.strip_prefix(root).map_err(|_| bad("cgroup outside the hierarchy"))?;
    let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let enable: String =
        controllers.split_whitespace().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
    let mut cur = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        cur.push(c);
        match fs::create_dir(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if i + 1 == parts.len() {
                    return Err(AgentError::new(
                        ironpod_protocol::ErrorKind::AlreadyExists,
                        format!("cgroup {} exists already", cur.display()),
                    ));
                }
            }
            Err(e) => {
                return Err(AgentError::new((&e).into(), format!("mkdir {}: {e}", cur.display())))
            }
        }
        if i + 1 < parts.len() && !enable.is_empty() {
            // Best effort: a parent may already delegate them.
            let _ = fs::write(cur.join("cgroup.subtree_control"), &enable);
        }
    }
    if let Some(r) = resources {
        if let Err(e) = apply(dir, r) {
            let _ = fs::remove_dir(dir);
            return Err(e);
        }
    }
    Ok(())
}

/// Converts cgroup v1 CPU shares (2–262144) to a v2 weight (1–10000), as runc does.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// Applies the spec's resource limits.
pub fn apply(dir: &Path, r: &LinuxResources) -> Result<(), AgentError> {
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            let v = if limit < 0 { "max".to_string() } else { limit.to_string() };
            write(dir, "memory.max", &v)?;
            // No swap in the guest; keep it explicit so a limit is a limit.
            let _ = fs::write(dir.join("memory.swap.max"), "0");
        }
        if let Some(res) = m.reservation() {
            if res > 0 {
                write(dir, "memory.low", &res.to_string())?;
            }
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(q) = c.quota() {
            let period = c.period().unwrap_or(100_000);
            if period == 0 || period > 1_000_000 {
                return Err(bad(format!("cpu period {period} is outside 1..1000000")));
            }
            let v = if q <= 0 { format!("max {period}") } else { format!("{q} {period}") };
            write(dir, "cpu.max", &v)?;
        }
        if let Some(s) = c.shares() {
            write(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
        }
        if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
            write(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
            write(dir, "cpuset.mems", mems)?;
        }
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() <= 0 { "max".to_string() } else { p.limit().to_string() };
        write(dir, "pids.max", &v)?;
    }
    if let Some(rules) = r.devices() {
        super::devices::apply(dir, rules)?;
    }
    for (k, v) in r.unified().clone().unwrap_or_default() {
        if k.contains('/') || k.contains("..") || k.starts_with("cgroup.") {
            return Err(bad(format!("unified cgroup key {k:?} is not allowed")));
        }
        write(dir, &k, &v)?;
    }
    Ok(())
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_default()
}

fn keyed(text: &str, key: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

fn limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() || t == "max" {
        None
    } else {
        t.parse().ok()
    }
}

/// Whether the cgroup has seen an out-of-memory kill.
pub fn oom_killed(dir: &Path) -> bool {
    keyed(&read(dir, "memory.events"), "oom_kill ") > 0
}

/// Process ids in the cgroup.
pub fn pids(dir: &Path) -> Vec<i32> {
    read(dir, "cgroup.procs").lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Statistics.
pub fn stats(dir: &Path) -> ContainerStats {
    let io = read(dir, "io.stat");
    let (mut rb, mut wb) = (0, 0);
    for line in io.lines() {
        for kv in line.split_whitespace().skip(1) {
            if let Some(v) = kv.strip_prefix("rbytes=") {
                rb += v.parse::<u64>().unwrap_or(0);
            } else if let Some(v) = kv.strip_prefix("wbytes=") {
                wb += v.parse::<u64>().unwrap_or(0);
            }
        }
    }
    ContainerStats {
        cpu_usage_usec: keyed(&read(dir, "cpu.stat"), "usage_usec "),
        memory_bytes: read(dir, "memory.current").trim().parse().unwrap_or(0),
        memory_limit: limit(&read(dir, "memory.max")),
        pids: read(dir, "pids.current").trim().parse().unwrap_or(0),
        pids_limit: limit(&read(dir, "pids.max")),
        io_read_bytes: rb,
        io_write_bytes: wb,
        online_cpus: 0,
        sampled_usec: 0,
    }
}

/// Kills every process in the cgroup and waits (up to `timeout`) until it is empty.
pub fn kill_all(dir: &Path, timeout: Duration) -> bool {
    if fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for pid in pids(dir) {
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !read(dir, "cgroup.events").contains("populated 1") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Freezes or thaws the processes of a cgroup and waits (up to 5 s) until the kernel
/// reports the new state.
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<(), AgentError> {
    write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(dir, "cgroup.events").lines().any(|l| l == want) {
        if Instant::now() >= deadline {
            return Err(AgentError::new(
                ErrorKind::Io,
                format!("the cgroup did not report {want:?} within 5 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Who wants a container's cgroup frozen: its user (pause/unpause) and any number of
/// holds (a commit or a copy in progress). The cgroup is frozen while either does, so a
/// copy never thaws a paused container, an unpause during a copy waits for its end, and
/// overlapping copies thaw only when the last one ends.
pub struct Freezer {
    dir: PathBuf,
    state: Mutex<FreezeState>,
}

#[derive(Default)]
struct FreezeState {
    paused: bool,
    holds: u32,
}

impl Freezer {
    /// The freezer of cgroup `dir` (not frozen).
    pub fn new(dir: &Path) -> Freezer {
        Freezer { dir: dir.to_path_buf(), state: Mutex::new(FreezeState::default()) }
    }

    fn state(&self) -> MutexGuard<'_, FreezeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pauses or unpauses the container as its user asks; an unpause takes effect once
    /// no hold is left.
    pub fn set_paused(&self, paused: bool) -> Result<(), AgentError> {
        let mut s = self.state();
        s.paused = paused;
        if s.holds == 0 {
            set_frozen(&self.dir, paused)?;
        }
        Ok(())
    }

    /// Keeps the cgroup frozen until the returned hold is dropped. Freezing is best
    /// effort: a cgroup whose processes are gone has nothing to freeze.
    pub fn hold(&self) -> FreezeHold<'_> {
        let mut s = self.state();
        s.holds += 1;
        if s.holds == 1 && !s.paused {
            let _ = set_frozen(&self.dir, true);
        }
        FreezeHold { freezer: self }
    }
}

/// A hold on a [`Freezer`]: the cgroup stays frozen while it lives.
pub struct FreezeHold<'a> {
    freezer: &'a Freezer,
}

impl Drop for FreezeHold<'_> {
    fn drop(&mut self) {
        let mut s = self.freezer.state();
        s.holds -= 1;
        if s.holds == 0 && !s.paused {
            let _ = write(&self.freezer.dir, "cgroup.freeze", "0");
        }
    }
}

/// Removes the cgroup (it must be empty).
pub fn remove(dir: &Path) {
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_stays_frozen_while_its_user_or_any_copy_wants_it() {
        let t = tempfile::tempdir().unwrap();
        // A stand-in cgroup whose events say whatever state is asked for is reached.
        fs::write(t.path().join("cgroup.events"), "frozen 1\nfrozen 0\n").unwrap();
        let frozen = || fs::read_to_string(t.path().join("cgroup.freeze")).unwrap() == "1";
        let f = Freezer::new(t.path());
        let (a, b) = (f.hold(), f.hold());
        assert!(frozen());
        drop(a);
        assert!(frozen(), "a second copy is still going");
        f.set_paused(true).unwrap();
        drop(b);
        assert!(frozen(), "a copy thawed a paused container");
        let c = f.hold();
        f.set_paused(false).unwrap();
        assert!(frozen(), "an unpause thawed a container during a copy");
        drop(c);
        assert!(!frozen());
    }

    #[test]
    fn paths() {
        assert_eq!(path_for("c1", None).unwrap(), Path::new("/sys/fs/cgroup/ironpod/c1"));
        assert_eq!(
            path_for("c1", Some(Path::new("/kubepods/pod1/c1"))).unwrap(),
            Path::new("/sys/fs/cgroup/kubepods/pod1/c1")
        );
        assert_eq!(
            path_for("c1", Some(Path::new("system.slice:cri:abc"))).unwrap(),
            Path::new("/sys/fs/cgroup/abc")
        );
        assert!(path_for("c1", Some(Path::new("/a/../../etc"))).is_err());
    }

    #[test]
    fn weights_and_parsing() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(keyed("low 0\noom 1\noom_kill 2\n", "oom_kill "), 2);
        assert_eq!(limit("max\n"), None);
        assert_eq!(limit("67108864\n"), Some(67_108_864));
    }
}
