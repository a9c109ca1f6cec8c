//! Building the OCI runtime spec of a container from its image's config and the user's run
//! options, with Docker's defaults (capabilities, mounts, masked paths, entrypoint/cmd rules,
//! environment precedence).

use std::collections::HashMap;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, UserBuilder,
};
use serde::{Deserialize, Serialize};

/// Annotation asking the agent to resolve a user (and group) name in the container's
/// /etc/passwd and /etc/group.
pub const USER_ANNOTATION: &str = "org.ironpod.user";

/// Default PATH (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Command (replaces the image's Cmd).
    pub command: Vec<String>,
    /// `--entrypoint` (replaces the image's Entrypoint; empty string clears it).
    pub entrypoint: Option<String>,
    /// `-e` and `--env-file` entries, in order (`K=V`, or `K` to copy from the caller).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub interactive: bool,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--memory` in bytes.
    pub memory: Option<u64>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--hostname` (default: the short container id).
    pub hostname: Option<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--privileged`: every capability, nothing masked.
    pub privileged: bool,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--security-opt` values (`seccomp=unconfined`, `seccomp=PROFILE.json`,
    /// `no-new-privileges[=true|false]`).
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// `--network`: a network's name, `none`, or unset for the default network.
    #[serde(default)]
    pub network: Option<String>,
    /// `--network-alias`: more names the pod answers to on its network.
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// `-p` mappings.
    #[serde(default)]
    pub publish: Vec<ironpod_net::PortMapping>,
    /// `--dns` servers (replace the host's).
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--add-host NAME:IP` entries.
    #[serde(default)]
    pub add_host: Vec<String>,
    /// `--tmpfs PATH[:OPTIONS]` mounts.
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// `-v` volumes, in order (volume `i` is entry `v<i>` of the pod's share).
    #[serde(default)]
    pub volumes: Vec<ironpod_volumes::VolumeMount>,
    /// `--storage-opt KEY=VALUE` entries (`size=SIZE` of the writable disk).
    #[serde(default)]
    pub storage_opt: Vec<String>,
    /// `--log-opt KEY=VALUE` entries (`max-size`, `max-file`; see [`crate::logs::LogLimits`]).
    #[serde(default)]
    pub log_opt: Vec<String>,
    /// `--label KEY=VALUE`: the container's labels (over its image's).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--restart`: when the service starts it again after it ends.
    #[serde(default)]
    pub restart: crate::restart::RestartPolicy,
    /// `--health-*`: how its health is probed.
    #[serde(default)]
    pub healthcheck: Option<crate::health::HealthConfig>,
}

impl RunOptions {
    /// The size of the container's writable disk (`--storage-opt size=`, else the default).
    pub fn writable_disk_bytes(&self) -> Result<u64, SpecError> {
        crate::disks::parse_storage_opts(&self.storage_opt).map_err(SpecError::Invalid)
    }
    /// The network the pod joins: `None` for `--network none`.
    pub fn network_name(&self) -> Option<&str> {
        match self.network.as_deref() {
            None | Some("") => Some(ironpod_net::DEFAULT_NETWORK),
            Some("none") => None,
            Some(n) => Some(n),
        }
    }
}

/// tmpfs options a user may set (`--tmpfs /run:size=64m,mode=1777`).
const TMPFS_OPTIONS: [&str; 12] = [
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
];

/// The mount of one `--tmpfs PATH[:OPTIONS]` (Docker's defaults: nosuid, nodev, noexec).
pub fn tmpfs_mount(v: &str) -> Result<oci_spec::runtime::Mount, SpecError> {
    let bad = |why: &str| SpecError::Invalid(format!("invalid --tmpfs {v:?}: {why}"));
    let (path, opts) = v.split_once(':').unwrap_or((v, ""));
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") || path.contains('\0') {
        return Err(bad("the path must be absolute, without \"..\""));
    }
    if path == "/" {
        return Err(bad("cannot mount over /"));
    }
    let mut options: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let key = o.split_once('=').map_or(o, |(k, _)| k);
        if !TMPFS_OPTIONS.contains(&key) || o.len() > 64 {
            return Err(bad(&format!("unsupported option {o:?}")));
        }
        // A later flag overrides a default (exec after noexec).
        let opposite = key.strip_prefix("no").map(str::to_string).unwrap_or(format!("no{key}"));
        options.retain(|x| *x != opposite);
        options.push(o.to_string());
    }
    Ok(oci_spec::runtime::MountBuilder::default()
        .destination(path)
        .typ("tmpfs")
        .source("tmpfs")
        .options(options)
        .build()?)
}

