//! The launch plan: everything the container child process needs, checked and converted
//! from the OCI spec in the agent, so the child (which runs in namespaces being built) only
//! applies numbers and paths.

use std::path::{Component, Path, PathBuf};

use ironpod_protocol::{AgentError, ErrorKind};
use oci_spec::runtime::{LinuxNamespaceType, Mount, PosixRlimitType, Process, Spec};
use serde::{Deserialize, Serialize};

use super::{caps, seccomp};

pub(crate) fn bad(msg: impl Into<String>) -> AgentError {
    AgentError::new(ErrorKind::BadRequest, msg)
}

/// Namespaces the agent can create or join, with their clone flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ns {
    /// Mount.
    Mnt,
    /// Process ids.
    Pid,
    /// System V IPC and POSIX queues.
    Ipc,
    /// Host and domain name.
    Uts,
    /// Network (shared by the pod unless the spec asks for its own).
    Net,
    /// Cgroup root.
    Cgroup,
}

impl Ns {
    /// The `CLONE_NEW*` flag.
    pub fn flag(self) -> libc::c_int {
        match self {
            Ns::Mnt => libc::CLONE_NEWNS,
            Ns::Pid => libc::CLONE_NEWPID,
            Ns::Ipc => libc::CLONE_NEWIPC,
            Ns::Uts => libc::CLONE_NEWUTS,
            Ns::Net => libc::CLONE_NEWNET,
            Ns::Cgroup => libc::CLONE_NEWCGROUP,
        }
    }

    /// The name under /proc/PID/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            Ns::Mnt => "mnt",
            Ns::Pid => "pid",
            Ns::Ipc => "ipc",
            Ns::Uts => "uts",
            Ns::Net => "net",
            Ns::Cgroup => "cgroup",
        }
    }

    /// Every kind, in the order they are joined (mount last: it changes what paths mean).
    pub const JOIN_ORDER: [Ns; 6] = [Ns::Cgroup, Ns::Ipc, Ns::Uts, Ns::Net, Ns::Pid, Ns::Mnt];
}

/// One mount in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// Source (a path for binds, a name otherwise).
    pub source: String,
    /// Absolute destination inside the container.
    pub destination: String,
    /// Filesystem type (`bind` for bind mounts).
    pub fstype: String,
    /// mount(2) flags.
    pub flags: u64,
    /// Propagation flags applied after mounting (MS_PRIVATE, MS_SLAVE, … | MS_REC).
    pub propagation: u64,
    /// Filesystem data.
    pub data: String,
    /// For a bind mount: a path inside `source` to mount instead, resolved without ever
    /// leaving `source` (a Kubernetes `subPath`, from the mount option
    /// `x-ironpod.subpath=PATH`).
    pub subpath: Option<String>,
}

/// A device node to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePlan {
    /// Absolute path inside the container.
    pub path: String,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub kind: u32,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// How the container's root is built (init processes only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsPlan {
    /// The prepared root (an overlayfs mount point in the agent's namespace).
    pub root: PathBuf,
    /// Remount the root read-only at the end.
    pub readonly: bool,
    /// Spec mounts, in order.
    pub mounts: Vec<MountPlan>,
    /// Device nodes (defaults plus the spec's).
    pub devices: Vec<DevicePlan>,
    /// Paths hidden from the container.
    pub masked: Vec<String>,
    /// Paths made read-only.
    pub readonly_paths: Vec<String>,
    /// Host name (new UTS namespace only).
    pub hostname: Option<String>,
    /// Domain name.
    pub domainname: Option<String>,
    /// Sysctls to write under /proc/sys.
    pub sysctl: Vec<(String, String)>,
}

/// Capability sets as bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapPlan {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

