//! A pod's host cgroup: its VMM (and the virtiofsd serving its volumes) bounded in memory,
//! processes and CPU, so that nothing a guest does makes the host side grow past them.
//!
//! cgroup v2 where the host has it (one directory, `<cgroup2>/ironpod/<vm>`); on hosts with
//! only v1 hierarchies, the same limits in the `memory`, `pids` and `cpu` hierarchies
//! (`<hierarchy>/ironpod/<vm>`). A host with neither those controllers gets no cgroup: the
//! VM starts and says so in its log (`ironpod stats` then shows no host-side usage).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The parent cgroup of every pod's.
pub const PARENT: &str = "ironpod";

/// What a pod's cgroup allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Memory, bytes (guest RAM, the VMM's own, its page cache, virtiofsd's).
    pub memory: u64,
    /// Processes and threads.
    pub pids: u64,
    /// CPU time per period, in CPUs (`--cpus 1.5`); `None`: unbounded.
    pub cpus: Option<f64>,
}

/// Host memory a pod may use beyond its guest's RAM: the VMM's own (tens of MiB), KVM's
/// page tables, the page cache of its disks, its jail's tmpfs (console log), virtiofsd.
pub const HOST_ALLOWANCE_MIB: u64 = 160;
/// Processes and threads a pod may have beyond one per vCPU (the VMM's event loop and
/// helpers, virtiofsd's sandbox and threads).
pub const EXTRA_PIDS: u64 = 64;

impl Limits {
    /// The limits of a VM with `vcpus`, `memory_mib` of RAM and at most `cpus` CPUs of time.
    pub fn for_vm(vcpus: u8, memory_mib: u64, cpus: Option<f64>) -> Limits {
        Limits {
            memory: (memory_mib + HOST_ALLOWANCE_MIB) << 20,
            pids: u64::from(vcpus) + EXTRA_PIDS,
            cpus: cpus.filter(|c| c.is_finite() && *c > 0.0),
        }
    }
}

/// Host-side usage of a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory now, bytes.
    pub memory: u64,
    /// The memory limit, bytes.
    pub memory_limit: u64,
    /// CPU time used, microseconds.
    pub cpu_usec: u64,
    /// Processes and threads now.
    pub pids: u64,
    /// Times the memory limit made the kernel kill a process of the pod.
    pub oom_kills: u64,
}

/// The CFS period cpu limits use (the kernel's default).
const PERIOD_USEC: u64 = 100_000;

/// Where the cgroups live on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hierarchy {
    /// The cgroup v2 mount.
    V2(PathBuf),
    /// The v1 hierarchies of each controller.
    V1 { memory: PathBuf, pids: PathBuf, cpu: PathBuf, cpuacct: PathBuf },
}

/// The mount points of `/proc/self/mountinfo` text by file system type (`cgroup2`) or, for
/// v1, by controller (the super options name it).
fn mounts(mountinfo: &str) -> (Option<PathBuf>, Vec<(String, PathBuf)>) {
    let (mut v2, mut v1) = (None, Vec::new());
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(point) = left.split(' ').nth(4) else { continue };
        let mut r = right.split(' ');
        let (fstype, _source, opts) = (r.next(), r.next(), r.next().unwrap_or_default());
        match fstype {
            Some("cgroup2") if v2.is_none() => v2 = Some(PathBuf::from(point)),
            Some("cgroup") => {
                for o in opts.split(',') {
                    v1.push((o.to_string(), PathBuf::from(point)));
                }
            }
            _ => {}
        }
    }
    (v2, v1)
}