/// Where the agent finds a container's name-service files (written by the pod's monitor
/// before the container is created; bind-mounted on `/etc/<name>`).
pub fn etc_file(id: &str, name: &str) -> String {
    format!("/run/ironpod/etc/{id}/{name}")
}

/// The name-service files every CLI container gets.
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// Adds the bind mounts of the name-service files (their guest copies must exist before
/// the container is created).
pub fn add_etc_mounts(spec: &mut Spec, id: &str) -> Result<(), SpecError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for name in ETC_FILES {
        let dest = format!("/etc/{name}");
        if mounts.iter().any(|m| m.destination().as_os_str() == dest.as_str()) {
            continue;
        }
        mounts.push(
            oci_spec::runtime::MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(etc_file(id, name))
                .options(vec!["rbind".to_string(), "rprivate".to_string()])
                .build()?,
        );
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Errors building a spec (exit code 125 territory).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the image nor the command line names a program.
    #[error("no command specified")]
    NoCommand,
    /// A flag value is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The spec builder refused something.
    #[error("building the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

/// Docker's default capabilities.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

fn parse_cap(name: &str) -> Result<Option<Capability>, SpecError> {
    let up = name.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(None);
    }
    let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .map(Some)
        .map_err(|_| SpecError::Invalid(format!("unknown capability {name:?}")))
}

fn all_caps() -> Vec<Capability> {
    [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
    .iter()
    .filter_map(|n| parse_cap(n).ok().flatten())
    .collect()
}

fn capabilities(o: &RunOptions) -> Result<Vec<Capability>, SpecError> {
    let mut caps: Vec<Capability> = if o.privileged { all_caps() } else { DEFAULT_CAPS.to_vec() };
    for d in &o.cap_drop {
        match parse_cap(d)? {
            None => caps.clear(),
            Some(c) => caps.retain(|x| *x != c),
        }
    }
    for a in &o.cap_add {
        match parse_cap(a)? {
            None => caps = all_caps(),
            Some(c) if !caps.contains(&c) => caps.push(c),
            Some(_) => {}
        }
    }
    Ok(caps)
}

/// Docker's device rules for a container that is not privileged: any device node may be
/// made, but only the pseudo-devices and terminals may be opened (not the VM's disks or its
/// serial console).
pub fn default_device_rules() -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    use LinuxDeviceType::{A, B, C};
    let rule = |allow: bool, typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build()
    };
    let mut rules = vec![
        rule(false, A, None, None, "rwm")?,
        rule(true, C, None, None, "m")?,
        rule(true, B, None, None, "m")?,
    ];
    // null, zero, full, random, urandom, tty, console, ptmx, tun; then every pts.
    for (major, minor) in
        [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (10, 200)]
    {
        rules.push(rule(true, C, Some(major), Some(minor), "rwm")?);
    }
    rules.push(rule(true, C, Some(136), None, "rwm")?);
    Ok(rules)
}

/// Merges environment lists: later entries replace earlier ones with the same key.
pub fn merge_env(lists: &[&[String]]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut map: HashMap<String, String> = HashMap::new();
    for list in lists {
        for e in list.iter() {
            let (k, v) = match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                // `-e NAME` copies the caller's value, or drops the variable if unset.
                None => match std::env::var(e) {
                    Ok(v) => (e.clone(), v),
                    Err(_) => continue,
                },
            };
            if !map.contains_key(&k) {
                order.push(k.clone());
            }
            map.insert(k, v);
        }
    }
    order.into_iter().map(|k| format!("{k}={}", map[&k])).collect()
}

