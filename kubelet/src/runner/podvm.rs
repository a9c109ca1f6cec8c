//! Booting a pod's VM: its images (pulled as the containers' policies say, leased for the
//! pod), every layer disk they need and one writable disk, the host cgroup, the VMM, the
//! namespace's network (its tap made beside the VMM's start) and the `hostPath` share; then
//! the guest's network, name-service files and published host ports.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ironpod_images::{ImageStore, RegistryOptions};
use ironpod_kube::meta::ObjectMeta;
use ironpod_kube::pod::{Container, ExecAction, PodSpec, Probe, PullPolicy};
use ironpod_net::{self as network, NetworkStore, NewNetwork, PodNetwork, PortMapping};
use ironpod_pods::agent_client::AgentClient;
use ironpod_pods::cgroup::{Limits, PodCgroup};
use ironpod_pods::health::HealthConfig;
use ironpod_pods::paths::disk_serial;
use ironpod_pods::vm::{RunningVm, VmSpec};
use ironpod_vmm::config::{DiskConfig, FsConfig};
use ironpod_volumes::share::PodShare;
use oci_spec::image::ImageConfiguration;

use crate::paths;
use crate::spec::{hostname, POD_ETC_ID};

/// Guest memory when no container sets a limit.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Guest memory on top of the containers' limits (kernel, agent, page cache).
pub const MEMORY_OVERHEAD_MIB: u64 = 128;
/// Layer disks a pod VM can take (every device takes one of the VMM's 19 interrupt lines;
/// the writable disk, the card, the share, the balloon and vsock take theirs).
pub const MAX_LAYER_DISKS: usize = 14;
/// The suffix of the cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// A container's image as the pod uses it.
#[derive(Debug, Clone)]
pub struct ImageUse {
    /// Its digest.
    pub digest: String,
    /// Its configuration.
    pub config: ImageConfiguration,
    /// Its layer disks, bottom first.
    pub layers: Vec<PathBuf>,
    /// Its `HEALTHCHECK` as a liveness probe (see [`liveness_of`]).
    pub liveness: Option<Probe>,
}

/// An image's `HEALTHCHECK` (Docker's `config.Healthcheck`) as the liveness probe of a
/// container that has none of its own: the test as an exec probe, the interval as its
/// period, the timeout, the retries as its failure threshold, the start period as its
/// initial delay (failures in it never count, as with Docker); seconds rounded up.
/// `None` for `NONE`, no healthcheck, or a malformed one.
pub fn liveness_of(config: &serde_json::Value) -> Option<Probe> {
    let health = HealthConfig::from_image(config.get("config")?.get("Healthcheck")?)?;
    let command = health.argv()?;
    let secs = |d: std::time::Duration| d.as_nanos().div_ceil(1_000_000_000).max(1) as i64;
    let start = std::time::Duration::from_nanos(health.start_period_ns);
    Some(Probe {
        exec: Some(ExecAction { command }),
        initial_delay_seconds: (!start.is_zero()).then(|| secs(start)),
        period_seconds: Some(secs(health.interval())),
        timeout_seconds: Some(secs(health.timeout())),
        failure_threshold: Some(i64::from(health.retries())),
        success_threshold: Some(1),
        ..Probe::default()
    })
}

/// The pull policy Kubernetes gives a container that sets none.
pub fn pull_policy(c: &Container) -> PullPolicy {
    c.image_pull_policy.unwrap_or_else(|| {
        let last = c.image.rsplit('/').next().unwrap_or(&c.image);
        match last.split_once(':') {
            _ if c.image.contains('@') => PullPolicy::IfNotPresent,
            Some((_, "latest")) | None => PullPolicy::Always,
            Some(_) => PullPolicy::IfNotPresent,
        }
    })
}

