//! The pod of a shim: one VM, its disks and the control session with its agent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ironpod_pods::agent_client::AgentClient;
use ironpod_pods::cgroup::{self, Limits, PodCgroup, Usage};
use ironpod_pods::disks::make_writable_disk_fast;
use ironpod_pods::paths::disk_serial;
use ironpod_pods::template;
use ironpod_pods::vm::{RunningVm, VmSpec};
use ironpod_protocol::RootfsDisks;
use ironpod_vmm::config::DiskConfig;
use ironpod_volumes::share::{self, PodShare};

use crate::copies::{self, CopyKind};
use crate::kube_dirs;
use crate::rootfs::LayerCache;

/// A booted pod VM.
#[derive(Debug)]
pub struct PodVm {
    vm: Mutex<RunningVm>,
    ctl: Mutex<AgentClient>,
    uds: PathBuf,
    pid: u32,
    spare: u8,
    layers: Vec<PathBuf>,
    writable: PathBuf,
    shm: Mutex<bool>,
    hot: Mutex<HotLayers>,
    /// The pod's runtime directory.
    dir: PathBuf,
    /// The pod's virtio-fs share: its containers' host files and directories (Kubernetes
    /// volumes).
    share: Mutex<Share>,
    /// Host files copied into the guest ([`crate::copies`]).
    copies: Mutex<Copies>,
    /// The pod's host cgroup (last: removed once the VMM and virtiofsd are gone).
    cgroup: Option<Arc<PodCgroup>>,
}

/// The host files a pod's guest has copies of.
#[derive(Debug, Default)]
struct Copies {
    /// Guest paths of the pod-wide copies made.
    pod: std::collections::HashSet<String>,
    /// Each container's own copies (guest path, host file), written back at its exit.
    containers: HashMap<String, Vec<(String, PathBuf)>>,
    /// Kubernetes volume directories copied, which the watcher keeps current.
    volumes: Vec<kube_dirs::Watched>,
    /// The watcher runs.
    watching: bool,
}

/// The agent calls that write a volume's version into the guest.
struct AgentFiles<'a>(&'a mut AgentClient);

impl kube_dirs::GuestFiles for AgentFiles<'_> {
    fn write(
        &mut self,
        path: &str,
        data: &[u8],
        attrs: ironpod_protocol::FileAttrs,
    ) -> Result<(), String> {
        self.0.write_file_with(path, data, attrs).map_err(|e| e.to_string())
    }
    fn symlink(&mut self, target: &str, path: &str) -> Result<(), String> {
        self.0.symlink(target, path).map_err(|e| e.to_string())
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), String> {
        self.0.rename(from, to).map_err(|e| e.to_string())
    }
    fn remove(&mut self, path: &str) -> Result<(), String> {
        self.0.remove_file(path).map_err(|e| e.to_string())
    }
    fn remove_tree(&mut self, path: &str) -> Result<(), String> {
        self.0.remove_tree(path).map_err(|e| e.to_string())
    }
}

/// The pod's virtio-fs share.
#[derive(Debug)]
enum Share {
    /// Not started: a pod restored from a template starts its virtiofsd and plugs it into
    /// the VM's spare virtio-fs device when a container first needs a host directory or a
    /// file that is not copied ([`crate::copies`]). Until then the VM's memory stays the template's memory file mapped copy on
    /// write, shared with every pod restored from it (plugging a server in moves it into a
    /// memory file of its own, which the server maps too).
    NotYet,
    /// The server runs and the VM is connected to it.
    Running(PodShare),
    /// The pod is stopping.
    Gone,
}

/// Layer disks attached to the running VM for containers whose image the pod was not
/// booted with.
#[derive(Debug, Default)]
struct HotLayers {
    /// How many containers use each attached disk (an entry at 0 stays attached when the
    /// guest could not let it go yet).
    refs: HashMap<PathBuf, usize>,
    /// The attached disks each container uses.
    users: HashMap<String, Vec<PathBuf>>,
}

/// Most spare disk slots a sandbox VM gets.
pub const MAX_SPARE_SLOTS: usize = 4;