/// The process to execute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPlan {
    /// argv (argv[0] is looked up in the container's PATH when it has no slash).
    pub args: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Absolute working directory.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Umask.
    pub umask: Option<u32>,
    /// Capabilities.
    pub caps: CapPlan,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// (resource, soft, hard).
    pub rlimits: Vec<(u32, u64, u64)>,
    /// OOM score adjustment.
    pub oom_score_adj: Option<i32>,
    /// Seccomp programs (BPF instructions), installed in order.
    pub seccomp: Vec<Vec<(u16, u8, u8, u32)>>,
    /// The stdio fds are a terminal: make it the controlling one.
    pub tty: bool,
}

/// Everything the child needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// The cgroup directory to join first (absolute, under /sys/fs/cgroup).
    pub cgroup: Option<PathBuf>,
    /// Namespaces to join: (kind, path of the namespace file).
    pub join: Vec<(Ns, PathBuf)>,
    /// Namespaces to create.
    pub create: Vec<Ns>,
    /// Root filesystem work (init processes).
    pub rootfs: Option<RootfsPlan>,
    /// The process.
    pub process: ProcessPlan,
}

/// An absolute, normalised path without `..` that names something inside the container.
pub fn container_path(p: &str, what: &str) -> Result<String, AgentError> {
    if !p.starts_with('/') || p.contains('\0') || p.len() > 4096 {
        return Err(bad(format!("{what} must be an absolute path: {p:?}")));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(bad(format!("{what} must not contain '..': {p:?}")));
            }
            Component::Prefix(_) => return Err(bad(format!("bad {what}: {p:?}"))),
        }
    }
    Ok(out.to_string_lossy().into_owned())
}

fn mount_flags(options: &[String]) -> Result<(u64, u64, Vec<String>), AgentError> {
    let mut flags: u64 = 0;
    let mut prop: u64 = 0;
    let mut data = Vec::new();
    for o in options {
        let (set, clear, p): (u64, u64, u64) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0, 0),
            "rw" => (0, libc::MS_RDONLY, 0),
            "nosuid" => (libc::MS_NOSUID, 0, 0),
            "suid" => (0, libc::MS_NOSUID, 0),
            "nodev" => (libc::MS_NODEV, 0, 0),
            "dev" => (0, libc::MS_NODEV, 0),
            "noexec" => (libc::MS_NOEXEC, 0, 0),
            "exec" => (0, libc::MS_NOEXEC, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0, 0),
            "async" => (0, libc::MS_SYNCHRONOUS, 0),
            "dirsync" => (libc::MS_DIRSYNC, 0, 0),
            "remount" => (libc::MS_REMOUNT, 0, 0),
            "mand" => (libc::MS_MANDLOCK, 0, 0),
            "nomand" => (0, libc::MS_MANDLOCK, 0),
            "atime" => (0, libc::MS_NOATIME, 0),
            "noatime" => (libc::MS_NOATIME, 0, 0),
            "diratime" => (0, libc::MS_NODIRATIME, 0),
            "nodiratime" => (libc::MS_NODIRATIME, 0, 0),
            "relatime" => (libc::MS_RELATIME, 0, 0),
            "norelatime" => (0, libc::MS_RELATIME, 0),
            "strictatime" => (libc::MS_STRICTATIME, 0, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME, 0),
            "bind" => (libc::MS_BIND, 0, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0, 0),
            "private" => (0, 0, libc::MS_PRIVATE),
            "rprivate" => (0, 0, libc::MS_PRIVATE | libc::MS_REC),
            "shared" => (0, 0, libc::MS_SHARED),
            "rshared" => (0, 0, libc::MS_SHARED | libc::MS_REC),
            "slave" => (0, 0, libc::MS_SLAVE),
            "rslave" => (0, 0, libc::MS_SLAVE | libc::MS_REC),
            "unbindable" => (0, 0, libc::MS_UNBINDABLE),
            "runbindable" => (0, 0, libc::MS_UNBINDABLE | libc::MS_REC),
            other => {
                if other.contains('\0') || other.contains(',') {
                    return Err(bad(format!("bad mount option {other:?}")));
                }
                data.push(other.to_string());
                continue;
            }
        };
        flags = (flags | set) & !clear;
        prop |= p;
    }
    Ok((flags, prop, data))
}