/// Parses `-u`: numeric `UID[:GID]` goes straight into the spec; names are resolved by the
/// agent in the container's own /etc/passwd and /etc/group.
fn user(spec_user: Option<&str>) -> Result<(u32, u32, Option<String>), SpecError> {
    // No user: root, but still looked up so HOME comes from the image's passwd.
    let Some(u) = spec_user.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok((0, 0, Some("0".into())));
    };
    let (name, group) = match u.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (u, None),
    };
    let uid = name.parse::<u32>().ok();
    let gid = group.and_then(|g| g.parse::<u32>().ok());
    if name.is_empty() || group.is_some_and(|g| g.is_empty()) {
        return Err(SpecError::Invalid(format!("invalid user {u:?}")));
    }
    match (uid, group, gid) {
        (Some(uid), None, _) => Ok((uid, 0, Some(u.to_string()))),
        (Some(uid), Some(_), Some(gid)) => Ok((uid, gid, None)),
        _ => {
            if !u.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b)) {
                return Err(SpecError::Invalid(format!("invalid user {u:?}")));
            }
            Ok((0, 0, Some(u.to_string())))
        }
    }
}

/// Builds the spec. `id` is the container id (its first 12 characters become the default
/// host name, as in Docker).
pub fn build(id: &str, image: &ImageConfiguration, o: &RunOptions) -> Result<Spec, SpecError> {
    let cfg = image.config().clone().unwrap_or_default();
    let (entrypoint, cmd): (Vec<String>, Vec<String>) = match &o.entrypoint {
        Some(e) if e.is_empty() => (vec![], o.command.clone()),
        Some(e) => (vec![e.clone()], o.command.clone()),
        None => (
            cfg.entrypoint().clone().unwrap_or_default(),
            if o.command.is_empty() {
                cfg.cmd().clone().unwrap_or_default()
            } else {
                o.command.clone()
            },
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::NoCommand);
    }
    let hostname = o.hostname.clone().unwrap_or_else(|| id.chars().take(12).collect());
    let image_env = cfg.env().clone().unwrap_or_default();
    let mut base = vec![format!("PATH={DEFAULT_PATH}"), format!("HOSTNAME={hostname}")];
    if o.tty {
        base.push("TERM=xterm".into());
    }
    let env = merge_env(&[&base, &image_env, &o.env]);
    let cwd = o
        .workdir
        .clone()
        .or_else(|| cfg.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(SpecError::Invalid(format!("the working directory {cwd:?} is not absolute")));
    }
    let user_str = o.user.clone().or_else(|| cfg.user().clone());
    let (uid, gid, by_name) = user(user_str.as_deref())?;
    let cap_list = capabilities(o)?;
    let mut seccomp = (!o.privileged).then(|| crate::seccomp::default_profile(&cap_list));
    let mut no_new_privs = false;
    for opt in &o.security_opt {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match (k, v) {
            ("seccomp", "unconfined") => seccomp = None,
            ("seccomp", path) if !path.is_empty() => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SpecError::Invalid(format!("seccomp profile {path}: {e}")))?;
                seccomp = Some(
                    serde_json::from_str(&text)
                        .map_err(|e| SpecError::Invalid(format!("seccomp profile {path}: {e}")))?,
                );
            }
            ("no-new-privileges", "" | "true") => no_new_privs = true,
            ("no-new-privileges", "false") => no_new_privs = false,
            _ => return Err(SpecError::Invalid(format!("unsupported --security-opt {opt:?}"))),
        }
    }
    let caps: oci_spec::runtime::Capabilities = cap_list.into_iter().collect();
    let process = ProcessBuilder::default()
        .terminal(o.tty)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()?,
        )
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(1_048_576u64)
            .hard(1_048_576u64)
            .build()?])
        .no_new_privileges(no_new_privs)
        .build()?;
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(m) = o.memory {
        if m < 6 * 1024 * 1024 {
            return Err(SpecError::Invalid("minimum memory limit allowed is 6MB".into()));
        }
        resources = resources.memory(LinuxMemoryBuilder::default().limit(m as i64).build()?);
    }
    if let Some(c) = o.cpus {
        if !(c > 0.0 && c.is_finite() && c <= 1024.0) {
            return Err(SpecError::Invalid(format!("invalid --cpus value {c}")));
        }
        let period = 100_000u64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota((c * period as f64).round() as i64)
                .period(period)
                .build()?,
        );
    }
    if let Some(p) = o.pids_limit {
        resources = resources.pids(LinuxPidsBuilder::default().limit(p).build()?);
    }
    if !o.privileged {
        resources = resources.devices(default_device_rules()?);
    }
    let base_linux = Spec::default().linux().clone().unwrap_or_default();
    // The network is the pod's: containers share the VM's network namespace.
    let namespaces: Vec<_> = base_linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.typ() != LinuxNamespaceType::Network)
        .collect();
    let mut linux = LinuxBuilder::default().namespaces(namespaces).resources(resources.build()?);
    if let Some(s) = seccomp {
        linux = linux.seccomp(s);
    }
    if !o.privileged {
        linux = linux
            .masked_paths(
                base_linux
                    .masked_paths()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .chain(["/sys/devices/virtual/powercap".to_string()])
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(base_linux.readonly_paths().clone().unwrap_or_default());
    }
    let mut annotations = HashMap::new();
    if let Some(name) = by_name {
        annotations.insert(USER_ANNOTATION.to_string(), name);
    }
    let mut spec = Spec::default();
    if !o.tmpfs.is_empty() || !o.volumes.is_empty() {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        let extra = o.tmpfs.iter().map(|t| tmpfs_mount(t)).collect::<Result<Vec<_>, _>>()?;
        // Volumes after tmpfs mounts: a volume inside a tmpfs stays visible.
        for m in extra.into_iter().chain(ironpod_volumes::spec_mounts(&o.volumes)) {
            mounts.retain(|x| x.destination() != m.destination());
            mounts.push(m);
        }
        spec.set_mounts(Some(mounts));
    }
    spec.set_hostname(Some(hostname))
        .set_process(Some(process))
        .set_root(Some(RootBuilder::default().path("rootfs").readonly(o.read_only).build()?))
        .set_linux(Some(linux.build()?))
        .set_annotations(Some(annotations));
    Ok(spec)
}