/// The spare disk slots a pod VM booted with `boot_layers` layer disks can have: every
/// device needs one of the VMM's 19 interrupt lines (the layers, the writable disk, the
/// network card, the share, the balloon and vsock take theirs) and at most 16 disks exist.
pub fn spare_slots(boot_layers: usize) -> u8 {
    let by_irq = 19usize.saturating_sub(boot_layers + 5);
    let by_disks = ironpod_vmm::config::MAX_DISKS.saturating_sub(boot_layers + 1);
    by_irq.min(by_disks).min(MAX_SPARE_SLOTS) as u8
}

/// Whether a pod VM with `layers` and card `nic` can restore a template of `shape`: its
/// layers fit the template's slots, and its card (if any) has the template's MTU and an
/// address, through which the agent gives the card the veth's MAC.
fn fits_template(
    shape: &template::Shape,
    layers: &[PathBuf],
    nic: Option<&ironpod_net::podnet::GuestNic>,
) -> bool {
    layers.len() <= usize::from(shape.read_only_slots())
        && nic.is_none_or(|n| n.mtu == template::TEMPLATE_MTU && n.address.is_some())
}

/// The tap device of a pod VM in its network namespace.
const POD_TAP: &str = "tap0";

/// Where the pod's shared `/dev/shm` lives in the guest.
pub const POD_SHM: &str = "/run/ironpod/pod-shm";