fn mount_plan(m: &Mount) -> Result<MountPlan, AgentError> {
    let destination = container_path(&m.destination().to_string_lossy(), "mount destination")?;
    let mut options = m.options().clone().unwrap_or_default();
    let mut subpath = None;
    options.retain(|o| match o.strip_prefix(ironpod_protocol::SUBPATH_OPTION) {
        Some(p) => {
            subpath = Some(p.to_string());
            false
        }
        None => true,
    });
    let (flags, propagation, data) = mount_flags(&options)?;
    let mut fstype = m.typ().clone().unwrap_or_default();
    if flags & libc::MS_BIND != 0 || fstype == "bind" {
        fstype = "bind".into();
    }
    if fstype.is_empty() || fstype.len() > 64 || fstype.contains('\0') {
        return Err(bad(format!("mount {destination}: missing or bad type {fstype:?}")));
    }
    let source = m.source().as_ref().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if source.contains('\0') {
        return Err(bad(format!("mount {destination}: bad source")));
    }
    if fstype == "bind" && !source.starts_with('/') {
        return Err(bad(format!("bind mount {destination}: source must be absolute")));
    }
    if let Some(p) = &subpath {
        let relative = !p.is_empty()
            && !p.contains('\0')
            && Path::new(p)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            && Path::new(p).components().any(|c| matches!(c, Component::Normal(_)));
        if fstype != "bind" || !relative {
            return Err(bad(format!("mount {destination}: bad subpath {p:?}")));
        }
    }
    Ok(MountPlan {
        source: if source.is_empty() { fstype.clone() } else { source },
        destination,
        fstype,
        flags,
        propagation,
        data: data.join(","),
        subpath,
    })
}

fn rlimit_resource(t: PosixRlimitType) -> Option<u32> {
    use PosixRlimitType as T;
    Some(match t {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// Checks and converts the process part of a spec.
pub fn process_plan(
    p: &Process,
    seccomp: Vec<Vec<(u16, u8, u8, u32)>>,
) -> Result<ProcessPlan, AgentError> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(bad("process.args must name a program"));
    }
    if args.len() > 4096 || args.iter().any(|a| a.contains('\0')) {
        return Err(bad("process.args: too many arguments or a NUL byte"));
    }
    let env = p.env().clone().unwrap_or_default();
    for e in &env {
        if e.contains('\0') || !e.contains('=') || e.starts_with('=') {
            return Err(bad(format!("process.env: {e:?} is not K=V")));
        }
    }
    let cwd_raw = p.cwd().to_string_lossy().into_owned();
    let cwd =
        if cwd_raw.is_empty() { "/".to_string() } else { container_path(&cwd_raw, "process.cwd")? };
    let mut rlimits = Vec::new();
    for r in p.rlimits().clone().unwrap_or_default() {
        let res = rlimit_resource(r.typ())
            .ok_or_else(|| bad(format!("unsupported rlimit {:?}", r.typ())))?;
        if r.soft() > r.hard() {
            return Err(bad(format!("rlimit {:?}: soft limit above hard limit", r.typ())));
        }
        rlimits.push((res, r.soft(), r.hard()));
    }
    if let Some(adj) = p.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(bad(format!("oomScoreAdj {adj} is outside -1000..1000")));
        }
    }
    let user = p.user();
    Ok(ProcessPlan {
        args,
        env,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        caps: caps::plan(p.capabilities().as_ref()),
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        rlimits,
        oom_score_adj: p.oom_score_adj(),
        seccomp,
        tty: p.terminal().unwrap_or(false),
    })
}