fn hierarchy_in(mountinfo: &str) -> Option<Hierarchy> {
    let (v2, v1) = mounts(mountinfo);
    let v1_of = |c: &str| v1.iter().find(|(o, _)| o == c).map(|(_, p)| p.clone());
    if let (Some(memory), Some(pids), Some(cpu)) = (v1_of("memory"), v1_of("pids"), v1_of("cpu")) {
        // A hybrid host's v2 mount has no controllers: the v1 ones hold them.
        let cpuacct = v1_of("cpuacct").unwrap_or_else(|| cpu.clone());
        return Some(Hierarchy::V1 { memory, pids, cpu, cpuacct });
    }
    let v2 = v2?;
    let controllers = fs::read_to_string(v2.join("cgroup.controllers")).ok()?;
    let have: Vec<&str> = controllers.split_whitespace().collect();
    ["memory", "pids", "cpu"].iter().all(|c| have.contains(c)).then_some(Hierarchy::V2(v2))
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn read_u64(path: &Path) -> u64 {
    fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// The value of `key` in a flat keyed file (`memory.events`, `cpu.stat`).
fn keyed(path: &Path, key: &str) -> u64 {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// One pod's cgroup; dropping it removes it (once its processes are gone).
#[derive(Debug)]
pub struct PodCgroup {
    hierarchy: Hierarchy,
    name: String,
    /// Made by this value (removed when it is dropped), not just looked at.
    owned: bool,
}

impl PodCgroup {
    /// Makes the cgroup `name` with `limits`; `None` on a host without the controllers
    /// (logged).
    pub fn create(name: &str, limits: &Limits) -> io::Result<Option<PodCgroup>> {
        let Some(mut cg) = Self::named(name)? else {
            tracing::warn!(
                "no cgroup controllers for memory, pids and cpu: the host side is unbounded"
            );
            return Ok(None);
        };
        cg.owned = true;
        if let Err(e) = cg.make(limits) {
            drop(cg);
            return Err(e);
        }
        Ok(Some(cg))
    }

    /// The cgroup `name` (existing or not); `None` on a host without the controllers.
    fn named(name: &str) -> io::Result<Option<PodCgroup>> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad name {name:?}")));
        }
        let info = fs::read_to_string("/proc/self/mountinfo")?;
        let name = name.to_string();
        Ok(hierarchy_in(&info).map(|hierarchy| PodCgroup { hierarchy, name, owned: false }))
    }

    /// Removes the cgroup `name` left by a process that is gone (once its last process
    /// has been reaped).
    pub fn remove(name: &str) {
        if let Ok(Some(mut cg)) = Self::named(name) {
            cg.owned = true;
        }
    }

    /// The usage of the existing cgroup `name` (a pod's, from another process); `None` when
    /// there is none.
    pub fn usage_of(name: &str) -> Option<Usage> {
        let cg = Self::named(name).ok()??;
        cg.path().is_dir().then(|| cg.usage())
    }

    /// The cgroup's directories (one for v2; memory, pids, cpu and cpuacct for v1).
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = match &self.hierarchy {
            Hierarchy::V2(root) => vec![root.clone()],
            Hierarchy::V1 { memory, pids, cpu, cpuacct } => {
                vec![memory.clone(), pids.clone(), cpu.clone(), cpuacct.clone()]
            }
        };
        dirs.dedup();
        dirs.into_iter().map(|d| d.join(PARENT).join(&self.name)).collect()
    }

    fn make(&self, limits: &Limits) -> io::Result<()> {
        let quota = limits.cpus.map(|c| ((c * PERIOD_USEC as f64).ceil() as u64).max(1000));
        match &self.hierarchy {
            Hierarchy::V2(root) => {
                let parent = root.join(PARENT);
                fs::create_dir_all(&parent)?;
                for dir in [root.as_path(), parent.as_path()] {
                    write(&dir.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                }
                let dir = parent.join(&self.name);
                fs::create_dir_all(&dir)?;
                write(&dir.join("memory.max"), &limits.memory.to_string())?;
                // Guest memory that can be swapped is guest memory that is not bounded.
                if dir.join("memory.swap.max").exists() {
                    write(&dir.join("memory.swap.max"), "0")?;
                }
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                if let Some(q) = quota {
                    write(&dir.join("cpu.max"), &format!("{q} {PERIOD_USEC}"))?;
                }
            }
            Hierarchy::V1 { .. } => {
                for dir in self.dirs() {
                    fs::create_dir_all(&dir)?;
                }
                let d = self.dirs();
                write(&d[0].join("memory.limit_in_bytes"), &limits.memory.to_string())?;
                if d[0].join("memory.memsw.limit_in_bytes").exists() {
                    write(&d[0].join("memory.memsw.limit_in_bytes"), &limits.memory.to_string())?;
                }
                write(&d[1].join("pids.max"), &limits.pids.to_string())?;
                if let Some(q) = quota {
                    write(&d[2].join("cpu.cfs_period_us"), &PERIOD_USEC.to_string())?;
                    write(&d[2].join("cpu.cfs_quota_us"), &q.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// The cgroup's `cgroup.procs` files, open for writing: a process writes `0` to each to
    /// join (the VMM does, between fork and exec, so every thread it makes is inside).
    pub fn procs_files(&self) -> io::Result<Vec<fs::File>> {
        self.dirs()
            .iter()
            .map(|d| fs::OpenOptions::new().write(true).open(d.join("cgroup.procs")))
            .collect()
    }

    /// The cgroup's directory, open, on cgroup v2 (what a child is created inside with
    /// `CLONE_INTO_CGROUP`); `None` on v1.
    pub fn v2_dir(&self) -> io::Result<Option<fs::File>> {
        match &self.hierarchy {
            Hierarchy::V2(_) => {
                use std::os::unix::fs::OpenOptionsExt;
                let dir = self.path();
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY)
                    .open(dir)
                    .map(Some)
            }
            Hierarchy::V1 { .. } => Ok(None),
        }
    }

    /// Moves the process `pid` (and its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The cgroup's directory (v2) or its memory hierarchy's (v1).
    pub fn path(&self) -> PathBuf {
        self.dirs().remove(0)
    }

    /// What the pod uses on the host now.
    pub fn usage(&self) -> Usage {
        let d = self.dirs();
        match &self.hierarchy {
            Hierarchy::V2(_) => Usage {
                memory: read_u64(&d[0].join("memory.current")),
                memory_limit: read_u64(&d[0].join("memory.max")),
                cpu_usec: keyed(&d[0].join("cpu.stat"), "usage_usec"),
                pids: read_u64(&d[0].join("pids.current")),
                oom_kills: keyed(&d[0].join("memory.events"), "oom_kill"),
            },
            Hierarchy::V1 { .. } => Usage {
                memory: read_u64(&d[0].join("memory.usage_in_bytes")),
                memory_limit: read_u64(&d[0].join("memory.limit_in_bytes")),
                cpu_usec: read_u64(&d[d.len() - 1].join("cpuacct.usage")) / 1000,
                pids: read_u64(&d[1].join("pids.current")),
                oom_kills: keyed(&d[0].join("memory.oom_control"), "oom_kill"),
            },
        }
    }
}

/// What a child process runs between fork and exec to join `cgroup` (system calls only:
/// it writes `0` to each `cgroup.procs`, opened now).
pub fn joiner(
    cgroup: Option<&PodCgroup>,
) -> io::Result<impl FnMut() -> io::Result<()> + Send + Sync + 'static> {
    let files = cgroup.map(PodCgroup::procs_files).transpose()?.unwrap_or_default();
    Ok(move || {
        for f in &files {
            use std::os::fd::AsRawFd;
            // SAFETY: write(2) of a static buffer to a descriptor opened before the fork.
            if unsafe { libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        for d in self.dirs() {
            // A cgroup goes once its last process has been reaped; the caller kills and
            // waits first, so one retry covers the kernel's lag.
            for _ in 0..50 {
                match fs::remove_dir(&d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 26 0:30 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate
38 35 0:33 / /sys/fs/cgroup/memory rw shared:14 - cgroup cgroup rw,memory
39 35 0:34 / /sys/fs/cgroup/pids rw shared:15 - cgroup cgroup rw,pids
40 35 0:35 / /sys/fs/cgroup/cpu,cpuacct rw shared:16 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn v1_hierarchies_are_found_by_controller() {
        let h = hierarchy_in(HYBRID).unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into(),
                cpuacct: "/sys/fs/cgroup/cpu,cpuacct".into(),
            }
        );
        let cg = PodCgroup { hierarchy: h, name: "x".into(), owned: false };
        // cpu and cpuacct share one directory: listed once.
        assert_eq!(cg.dirs().len(), 3);
    }

    #[test]
    fn no_controllers_no_cgroup() {
        assert_eq!(hierarchy_in("36 35 0:31 / /x rw - ext4 /dev/sda rw\n"), None);
        let (v2, _) = mounts("36 35 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(v2, Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn keyed_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        fs::write(&f, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(keyed(&f, "oom_kill"), 2);
        assert_eq!(keyed(&f, "oom"), 1);
        assert_eq!(keyed(&f, "absent"), 0);
    }
}