/// Makes sure each container's image is present (pulling as its policy says) and leases it
/// for the pod; `report` hears of each pull (`Pulling`, `Pulled`).
pub fn images(
    root: &Path,
    pod_id: &str,
    containers: &[&Container],
    report: &mut dyn FnMut(&str, &str),
) -> Result<Vec<ImageUse>, String> {
    let store = ImageStore::open(root).map_err(|e| e.to_string())?;
    let holder = paths::lease_holder(pod_id);
    let mut out = Vec::new();
    for c in containers {
        let present = store.resolve(&c.image).is_ok();
        let pull = match pull_policy(c) {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never if !present => {
                return Err(format!(
                    "ErrImageNeverPull: container image \"{}\" is not present with pull policy of Never",
                    c.image
                ))
            }
            PullPolicy::Never => false,
        };
        if pull {
            report("Pulling", &format!("Pulling image \"{}\"", c.image));
            let opts = RegistryOptions {
                platform: Some("linux/amd64".into()),
                quiet: true,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            match store.pull(&c.image, &opts) {
                Ok(_) => report(
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{}\" in {:.3}s",
                        c.image,
                        started.elapsed().as_secs_f64()
                    ),
                ),
                Err(e) => {
                    return Err(format!("ErrImagePull: failed to pull image \"{}\": {e}", c.image))
                }
            }
        } else {
            report(
                "Pulled",
                &format!("Container image \"{}\" already present on machine", c.image),
            );
        }
        let digest = store.lease(&holder, &c.image).map_err(|e| e.to_string())?;
        let layers = store.layer_disks_of(&digest).map_err(|e| e.to_string())?;
        let config = store.config_of(&digest).map_err(|e| e.to_string())?;
        let raw = store.raw_config(&digest).map_err(|e| e.to_string())?;
        let liveness = liveness_of(&raw);
        out.push(ImageUse { digest: digest.to_string(), config, layers, liveness });
    }
    Ok(out)
}

/// The pod VM's size: the largest of the init containers' limits and the sum of the
/// containers' (memory plus the guest's own overhead; CPUs rounded up).
pub fn vm_size(pod: &PodSpec) -> Result<(u8, u64, Option<f64>), String> {
    let limit =
        |c: &Container, k: &str| c.resources.as_ref().and_then(|r| r.limits.get(k)).cloned();
    let mut mem = 0u64;
    let mut cpu = 0u64;
    let (mut mem_set, mut cpu_set) = (false, false);
    for c in &pod.containers {
        if let Some(q) = limit(c, "memory") {
            mem = mem.saturating_add(q.bytes()?);
            mem_set = true;
        }
        if let Some(q) = limit(c, "cpu") {
            cpu = cpu.saturating_add(q.millicpu()?);
            cpu_set = true;
        }
    }
    for c in &pod.init_containers {
        if let Some(q) = limit(c, "memory") {
            mem = mem.max(q.bytes()?);
            mem_set = true;
        }
        if let Some(q) = limit(c, "cpu") {
            cpu = cpu.max(q.millicpu()?);
            cpu_set = true;
        }
    }
    let memory_mib = match mem_set {
        true => ((mem >> 20) + MEMORY_OVERHEAD_MIB).max(DEFAULT_MEMORY_MIB),
        false => DEFAULT_MEMORY_MIB,
    };
    let host = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let cpus = cpu_set.then(|| cpu as f64 / 1000.0);
    let vcpus = cpus.map(|c| c.ceil().max(1.0) as u64).unwrap_or(1).min(host).min(32) as u8;
    Ok((vcpus, memory_mib, cpus))
}

/// The label that marks a network as a namespace's.
pub const NAMESPACE_LABEL: &str = "io.ironpod.kube.namespace";

/// The name of a namespace's network: `kube-NAMESPACE`, shortened with a hash for names
/// that would pass a network name's 64 characters.
pub fn network_name(namespace: &str) -> String {
    let name = format!("kube-{namespace}");
    if name.len() <= 64 {
        return name;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    namespace.hash(&mut h);
    format!("kube-{}-{:016x}", &namespace[..40], h.finish())
}

/// The network of a namespace's pods, if it has one (a network of that name that is not
/// labelled as the namespace's is not it).
pub fn namespace_network_of(root: &Path, namespace: &str) -> Option<String> {
    let name = network_name(namespace);
    let store = NetworkStore::open(root).ok()?;
    let net = store.find(&name).ok()?;
    (net.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(namespace)).then_some(name)
}

/// The network of a namespace's pods (made when first needed).
pub fn namespace_network(root: &Path, namespace: &str) -> Result<String, String> {
    let name = network_name(namespace);
    let mut store = NetworkStore::open(root).map_err(|e| e.to_string())?;
    let ours = |n: &ironpod_net::Network| {
        n.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(namespace)
    };
    if let Ok(n) = store.find(&name) {
        return match ours(&n) {
            true => Ok(name),
            false => Err(format!(
                "network {name:?} exists and is not namespace {namespace:?}'s: remove or rename it"
            )),
        };
    }
    let labels = [(NAMESPACE_LABEL.to_string(), namespace.to_string())].into();
    match store.create(&NewNetwork { name: &name, labels, ..Default::default() }) {
        Ok(_) => Ok(name),
        // Another pod of the namespace made it meanwhile.
        Err(_) if store.find(&name).is_ok_and(|n| ours(&n)) => Ok(name),
        Err(e) => Err(format!("the namespace's network: {e}")),
    }
}

/// A booted pod VM.
pub struct PodVm {
    /// The VMM.
    pub vm: RunningVm,
    /// The control session with the agent.
    pub ctl: AgentClient,
    /// The VM's vsock socket.
    pub uds: PathBuf,
    /// The pod's network.
    pub net: Option<PodNetwork>,
    /// The `hostPath` share.
    pub share: Option<PodShare>,
    /// The writable disk's serial.
    pub writable: String,
    /// The guest paths of the `hostPath` volumes, by volume name.
    pub shared: BTreeMap<String, String>,
    /// Host ports published.
    pub ports: Vec<PortMapping>,
    /// Their proxies (they stop when the VM's run ends).
    pub publication: Option<ironpod_net::proxy::Publication>,
    /// When the VM started (RFC 3339).
    pub started_at: String,
}

impl PodVm {
    /// The pod's address.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.net.as_ref().map(|n| n.address)
    }
}