/// The default device nodes every container gets (as runc and Docker do).
fn default_devices() -> Vec<DevicePlan> {
    let dev = |path: &str, major, minor| DevicePlan {
        path: path.into(),
        kind: libc::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    };
    vec![
        dev("/dev/null", 1, 3),
        dev("/dev/zero", 1, 5),
        dev("/dev/full", 1, 7),
        dev("/dev/random", 1, 8),
        dev("/dev/urandom", 1, 9),
        dev("/dev/tty", 5, 0),
    ]
}

/// The spec's namespaces: each to create (`None`) or join (a path).
pub type NsList = Vec<(Ns, Option<PathBuf>)>;

/// Checks and converts a container spec. `root` is where the agent mounted the overlay.
pub fn container_plan(
    spec: &Spec,
    root: PathBuf,
) -> Result<(NsList, RootfsPlan, ProcessPlan), AgentError> {
    let process = spec.process().as_ref().ok_or_else(|| bad("the spec has no process"))?;
    let linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = Vec::new();
    for n in linux.namespaces().clone().unwrap_or_default() {
        let kind = match n.typ() {
            LinuxNamespaceType::Mount => Ns::Mnt,
            LinuxNamespaceType::Pid => Ns::Pid,
            LinuxNamespaceType::Ipc => Ns::Ipc,
            LinuxNamespaceType::Uts => Ns::Uts,
            LinuxNamespaceType::Network => Ns::Net,
            LinuxNamespaceType::Cgroup => Ns::Cgroup,
            other => {
                return Err(AgentError::new(
                    ErrorKind::Unsupported,
                    format!("namespace {other:?} is not supported in ironpod guests"),
                ))
            }
        };
        if namespaces.iter().any(|(k, _)| *k == kind) {
            return Err(bad(format!("namespace {kind:?} listed twice")));
        }
        let path = n.path().clone();
        if let Some(p) = &path {
            container_path(&p.to_string_lossy(), "namespace path")?;
        }
        namespaces.push((kind, path));
    }
    if !namespaces.iter().any(|(k, p)| *k == Ns::Mnt && p.is_none()) {
        return Err(bad("the spec must ask for a new mount namespace"));
    }
    let mut mounts = Vec::new();
    for m in spec.mounts().clone().unwrap_or_default() {
        mounts.push(mount_plan(&m)?);
    }
    let mut devices = default_devices();
    for d in linux.devices().clone().unwrap_or_default() {
        let path = container_path(&d.path().to_string_lossy(), "device path")?;
        let kind = match d.typ() {
            oci_spec::runtime::LinuxDeviceType::C | oci_spec::runtime::LinuxDeviceType::U => {
                libc::S_IFCHR
            }
            oci_spec::runtime::LinuxDeviceType::B => libc::S_IFBLK,
            oci_spec::runtime::LinuxDeviceType::P => libc::S_IFIFO,
            other => return Err(bad(format!("device {path}: unsupported type {other:?}"))),
        };
        if d.major() < 0 || d.minor() < 0 {
            return Err(bad(format!("device {path}: negative major/minor")));
        }
        devices.retain(|x| x.path != path);
        devices.push(DevicePlan {
            path,
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    let paths = |v: &Option<Vec<String>>, what: &str| -> Result<Vec<String>, AgentError> {
        v.clone().unwrap_or_default().iter().map(|p| container_path(p, what)).collect()
    };
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if let Some(h) = &hostname {
        if h.len() > 64 || h.contains('\0') {
            return Err(bad("hostname longer than 64 bytes or has a NUL byte"));
        }
    }
    let domainname = spec.domainname().clone().filter(|h| !h.is_empty());
    let mut sysctl = Vec::new();
    for (k, v) in linux.sysctl().clone().unwrap_or_default() {
        if k.is_empty()
            || k.contains('/')
            || k.contains("..")
            || k.contains('\0')
            || v.contains('\0')
        {
            return Err(bad(format!("bad sysctl {k:?}")));
        }
        sysctl.push((k, v));
    }
    let seccomp = match linux.seccomp() {
        Some(s) => seccomp::compile(s)?,
        None => Vec::new(),
    };
    let rootfs = RootfsPlan {
        root,
        readonly: spec.root().as_ref().map(|r| r.readonly().unwrap_or(false)).unwrap_or(false),
        mounts,
        devices,
        masked: paths(linux.masked_paths(), "masked path")?,
        readonly_paths: paths(linux.readonly_paths(), "readonly path")?,
        hostname,
        domainname,
        sysctl,
    };
    Ok((namespaces, rootfs, process_plan(process, seccomp)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths() {
        assert_eq!(container_path("/a/./b/", "x").unwrap(), "/a/b");
        assert_eq!(container_path("/", "x").unwrap(), "/");
        for bad in ["a", "", "/a/../b", "/a\0"] {
            assert!(container_path(bad, "x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mount_options() {
        let o = |v: &[&str]| mount_flags(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (f, p, d) = o(&["nosuid", "ro", "rw", "mode=755", "rprivate", "size=65536k"]).unwrap();
        assert_eq!(f, libc::MS_NOSUID);
        assert_eq!(p, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(d, vec!["mode=755", "size=65536k"]);
        assert!(o(&["a,b"]).is_err());
    }

    #[test]
    fn subpaths() {
        let m = |opts: &[&str], typ: &str| {
            let m = oci_spec::runtime::MountBuilder::default()
                .destination("/d")
                .typ(typ)
                .source("/vol")
                .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .build()
                .unwrap();
            mount_plan(&m)
        };
        let p = m(&["rbind", "x-ironpod.subpath=a/b", "ro"], "bind").unwrap();
        assert_eq!((p.source.as_str(), p.subpath.as_deref()), ("/vol", Some("a/b")));
        assert_eq!(p.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert!(p.data.is_empty());
        assert_eq!(m(&["rbind"], "bind").unwrap().subpath, None);
        assert_eq!(
            m(&["x-ironpod.subpath=./conf"], "bind").unwrap().subpath.as_deref(),
            Some("./conf")
        );
        for bad in ["../x", "/abs", "a/../../b", "", "."] {
            let o = format!("x-ironpod.subpath={bad}");
            assert!(m(&["rbind", &o], "bind").is_err(), "{bad:?}");
        }
        assert!(m(&["x-ironpod.subpath=a"], "tmpfs").is_err());
    }

    #[test]
    fn default_spec_converts() {
        let spec = Spec::default();
        let (ns, root, proc_) = container_plan(&spec, "/r".into()).unwrap();
        assert!(ns.iter().any(|(k, _)| *k == Ns::Pid));
        assert!(root.mounts.iter().any(|m| m.destination == "/proc" && m.fstype == "proc"));
        assert_eq!(proc_.args, vec!["sh"]);
        assert_eq!(proc_.caps.bounding, (1 << 5) | (1 << 10) | (1 << 29)); // KILL, NET_BIND_SERVICE, AUDIT_WRITE
    }

    #[test]
    fn hostile_specs_are_refused() {
        let mut spec = Spec::default();
        let mut p = spec.process().clone().unwrap();
        p.set_args(Some(vec![]));
        spec.set_process(Some(p));
        assert!(container_plan(&spec, "/r".into()).is_err());

        let mut spec = Spec::default();
        let mut p = spec.process().clone().unwrap();
        p.set_cwd("../etc".into());
        spec.set_process(Some(p));
        assert!(container_plan(&spec, "/r".into()).is_err());

        let mut spec = Spec::default();
        let mut m = spec.mounts().clone().unwrap();
        m[0].set_destination("/proc/../../x".into());
        spec.set_mounts(Some(m));
        assert!(container_plan(&spec, "/r".into()).is_err());

        let mut spec = Spec::default();
        spec.set_process(None);
        assert!(container_plan(&spec, "/r".into()).is_err());
    }
}