/// Parses Docker-style sizes: `512`, `64k`, `64m`, `1g`, `1.5g` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("invalid size {s:?}"));
    }
    let bytes = v * mult as f64;
    // 2^63 is exact in f64, and sizes from there on do not fit in half of u64.
    if bytes >= (1u64 << 63) as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("100b").unwrap(), 100);
        for bad in ["", "x", "-1m", "1q", "1e400g", "nan", "8388608t"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    use std::path::Path;

    fn image(json: &str) -> ImageConfiguration {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker_rules() {
        let img = image(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
                "config":{"Entrypoint":["/ep"],"Cmd":["a","b"],"Env":["PATH=/img","X=1"]}}"#,
        );
        let args = |o: &RunOptions| {
            build("abc", &img, o).unwrap().process().clone().unwrap().args().clone().unwrap()
        };
        assert_eq!(args(&RunOptions::default()), ["/ep", "a", "b"]);
        assert_eq!(
            args(&RunOptions { command: vec!["c".into()], ..Default::default() }),
            ["/ep", "c"]
        );
        assert_eq!(
            args(&RunOptions { entrypoint: Some("sh".into()), ..Default::default() }),
            ["sh"]
        );
        assert_eq!(
            args(&RunOptions {
                entrypoint: Some(String::new()),
                command: vec!["x".into()],
                ..Default::default()
            }),
            ["x"]
        );
        let s = build(
            "abcdef0123456789",
            &img,
            &RunOptions { env: vec!["X=2".into()], ..Default::default() },
        )
        .unwrap();
        let env = s.process().clone().unwrap().env().clone().unwrap();
        assert!(env.contains(&"PATH=/img".to_string()), "{env:?}");
        assert!(env.contains(&"X=2".to_string()));
        assert!(env.contains(&"HOSTNAME=abcdef012345".to_string()));
        assert_eq!(s.hostname().as_deref(), Some("abcdef012345"));
    }

    #[test]
    fn no_command_and_bad_values() {
        let img = image(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        assert!(matches!(build("a", &img, &RunOptions::default()), Err(SpecError::NoCommand)));
        let o = |f: &dyn Fn(&mut RunOptions)| {
            let mut o = RunOptions { command: vec!["x".into()], ..Default::default() };
            f(&mut o);
            build("a", &img, &o)
        };
        assert!(o(&|o| o.memory = Some(1024)).is_err());
        assert!(o(&|o| o.cpus = Some(-1.0)).is_err());
        assert!(o(&|o| o.workdir = Some("rel".into())).is_err());
        assert!(o(&|o| o.cap_add = vec!["NOPE".into()]).is_err());
        assert!(o(&|o| o.user = Some(":".into())).is_err());
        let s = o(&|o| {
            o.user = Some("1000:1001".into());
            o.memory = Some(64 << 20);
            o.cpus = Some(0.5);
        })
        .unwrap();
        let p = s.process().clone().unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1001));
        let r = s.linux().clone().unwrap().resources().clone().unwrap();
        assert_eq!(r.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().clone().unwrap().quota(), Some(50_000));
        let s = o(&|o| o.user = Some("nobody".into())).unwrap();
        assert_eq!(s.annotations().clone().unwrap()[USER_ANNOTATION], "nobody");
        // Device rules: Docker's for a plain container (deny first), none when privileged.
        let rules = r.devices().clone().unwrap();
        assert!(!rules[0].allow() && rules.len() == 13, "{rules:?}");
        let s = o(&|o| o.privileged = true).unwrap();
        let r = s.linux().clone().unwrap().resources().clone().unwrap();
        assert_eq!(r.devices(), &None);
    }

    #[test]
    fn caps() {
        let o = RunOptions {
            cap_drop: vec!["all".into()],
            cap_add: vec!["net_admin".into()],
            ..Default::default()
        };
        assert_eq!(capabilities(&o).unwrap(), vec![Capability::NetAdmin]);
        assert!(
            capabilities(&RunOptions { privileged: true, ..Default::default() }).unwrap().len()
                >= 40
        );
    }

    #[test]
    fn etc_mounts_are_added_once() {
        let mut s = Spec::default();
        let before = s.mounts().as_ref().map(|m| m.len()).unwrap_or(0);
        add_etc_mounts(&mut s, "abc").unwrap();
        add_etc_mounts(&mut s, "abc").unwrap();
        let m = s.mounts().clone().unwrap();
        assert_eq!(m.len(), before + 3);
        let hosts = m.iter().find(|m| m.destination() == Path::new("/etc/hosts")).unwrap();
        assert_eq!(hosts.source().as_deref(), Some(Path::new("/run/ironpod/etc/abc/hosts")));
        assert_eq!(hosts.typ().as_deref(), Some("bind"));
    }

    #[test]
    fn tmpfs_mounts() {
        let m = tmpfs_mount("/scratch:size=64m,exec,mode=1777").unwrap();
        assert_eq!(m.destination(), Path::new("/scratch"));
        assert_eq!(m.typ().as_deref(), Some("tmpfs"));
        let o = m.options().clone().unwrap();
        assert_eq!(o, ["nosuid", "nodev", "size=64m", "exec", "mode=1777"]);
        assert_eq!(tmpfs_mount("/t").unwrap().options().clone().unwrap().len(), 3);
        for bad in ["t", "/", "/a/../b", "/x:uid=0,bind", "/x:size=1g,remount", "/x:rw,ro"] {
            assert!(tmpfs_mount(bad).is_err(), "{bad}");
        }
    }
}