/// What a boot needs.
pub struct BootInput<'a> {
    /// The state root.
    pub root: &'a Path,
    /// The pod's id (its uid without dashes).
    pub pod_id: &'a str,
    /// Its metadata.
    pub meta: &'a ObjectMeta,
    /// Its spec.
    pub pod: &'a PodSpec,
    /// Its containers' images, init containers first.
    pub images: &'a [ImageUse],
    /// The network to join.
    pub network: &'a str,
}

/// Boots the pod's VM.
pub fn boot(i: &BootInput<'_>) -> Result<PodVm, String> {
    let mut layers: Vec<PathBuf> = Vec::new();
    for p in i.images.iter().flat_map(|u| &u.layers) {
        if !layers.contains(p) {
            layers.push(p.clone());
        }
    }
    if layers.len() > MAX_LAYER_DISKS {
        return Err(format!(
            "the pod's images have {} distinct layers; a pod VM takes at most {MAX_LAYER_DISKS}",
            layers.len()
        ));
    }
    let dir = paths::pod_dir(i.root, i.meta.uid.as_deref().unwrap_or_default());
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let writable = dir.join("disk.ext4");
    if !writable.exists() {
        ironpod_pods::disks::make_writable_disk_fast(
            i.root,
            &writable,
            ironpod_pods::disks::WRITABLE_DISK_BYTES,
        )
        .map_err(|e| e.to_string())?;
    }
    let (vcpus, memory_mib, cpus) = vm_size(i.pod)?;
    let cgroup = PodCgroup::create(i.pod_id, &Limits::for_vm(vcpus, memory_mib, cpus))
        .map_err(|e| format!("the pod's cgroup: {e}"))?
        .map(Arc::new);
    let host = crate::volumes::host_dirs(i.pod)?;
    let mut spec = VmSpec::with_defaults().map_err(|e| e.to_string())?;
    spec.vcpus = vcpus;
    spec.memory_mib = memory_mib;
    spec.cpus = cpus;
    spec.cgroup = cgroup.clone();
    spec.shared_memory = !host.is_empty();
    spec.free_page_reporting = true;
    spec.cmdline_extra = ironpod_pods::template::POD_CMDLINE.into();
    let mut vm = RunningVm::start_deferred(&spec).map_err(|e| e.to_string())?;
    let share = match host.is_empty() {
        true => None,
        false => {
            let join =
                ironpod_pods::cgroup::joiner(cgroup.as_deref()).map_err(|e| e.to_string())?;
            let dirs: Vec<_> = host.iter().map(|(_, d)| d.clone()).collect();
            Some(
                PodShare::start_with(i.pod_id, &dirs, &vm.dir().join("fs.sock"), join)
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    let shared = host
        .iter()
        .enumerate()
        .map(|(n, (name, _))| {
            (
                name.clone(),
                format!("{}/{}", ironpod_protocol::SHARE_DIR, ironpod_volumes::share_entry(n)),
            )
        })
        .collect();
    // The network comes up beside the boot: the tap first, then the address and veth.
    let tap =
        network::prepare_tap(i.pod_id, vm.own_netns().as_deref()).map_err(|e| e.to_string())?;
    let joining = {
        let (root, name, id, tap) =
            (i.root.to_path_buf(), i.network.to_string(), i.pod_id.to_string(), tap.clone());
        std::thread::spawn(move || network::connect(&root, &name, &id, &tap))
    };
    let serials: Vec<String> = layers.iter().map(|p| disk_serial(p)).collect();
    let mut cmdline = String::new();
    if !serials.is_empty() && serials.len() * 21 < 1200 {
        cmdline.push_str(&format!("ironpod.layers={} ", serials.join(",")));
    }
    let writable_serial = disk_serial(&writable);
    cmdline.push_str(&format!("ironpod.rw={writable_serial}"));
    let mut fs = Vec::new();
    if let Some(s) = &share {
        fs.push(FsConfig {
            socket: s.socket().to_path_buf(),
            tag: ironpod_protocol::SHARE_TAG.into(),
            queue_size: ironpod_pods::template::SHARE_QUEUE_SIZE,
        });
        cmdline.push_str(" ironpod.share");
    }
    let disks = layers
        .iter()
        .map(|p| DiskConfig { path: p.clone(), read_only: true })
        .chain(std::iter::once(DiskConfig { path: writable.clone(), read_only: false }))
        .collect();
    let booted = vm.boot(disks, vec![tap.net_config()], fs, &cmdline).map_err(|e| e.to_string());
    let net = joining.join().map_err(|_| "the network thread panicked".to_string())?;
    let net = match (booted, net) {
        (Ok(()), Ok(n)) => n,
        (Err(e), _) | (_, Err(ironpod_net::NetworkError::Plumb(e))) => {
            network::disconnect(i.root, i.pod_id);
            return Err(e);
        }
        (_, Err(e)) => {
            network::disconnect(i.root, i.pod_id);
            return Err(e.to_string());
        }
    };
    let started_at = ironpod_images::time::now_rfc3339();
    let uds = vm.vsock_path().to_path_buf();
    let mut ctl = match vm.wait_agent(Duration::from_secs(120)) {
        Ok(c) => c,
        Err(e) => {
            network::disconnect(i.root, i.pod_id);
            return Err(format!("the pod's VM did not come up: {e}"));
        }
    };
    let name_files = guest_network(&mut ctl, i, &net);
    let ports = name_files.and_then(|()| publish(i.pod, &net));
    match ports {
        Ok((ports, publication)) => Ok(PodVm {
            vm,
            ctl,
            uds,
            net: Some(net),
            share,
            writable: writable_serial,
            shared,
            ports,
            publication,
            started_at,
        }),
        Err(e) => {
            network::disconnect(i.root, i.pod_id);
            Err(e)
        }
    }
}

/// The guest's card and the pod's name-service files (`/etc/hosts` with the pod's name,
/// `resolv.conf` with the namespace's search domains).
fn guest_network(ctl: &mut AgentClient, i: &BootInput<'_>, net: &PodNetwork) -> Result<(), String> {
    ctl.configure_network(&net.guest_config()).map_err(|e| format!("the pod's network: {e}"))?;
    write_name_files(ctl, i.meta, i.pod, Some(net.address), &[])
}

/// Writes the pod's `/etc/hosts`, `hostname` and `resolv.conf` in the guest; `extra`:
/// (address, names) lines, the namespace's services.
pub fn write_name_files(
    ctl: &mut AgentClient,
    meta: &ObjectMeta,
    pod: &PodSpec,
    address: Option<Ipv4Addr>,
    extra: &[(String, Vec<String>)],
) -> Result<(), String> {
    let host = hostname(meta, pod);
    let mut hosts = String::from("# Kubernetes-managed hosts file (ironpod).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(a) = address {
        hosts.push_str(&format!("{a}\t{host}\n"));
    }
    for (ip, names) in extra {
        hosts.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    let ns = meta.namespace();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut resolv =
        format!("search {ns}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n");
    for n in network::egress::nameservers(&host_resolv) {
        resolv.push_str(&format!("nameserver {n}\n"));
    }
    resolv.push_str("options ndots:5\n");
    for (name, text) in
        [("hosts", hosts), ("hostname", format!("{host}\n")), ("resolv.conf", resolv)]
    {
        ctl.write_file(&ironpod_pods::spec::etc_file(POD_ETC_ID, name), text.as_bytes())
            .map_err(|e| format!("write /etc/{name}: {e}"))?;
    }
    Ok(())
}

/// Publishes the containers' `hostPort`s (on 127.0.0.1 unless `hostIP` says otherwise), for
/// as long as the returned publication is kept.
type Published = (Vec<PortMapping>, Option<ironpod_net::proxy::Publication>);

fn publish(pod: &PodSpec, net: &PodNetwork) -> Result<Published, String> {
    let mut maps = Vec::new();
    for p in pod.containers.iter().flat_map(|c| &c.ports) {
        let Some(host_port) = p.host_port else { continue };
        let host_ip = match &p.host_ip {
            Some(ip) => ip.parse().map_err(|_| format!("bad hostIP {ip:?}"))?,
            None => Ipv4Addr::LOCALHOST,
        };
        maps.push(PortMapping {
            host_ip,
            host_port: host_port as u16,
            pod_port: p.container_port as u16,
            protocol: match p.protocol.unwrap_or_default() {
                ironpod_kube::pod::PortProtocol::TCP => network::Protocol::Tcp,
                ironpod_kube::pod::PortProtocol::UDP => network::Protocol::Udp,
            },
        });
    }
    if maps.is_empty() {
        return Ok((maps, None));
    }
    let (maps, p) = network::proxy::publish_until_dropped(&maps, &net.net_ns, net.address)
        .map_err(|e| e.to_string())?;
    Ok((maps, Some(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironpod_kube::quantity::Quantity;

    #[test]
    fn an_image_healthcheck_is_a_liveness_probe() {
        let cfg = |h: serde_json::Value| serde_json::json!({"config": {"Healthcheck": h}});
        let p = liveness_of(&cfg(serde_json::json!({
            "Test": ["CMD-SHELL", "test -f /ok"],
            "Interval": 2_500_000_000u64,
            "Timeout": 1_000_000_000u64,
            "StartPeriod": 5_000_000_000u64,
            "Retries": 2
        })))
        .unwrap();
        assert_eq!(
            p.exec.unwrap().command,
            ["/bin/sh", "-c", "test -f /ok"].map(String::from).to_vec()
        );
        assert_eq!(p.period_seconds, Some(3));
        assert_eq!(p.timeout_seconds, Some(1));
        assert_eq!(p.initial_delay_seconds, Some(5));
        assert_eq!(p.failure_threshold, Some(2));
        // Docker's defaults: 30 s, 30 s, 3 retries, no start period.
        let p = liveness_of(&cfg(serde_json::json!({"Test": ["CMD", "true"]}))).unwrap();
        assert_eq!(
            (p.period_seconds, p.timeout_seconds, p.failure_threshold, p.initial_delay_seconds),
            (Some(30), Some(30), Some(3), None)
        );
        assert_eq!(liveness_of(&cfg(serde_json::json!({"Test": ["NONE"]}))), None);
        assert_eq!(liveness_of(&cfg(serde_json::json!({"Test": ["BAD"]}))), None);
        assert_eq!(liveness_of(&serde_json::json!({"config": {}})), None);
    }

    fn with_limits(mem: Option<&str>, cpu: Option<&str>) -> Container {
        let mut limits = BTreeMap::new();
        if let Some(m) = mem {
            limits.insert("memory".to_string(), Quantity(m.into()));
        }
        if let Some(c) = cpu {
            limits.insert("cpu".to_string(), Quantity(c.into()));
        }
        Container {
            resources: Some(ironpod_kube::pod::Resources { limits, requests: BTreeMap::new() }),
            ..Default::default()
        }
    }

    #[test]
    fn sizes_from_limits() {
        let pod = PodSpec { containers: vec![Container::default()], ..Default::default() };
        assert_eq!(vm_size(&pod).unwrap(), (1, DEFAULT_MEMORY_MIB, None));
        let pod = PodSpec {
            containers: vec![
                with_limits(Some("256Mi"), Some("500m")),
                with_limits(Some("128Mi"), None),
            ],
            init_containers: vec![with_limits(Some("512Mi"), None)],
            ..Default::default()
        };
        let (vcpus, mem, cpus) = vm_size(&pod).unwrap();
        assert_eq!((vcpus, mem, cpus), (1, 512 + MEMORY_OVERHEAD_MIB, Some(0.5)));
    }

    #[test]
    fn network_names() {
        assert_eq!(network_name("default"), "kube-default");
        let long = "n".repeat(63);
        let n = network_name(&long);
        assert!(n.len() <= 64 && n.starts_with("kube-nnn"), "{n}");
        assert_ne!(n, network_name(&"m".repeat(63)));
    }

    #[test]
    fn pull_policies() {
        let c = |image: &str| Container { image: image.into(), ..Default::default() };
        assert_eq!(pull_policy(&c("demo")), PullPolicy::Always);
        assert_eq!(pull_policy(&c("demo:latest")), PullPolicy::Always);
        assert_eq!(pull_policy(&c("localhost:5000/demo")), PullPolicy::Always);
        assert_eq!(pull_policy(&c("localhost:5000/demo:1.0")), PullPolicy::IfNotPresent);
        assert_eq!(pull_policy(&c("demo@sha256:abcd")), PullPolicy::IfNotPresent);
        let mut never = c("demo");
        never.image_pull_policy = Some(PullPolicy::Never);
        assert_eq!(pull_policy(&never), PullPolicy::Never);
    }
}