fn str(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the pod's runtime and disk directories and its writable disk of `disk_bytes`;
/// returns the disk's path.
fn prepare_dirs(
    state_root: &Path,
    dir: &Path,
    disks: &Path,
    disk_bytes: u64,
) -> Result<PathBuf, String> {
    ironpod_images::private::private_run_root()
        .map_err(|e| format!("create {}: {e}", ironpod_images::private::RUN_ROOT))?;
    ironpod_images::private::private_dir(state_root)
        .map_err(|e| format!("create {}: {e}", state_root.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    std::fs::create_dir_all(disks).map_err(|e| format!("create {}: {e}", disks.display()))?;
    let writable = disks.join("rw.ext4");
    make_writable_disk_fast(state_root, &writable, disk_bytes).map_err(|e| e.to_string())?;
    Ok(writable)
}

/// The pod VM's card in network namespace `ns` (its tap in place of the namespace's
/// `eth0`), or none for a namespace with loopback only.
fn pod_nic(ns: &Path) -> Result<Option<ironpod_net::podnet::GuestNic>, String> {
    match ironpod_net::podnet::connect_tap(ns, "eth0", POD_TAP) {
        Err(ironpod_net::podnet::PodNetError::NoInterface(_)) => Ok(None),
        Err(e) => Err(format!("connect the pod VM to network namespace {}: {e}", ns.display())),
        Ok(nic) => Ok(Some(nic)),
    }
}

/// Starts the pod's share (virtio-fs, empty until volumes come) in its cgroup: its
/// virtiofsd, and the device that connects the VM to it.
fn start_share(
    dir: &Path,
    cgroup: Option<&PodCgroup>,
) -> Result<(PodShare, ironpod_vmm::config::FsConfig), String> {
    let socket = dir.join("fs.sock");
    let join = cgroup::joiner(cgroup).map_err(|e| format!("the pod's cgroup: {e}"))?;
    let pod_share = PodShare::start_with(&share_id(dir), &[], &socket, join)
        .map_err(|e| format!("the pod's volume share: {e}"))?;
    let share = ironpod_vmm::config::FsConfig {
        socket,
        tag: ironpod_protocol::SHARE_TAG.into(),
        queue_size: template::SHARE_QUEUE_SIZE,
    };
    Ok((pod_share, share))
}

/// Records the pod VM's VMM (for `delete` after this shim is gone: pid and start time, so a
/// reused pid is never hit), waits for its agent, and sets the restored guest's randomness,
/// clock and card up. Returns the VM and the agent session.
fn agent_ready(
    dir: &Path,
    mut vm: RunningVm,
    restored: bool,
    nic: Option<&ironpod_net::podnet::GuestNic>,
) -> Result<(RunningVm, AgentClient), String> {
    let start = ironpod_ids::process_start(vm.pid() as i32).unwrap_or(0);
    let pidfile = dir.join("vmm.pid");
    std::fs::write(&pidfile, format!("{} {start}\n", vm.pid()))
        .map_err(|e| format!("write {}: {e}", pidfile.display()))?;
    let mut ctl = vm
        .wait_agent(Duration::from_secs(120))
        .map_err(|e| format!("the pod VM's agent did not come up: {e}"))?;
    ctl.set_timeout(Duration::from_secs(60)).map_err(|e| e.to_string())?;
    if restored {
        // Before anything else: fresh randomness and the time of day.
        ctl.restored(template::guest_trace())
            .map_err(|e| format!("reseed the restored pod VM: {e}"))?;
    }
    if let Some(nic) = nic {
        let mut config = nic.network_config();
        if restored {
            // The template's card has the template's MAC: the agent gives it the veth's.
            for i in &mut config.interfaces {
                i.replaces = Some(template::TEMPLATE_MAC.into());
            }
        }
        ctl.configure_network(&config)
            .map_err(|e| format!("configure the pod VM's network: {e}"))?;
    }
    Ok((vm, ctl))
}

impl PodVm {
    /// Boots a VM of `size` with the image layer disks `layers` (bottom first), a fresh
    /// writable disk on the state root (never under /run, which is memory on most hosts) and
    /// `spare` empty slots for more layers, and waits for its agent. `dir` holds its runtime
    /// files.
    /// With `netns` (the pod's network namespace, as CNI left it), the VM runs there and its
    /// card takes the place of the namespace's `eth0`.
    pub fn boot(
        state_root: &Path,
        dir: &Path,
        layers: Vec<PathBuf>,
        spare: u8,
        netns: Option<PathBuf>,
        size: PodSize,
    ) -> Result<PodVm, String> {
        let disks = disk_dir(state_root, dir);
        let booted = Self::boot_on(state_root, dir, &disks, (layers, spare), netns, size);
        if booted.is_err() {
            // Whatever failed, the pod's disk on the state root goes with the attempt.
            let _ = std::fs::remove_dir_all(&disks);
        }
        booted
    }

    fn boot_on(
        state_root: &Path,
        dir: &Path,
        disks: &Path,
        (layers, spare): (Vec<PathBuf>, u8),
        netns: Option<PathBuf>,
        size: PodSize,
    ) -> Result<PodVm, String> {
        let writable = prepare_dirs(state_root, dir, disks, size.disk_bytes)?;
        let nic = netns.as_deref().map(pod_nic).transpose()?.flatten();
        // The pod's host cgroup: its VMM and its virtiofsd.
        let limits = Limits::for_vm(size.vcpus, size.memory_mib, None);
        let cgroup = PodCgroup::create(&cgroup_name(dir), &limits)
            .map_err(|e| format!("the pod's cgroup: {e}"))?
            .map(Arc::new);
        let shape = template::Shape {
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            card: nic.is_some(),
            share: true,
        };
        let template = match size.template && fits_template(&shape, &layers, nic.as_ref()) {
            true => template::get_or_make(state_root, shape)
                .map_err(|e| log::warn!("no pod template, the pod VM boots: {e}"))
                .ok(),
            false => None,
        };
        let restored = template.is_some();
        let disk_configs: Vec<DiskConfig> = layers
            .iter()
            .map(|p| DiskConfig { path: p.clone(), read_only: true })
            .chain(std::iter::once(DiskConfig { path: writable.clone(), read_only: false }))
            .collect();
        let mut s = match &template {
            Some(t) => t.restore_spec().map_err(str)?,
            None => VmSpec::with_defaults().map_err(str)?,
        };
        s.vcpus = size.vcpus;
        s.memory_mib = size.memory_mib;
        s.free_page_reporting = true;
        // ttrpc's worker threads come and go; the VM lives until the pod is deleted (and a
        // restarted shim must not lose it).
        s.die_with_starter = false;
        s.cgroup = cgroup.clone();
        let net: Vec<_> = nic
            .iter()
            .map(|n| ironpod_vmm::config::NetConfig {
                tap: POD_TAP.into(),
                // A restored card keeps the template's MAC until the agent sets the veth's.
                mac: (!restored).then(|| n.mac.clone()),
                mtu: n.mtu,
                netns: None,
            })
            .collect();
        if nic.is_some() {
            s.netns = netns.clone();
        }
        let (vm, share) = match restored {
            true => {
                // The template's slots take the disks and its card the tap; its share device
                // waits for a server (`Share::NotYet`).
                let mut vm =
                    RunningVm::start_deferred(&s).map_err(|e| format!("start the pod VM: {e}"))?;
                vm.boot(disk_configs, net, vec![], "")
                    .map_err(|e| format!("start the pod VM: {e}"))?;
                (vm, Share::NotYet)
            }
            false => {
                // A booted VM's memory is its own anyway: the share starts with it.
                let (pod_share, share) = start_share(dir, cgroup.as_deref())?;
                s.shared_memory = true;
                s.spare_disks = spare;
                s.disks = disk_configs;
                s.net = net;
                s.fs = vec![share];
                // What a template's guest has (the restored path takes it from the template).
                s.cmdline_extra = format!("{} ironpod.share", template::POD_CMDLINE);
                if template::guest_trace() {
                    s.cmdline_extra.push_str(" ironpod.trace");
                }
                let vm = RunningVm::start(&s).map_err(|e| format!("start the pod VM: {e}"))?;
                (vm, Share::Running(pod_share))
            }
        };
        let (vm, ctl) = agent_ready(dir, vm, restored, nic.as_ref())?;
        let spare = match restored {
            // Every slot the layers left is free for more.
            true => shape.read_only_slots() - layers.len() as u8,
            false => spare,
        };
        log::info!(
            "pod VM {} (pid {}): restored from a template: {restored}",
            share_id(dir),
            vm.pid()
        );
        Ok(PodVm {
            uds: vm.vsock_path().to_path_buf(),
            spare,
            pid: vm.pid(),
            vm: Mutex::new(vm),
            ctl: Mutex::new(ctl),
            layers,
            writable,
            shm: Mutex::new(false),
            hot: Mutex::new(HotLayers::default()),
            dir: dir.to_path_buf(),
            share: Mutex::new(share),
            copies: Mutex::new(Copies::default()),
            cgroup,
        })
    }

    /// Shares host file or directory `source` of container `id`'s mount `index` with the
    /// guest; returns its path there. Undone by [`PodVm::release`].
    pub fn share_path(
        &self,
        id: &str,
        index: usize,
        source: &Path,
        read_only: bool,
    ) -> Result<String, String> {
        let mut share = lock(&self.share);
        if let Share::NotYet = *share {
            let (pod_share, fs) = start_share(&self.dir, self.cgroup.as_deref())?;
            // On an error the server stops with `pod_share`; a later container tries again.
            lock(&self.vm)
                .attach_fs(fs)
                .map_err(|e| format!("plug the pod's volume share into its VM: {e}"))?;
            log::info!("pod VM {}: volume share plugged in", share_id(&self.dir));
            *share = Share::Running(pod_share);
        }
        match &*share {
            Share::Running(s) => s.bind(&format!("{id}+{index}"), source, read_only).map_err(str),
            _ => Err("the pod is stopping".into()),
        }
    }

    /// Copies host file `source` of container `id`'s mount `index` into the guest (see
    /// [`crate::copies`]); returns its path there. A pod-wide copy is made once.
    pub fn copy_file(
        self: &Arc<Self>,
        id: &str,
        index: usize,
        source: &Path,
        kind: CopyKind,
    ) -> Result<String, String> {
        let mut copies = lock(&self.copies);
        let guest = match kind {
            CopyKind::Pod => copies::pod_copy_path(source),
            CopyKind::WriteBack => copies::container_copy_path(id, index)?,
            CopyKind::Volume => kube_dirs::guest_dir(source),
        };
        if kind != CopyKind::WriteBack && copies.pod.contains(&guest) {
            return Ok(guest);
        }
        if kind == CopyKind::Volume {
            let version = kube_dirs::read_version(source)?;
            kube_dirs::install(&mut AgentFiles(&mut self.ctl()), &guest, None, &version)?;
            copies.pod.insert(guest.clone());
            let source = source.to_path_buf();
            copies.volumes.push(kube_dirs::Watched { source, base: guest.clone(), version });
            if !std::mem::replace(&mut copies.watching, true) {
                let pod = Arc::downgrade(self);
                std::thread::spawn(move || watch_volumes(pod));
            }
            return Ok(guest);
        }
        let (data, attrs) = copies::read_host_file(source)?;
        self.ctl().write_file_with(&guest, &data, attrs).map_err(|e| e.to_string())?;
        match kind {
            CopyKind::Pod | CopyKind::Volume => {
                copies.pod.insert(guest.clone());
            }
            CopyKind::WriteBack => {
                let mine = copies.containers.entry(id.to_string()).or_default();
                mine.push((guest.clone(), source.to_path_buf()));
            }
        }
        Ok(guest)
    }

    /// Writes container `id`'s copies that go back to the host into their host files (its
    /// init has exited). A failure is logged: the exit is reported either way.
    pub fn write_back(&self, id: &str) {
        let list = lock(&self.copies).containers.get(id).cloned().unwrap_or_default();
        for (guest, host) in list {
            let r = self
                .ctl()
                .read_file_upto(&guest, copies::MAX_COPIED_FILE)
                .map_err(|e| e.to_string())
                .and_then(|data| copies::write_host_file(&host, &data));
            if let Err(e) = r {
                log::warn!("{id}: {} not written back from the guest: {e}", host.display());
            }
        }
    }

    /// What the pod uses on the host (its VMM and virtiofsd); `None` without a cgroup.
    pub fn host_usage(&self) -> Option<Usage> {
        self.cgroup.as_ref().map(|c| c.usage())
    }

    /// The VMM's host pid (reported to containerd as the tasks' pid).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The agent's vsock socket (for more sessions).
    pub fn uds(&self) -> &Path {
        &self.uds
    }

    /// The control session.
    pub fn ctl(&self) -> MutexGuard<'_, AgentClient> {
        lock(&self.ctl)
    }

    /// The root disks of container `id` whose image layers are the snapshot directories
    /// `lowers` (bottom first). Layers the VM lacks are attached to its spare slots: a
    /// single missing layer as its own disk (shared with other images), several as one
    /// flattened disk of the whole image (one slot per image, not per layer). Undone by
    /// [`PodVm::release`].
    pub fn rootfs(
        &self,
        id: &str,
        cache: &LayerCache,
        lowers: &[PathBuf],
    ) -> Result<RootfsDisks, String> {
        let paths: Vec<PathBuf> =
            lowers.iter().map(|d| cache.disk_path(d)).collect::<Result<_, _>>().map_err(str)?;
        let mut hot = lock(&self.hot);
        let present =
            |hot: &HotLayers, p: &PathBuf| self.layers.contains(p) || hot.refs.contains_key(p);
        let missing: Vec<usize> = (0..paths.len()).filter(|&i| !present(&hot, &paths[i])).collect();
        let disks = match missing.as_slice() {
            [] => paths,
            [i] => {
                cache.disk_for(&lowers[*i]).map_err(str)?;
                paths
            }
            _ => vec![cache.flat_disk_for(lowers).map_err(str)?],
        };
        let mut mine: Vec<PathBuf> = Vec::new();
        let mut failure = None;
        for l in &disks {
            if self.layers.contains(l) || mine.contains(l) {
                continue;
            }
            if !hot.refs.contains_key(l) {
                let attached = if self.spare == 0 {
                    Err(format!(
                        "container {id} uses image layers the pod VM was not booted with, and \
                         this pod has no spare disk slots (only sandbox pods have them)"
                    ))
                } else {
                    let attached = lock(&self.vm).attach_disk(l);
                    attached.map_err(|e| {
                        // A VMM that died on the request (its exit may take a moment) says
                        // why in its end.
                        for _ in 0..20 {
                            if self.gone() {
                                break;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                        let end = self.exit_reason().map(|r| format!(" ({r})")).unwrap_or_default();
                        format!("attach layer disk {} for container {id}: {e}{end}", l.display())
                    })
                };
                if let Err(e) = attached {
                    failure = Some(e);
                    break;
                }
            }
            *hot.refs.entry(l.clone()).or_insert(0) += 1;
            mine.push(l.clone());
        }
        hot.users.insert(id.to_string(), mine);
        if let Some(e) = failure {
            drop(hot);
            self.release(id);
            return Err(e);
        }
        Ok(RootfsDisks {
            layers: disks.iter().map(|p| disk_serial(p)).collect(),
            writable: disk_serial(&self.writable),
        })
    }

    /// Gives back the layers container `id` used: a hot-attached disk no container uses
    /// any more is unmounted in the guest and detached from the VM (it stays attached
    /// when the guest still holds it).
    pub fn release(&self, id: &str) {
        if let Share::Running(share) = &*lock(&self.share) {
            // `+` is in no container id: this prefix is the container's entries only.
            share.unbind(&format!("{id}+"));
        }
        let mine = lock(&self.copies).containers.remove(id).unwrap_or_default();
        for (guest, _) in mine {
            if let Err(e) = self.ctl().remove_file(&guest) {
                log::warn!("{id}: the guest's copy {guest} stays: {e}");
            }
        }
        let mut hot = lock(&self.hot);
        let Some(mine) = hot.users.remove(id) else { return };
        for l in mine {
            let Some(n) = hot.refs.get_mut(&l) else { continue };
            *n = n.saturating_sub(1);
            if *n > 0 || self.gone() {
                continue;
            }
            let serial = disk_serial(&l);
            let r = self.ctl().release_disk(&serial).map_err(|e| e.to_string()).and_then(|()| {
                let detached = lock(&self.vm).detach_disk(&serial);
                detached.map_err(|e| e.to_string())
            });
            match r {
                Ok(()) => {
                    hot.refs.remove(&l);
                }
                Err(e) => log::warn!("layer disk {serial} stays attached: {e}"),
            }
        }
    }

    /// The pod's shared `/dev/shm` in the guest (a 64 MiB tmpfs, as Docker and the CRI
    /// give), mounted the first time a container asks for it.
    pub fn shm(&self) -> Result<&'static str, ironpod_pods::agent_client::ClientError> {
        let mut done = lock(&self.shm);
        if !*done {
            lock(&self.ctl).mount_with(
                "shm",
                POD_SHM,
                "tmpfs",
                false,
                Some("mode=1777,size=65536k"),
            )?;
            *done = true;
        }
        Ok(POD_SHM)
    }

    /// The guest tmpfs standing for the memory-backed emptyDir at host directory `source`
    /// ([`kube_dirs::memory_empty_dir`]), mounted the first time a container asks for it.
    pub fn memory_dir(&self, source: &Path, shape: kube_dirs::MemoryDir) -> Result<String, String> {
        let guest = kube_dirs::tmpfs_dir(source);
        let mut copies = lock(&self.copies);
        if copies.pod.contains(&guest) {
            return Ok(guest);
        }
        let a = shape.attrs;
        let options =
            format!("size={},mode={:o},uid={},gid={}", shape.bytes.max(4096), a.mode, a.uid, a.gid);
        lock(&self.ctl)
            .mount_with("tmpfs", &guest, "tmpfs", false, Some(&options))
            .map_err(|e| e.to_string())?;
        copies.pod.insert(guest.clone());
        Ok(guest)
    }

    /// The VMM has exited.
    pub fn gone(&self) -> bool {
        lock(&self.vm).try_exit().is_some()
    }

    /// Why the VMM is gone (its exit status and the end of its log), if it is.
    pub fn exit_reason(&self) -> Option<String> {
        let mut vm = lock(&self.vm);
        let status = vm.try_exit()?;
        Some(vm.end_reason(status))
    }

    /// Stops the VM: asks the agent to power off, kills the VMM if it does not; then takes
    /// the share down.
    pub fn stop(&self) {
        {
            let mut vm = lock(&self.vm);
            if vm.try_exit().is_none() {
                let mut ctl = lock(&self.ctl);
                let _ = ctl.set_timeout(Duration::from_secs(2));
                if vm.shutdown(&mut ctl, Duration::from_secs(5)).is_err() {
                    vm.kill();
                }
            }
        }
        drop(std::mem::replace(&mut *lock(&self.share), Share::Gone));
        if let Some(d) = self.writable.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The pod's watcher of its copied Kubernetes volumes ([`crate::kube_dirs`]): replays each
/// update the kubelet makes on the host in the guest, until the pod stops.
fn watch_volumes(pod: std::sync::Weak<PodVm>) {
    loop {
        std::thread::sleep(kube_dirs::WATCH_PERIOD);
        let Some(pod) = pod.upgrade() else { return };
        if matches!(*lock(&pod.share), Share::Gone) || pod.gone() {
            return;
        }
        let mut copies = lock(&pod.copies);
        for w in &mut copies.volumes {
            match kube_dirs::current(&w.source) {
                Ok(name) if name == w.version.name => continue,
                // Gone (the pod's volumes are being torn down) or in the middle of a write:
                // the next look will tell.
                Err(_) => continue,
                Ok(_) => {}
            }
            let updated = kube_dirs::read_version(&w.source).and_then(|v| {
                let mut ctl = pod.ctl();
                kube_dirs::install(&mut AgentFiles(&mut ctl), &w.base, Some(&w.version), &v)?;
                Ok(v)
            });
            match updated {
                Ok(v) => {
                    log::info!("{}: now {} in the guest", w.source.display(), v.name);
                    w.version = v;
                }
                Err(e) => log::warn!("{}: update not copied yet: {e}", w.source.display()),
            }
        }
    }
}

/// The size of a pod VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSize {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory.
    pub memory_mib: u64,
    /// The writable disk.
    pub disk_bytes: u64,
    /// Restore the pod template of its shape instead of booting (when its layers and card
    /// fit the template's).
    pub template: bool,
}

/// Where the writable disk of the pod whose runtime directory is `dir` lives.
fn disk_dir(state_root: &Path, dir: &Path) -> PathBuf {
    state_root.join("pods").join(share_id(dir))
}

/// The share of the pod whose directory is `dir` is named after it (the sandbox id).
fn share_id(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The pod's host cgroup is named after its directory too.
fn cgroup_name(dir: &Path) -> String {
    format!("pod-{}", share_id(dir))
}

/// Ends the VMM recorded in a pod directory whose shim is gone, takes its share down and
/// removes the directory and the pod's writable disk under `state_root`.
pub fn kill_orphan(state_root: &Path, dir: &Path) {
    if let Ok(s) = std::fs::read_to_string(dir.join("vmm.pid")) {
        let mut it = s.split_whitespace().map(|x| x.parse::<i64>().ok());
        if let (Some(Some(pid)), Some(Some(start))) = (it.next(), it.next()) {
            let pid = pid as i32;
            if pid > 1 && ironpod_ids::process_start(pid) == Some(start) {
                // SAFETY: kill(2) on a pid we checked is the VMM we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    share::teardown(&share_id(dir));
    PodCgroup::remove(&cgroup_name(dir));
    let _ = std::fs::remove_dir_all(disk_dir(state_root, dir));
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot that fails after the writable disk was made leaves no disk on the state root.
    #[test]
    fn a_failed_boot_takes_its_disk_along() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test makes disks with mkfs.ext4 and must run as root");
        }
        let state = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        let dir = run.path().join("sandbox-1");
        let size = PodSize { vcpus: 1, memory_mib: 128, disk_bytes: 64 << 20, template: true };
        let netns = Some(PathBuf::from("/nonexistent/netns"));
        let e = PodVm::boot(state.path(), &dir, vec![], 0, netns, size).err().unwrap();
        assert!(e.contains("network namespace"), "{e}");
        assert!(!disk_dir(state.path(), &dir).exists(), "the disk stayed");
    }
}
