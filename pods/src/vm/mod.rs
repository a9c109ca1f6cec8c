//! Starting an `ironpod-vmm` process for one microVM and managing its life.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironpod_protocol::AGENT_VSOCK_PORT;
use ironpod_vmm::config::{
    DiskConfig, LateConfig, RestoreConfig, SerialOutput, VmConfig, VsockConfig,
};

use crate::agent_client::{AgentClient, ClientError};
use crate::assets::{self, MissingAsset};
use crate::cgroup::{Limits, PodCgroup, Usage};
use crate::jail::{self, Jail, JailError};
use crate::spawn::{self, Process, Spawn};
use crate::vmm_api::{self, VmmApiError};

mod jailed;
use jailed::{jail_cards, jail_config, jail_fs};

/// Where per-VM runtime directories live.
pub const RUN_DIR: &str = "/run/ironpod/vms";
/// Kernel command line every ironpod guest gets: serial console, reset on reboot and on
/// panic (the VMM turns a reset into its exit), and a quiet boot (every console byte costs
/// a VM exit).
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet";
/// Guest CID. The vsock device is emulated per VMM, so every VM can use the same one.
pub const GUEST_CID: u32 = 3;
/// File name of the VMM's control socket in the VM's runtime directory.
const API_SOCKET: &str = "api.sock";

/// How long a session from [`RunningVm::wait_agent`] waits for each answer.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors managing a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A guest asset is missing.
    #[error(transparent)]
    Asset(#[from] MissingAsset),
    /// Runtime directory or config file.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The VMM could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// Binary path.
        binary: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The agent could not be reached.
    #[error("{0}")]
    Agent(#[from] ClientError),
    /// The VMM did not exit in time after shutdown.
    #[error("the VMM did not exit within {0:?} after shutdown; killed")]
    ShutdownTimeout(Duration),
    /// The late configuration could not be handed to a deferred VMM.
    #[error("cannot hand the VMM its disks: {0}")]
    Late(String),
    /// The VMM's jail.
    #[error(transparent)]
    Jail(#[from] JailError),
    /// The VMM's control socket.
    #[error(transparent)]
    Api(#[from] VmmApiError),
}

fn prep(path: &Path) -> impl FnOnce(std::io::Error) -> VmError {
    let path = path.to_path_buf();
    move |source| VmError::Prepare { path, source }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory.
    pub memory_mib: u64,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initramfs with the agent as /init.
    pub initrd: PathBuf,
    /// Appended to [`BASE_CMDLINE`].
    pub cmdline_extra: String,
    /// Disks.
    pub disks: Vec<DiskConfig>,
    /// Console destination; `None` keeps it in the VM's runtime directory (console.log).
    pub serial: Option<SerialOutput>,
    /// Return memory the guest frees to the host (virtio-balloon free page reporting).
    pub free_page_reporting: bool,
    /// Kill the VMM when the process that started it ends (PR_SET_PDEATHSIG): right for a
    /// CLI or monitor, wrong for a server that must not lose its VMs when it restarts (the
    /// containerd shim), which ends them itself.
    pub die_with_starter: bool,
    /// Network cards (tap devices in `netns`, or in the caller's namespace).
    pub net: Vec<ironpod_vmm::config::NetConfig>,
    /// Network namespace the VMM runs in (a `/run/netns/NAME` or `/proc/PID/ns/net`
    /// path): its tap devices live there.
    pub netns: Option<PathBuf>,
    /// Empty read-only disk slots for layers attached while the pod runs; with any, the
    /// VMM also listens on its control socket ([`RunningVm::api_path`]).
    pub spare_disks: u8,
    /// Guest memory in a shared memory file (needed for virtio-fs).
    pub shared_memory: bool,
    /// virtio-fs devices (need `shared_memory`).
    pub fs: Vec<ironpod_vmm::config::FsConfig>,
    /// Run the VMM confined: in its jail ([`crate::jail`]: its own user, no capabilities,
    /// its own namespaces and a root holding only its files), under its seccomp filters,
    /// in a host cgroup. Always on for pods; off only to measure what confinement costs
    /// (`ironpod vm check --unconfined`, for `cargo xtask bench boot`).
    pub jail: bool,
    /// The pod's host cgroup, shared with its virtiofsd; `None`: a jailed VM gets one of its
    /// own, sized by `vcpus`, `memory_mib` and `cpus` ([`crate::cgroup`]).
    pub cgroup: Option<Arc<PodCgroup>>,
    /// CPU time the VM may use, in CPUs (its own cgroup's cpu limit).
    pub cpus: Option<f64>,
    /// Empty writable disk slots (see `spare_disks`).
    pub spare_writable_disks: u8,
    /// Network cards without a tap, for a restored VM's taps.
    pub spare_nets: Vec<ironpod_vmm::config::SpareNetConfig>,
    /// virtio-fs devices without a backend, for a restored VM's shares (need
    /// `shared_memory`).
    pub spare_fs: Vec<ironpod_vmm::config::SpareFsConfig>,
    /// Start from this snapshot (host paths) instead of booting `kernel` and `initrd`.
    pub restore: Option<RestoreConfig>,
    /// A directory the VMM may write a snapshot of its VM into ([`RunningVm::snapshot`]):
    /// a template's VM. Its files may be as large as the guest's memory.
    pub snapshot_dir: Option<PathBuf>,
}

impl VmSpec {
    /// One vCPU, 256 MiB, the default kernel and initramfs.
    pub fn with_defaults() -> Result<Self, VmError> {
        Self::with_defaults_or(None, None)
    }

    /// Like [`VmSpec::with_defaults`], with an explicit kernel and/or initramfs.
    pub fn with_defaults_or(
        kernel: Option<PathBuf>,
        initrd: Option<PathBuf>,
    ) -> Result<Self, VmError> {
        let kernel = match kernel {
            Some(k) => k,
            None => assets::kernel()?,
        };
        let initrd = match initrd {
            Some(i) => i,
            None => assets::initramfs()?,
        };
        Ok(VmSpec {
            vcpus: 1,
            memory_mib: 256,
            kernel,
            initrd,
            cmdline_extra: String::new(),
            disks: Vec::new(),
            serial: None,
            free_page_reporting: false,
            die_with_starter: true,
            spare_disks: 0,
            net: Vec::new(),
            netns: None,
            shared_memory: false,
            fs: Vec::new(),
            jail: true,
            cgroup: None,
            cpus: None,
            spare_writable_disks: 0,
            spare_nets: Vec::new(),
            spare_fs: Vec::new(),
            restore: None,
            snapshot_dir: None,
        })
    }
}

fn unique_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

/// A running VMM process. Dropping it kills the VMM and removes its runtime directory.
#[derive(Debug)]
pub struct RunningVm {
    child: Process,
    /// Set when started with [`RunningVm::start_deferred`] until [`RunningVm::boot`].
    late: Option<fs::File>,
    dir: PathBuf,
    uds: PathBuf,
    started: Instant,
    memory_mib: u64,
    exit: Option<ExitStatus>,
    /// The VMM's jail (unmounted when this is dropped).
    jail: Option<Jail>,
    /// Keeps the jailed VMM's parent thread (see [`spawn_in_new_pid_namespace`]).
    _parent: Option<std::sync::mpsc::Sender<()>>,
    /// Disks attached through the control socket: serial and path in the jail.
    attached: Vec<(String, PathBuf)>,
    /// The host cgroup the VMM runs in (removed when its last holder is dropped).
    cgroup: Option<Arc<PodCgroup>>,
    /// Where the VMM writes a snapshot, as it sees it (`VmSpec::snapshot_dir`).
    snapshot_dir: Option<PathBuf>,
}

impl RunningVm {
    /// Writes the VM config and starts `ironpod-vmm`.
    pub fn start(spec: &VmSpec) -> Result<Self, VmError> {
        Self::spawn(spec, false)
    }

    /// Starts `ironpod-vmm` so that it sets the VM up and then waits for
    /// [`RunningVm::boot`] with more disks and command line: the process start and the VM
    /// set-up happen while the caller still prepares the disks.
    pub fn start_deferred(spec: &VmSpec) -> Result<Self, VmError> {
        Self::spawn(spec, true)
    }

    /// Hands a deferred VMM its disks, network cards, virtio-fs devices and command-line
    /// words: the guest boots.
    pub fn boot(
        &mut self,
        disks: Vec<DiskConfig>,
        net: Vec<ironpod_vmm::config::NetConfig>,
        fs: Vec<ironpod_vmm::config::FsConfig>,
        cmdline: &str,
    ) -> Result<(), VmError> {
        let Some(mut stdin) = self.late.take() else {
            return Err(VmError::Late(
                "the VMM was not started deferred, or booted already".into(),
            ));
        };
        let pid = self.pid();
        let (disks, net, fs) = match &mut self.jail {
            None => (disks, net, fs),
            Some(jail) => {
                let vmm_ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
                let mut disks = disks;
                for d in &mut disks {
                    d.path = jail.expose_disk(&d.path, d.read_only)?;
                }
                (disks, jail_cards(jail, net, Some(&vmm_ns))?, jail_fs(jail, fs)?)
            }
        };
        let late = LateConfig { disks, net, fs, cmdline: cmdline.to_string() };
        let mut text = serde_json::to_vec(&late).map_err(|e| VmError::Late(e.to_string()))?;
        text.push(b'\n');
        std::io::Write::write_all(&mut stdin, &text).map_err(|e| {
            let log = self.vmm_log();
            VmError::Late(if log.is_empty() { e.to_string() } else { format!("{e}: {log}") })
        })
    }

    fn spawn(spec: &VmSpec, deferred: bool) -> Result<Self, VmError> {
        let id = unique_id();
        let dir = Path::new(RUN_DIR).join(&id);
        ironpod_images::private::private_run_root()
            .map_err(prep(Path::new(ironpod_images::private::RUN_ROOT)))?;
        fs::create_dir_all(&dir).map_err(prep(&dir))?;
        let made = Self::spawn_in(spec, deferred, &dir, &id);
        if made.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }

    fn spawn_in(spec: &VmSpec, deferred: bool, dir: &Path, id: &str) -> Result<Self, VmError> {
        // A VM's start counts from here: its jail and cgroup are part of it.
        let started = Instant::now();
        let cgroup = match (&spec.cgroup, spec.jail) {
            (Some(c), _) => Some(c.clone()),
            (None, true) => {
                let limits = Limits::for_vm(spec.vcpus, spec.memory_mib, spec.cpus);
                PodCgroup::create(&format!("vm-{id}"), &limits)
                    .map_err(|e| VmError::Prepare { path: "the VM's cgroup".into(), source: e })?
                    .map(Arc::new)
            }
            (None, false) => None,
        };
        let mut jail = match spec.jail {
            true => Some(Jail::create(dir, u64::from(std::process::id()))?),
            false => None,
        };
        let uds = dir.join("v.sock");
        let mut cmdline = BASE_CMDLINE.to_string();
        if !spec.cmdline_extra.trim().is_empty() {
            cmdline.push(' ');
            cmdline.push_str(spec.cmdline_extra.trim());
        }
        // Paths as the VMM sees them: in its jail, or on the host.
        let jailed = jail.is_some();
        let inside = |name: &str| match jailed {
            true => Path::new("/").join(name),
            false => dir.join(name),
        };
        let restoring = spec.restore.is_some();
        let mut config = VmConfig {
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            // A restored VM's kernel is in its memory file.
            kernel: if restoring { PathBuf::new() } else { spec.kernel.clone() },
            initrd: (!restoring).then(|| spec.initrd.clone()),
            cmdline,
            disks: spec.disks.clone(),
            vsock: Some(VsockConfig { cid: GUEST_CID, uds_path: inside("v.sock") }),
            serial: spec
                .serial
                .clone()
                .unwrap_or_else(|| SerialOutput::File(dir.join("console.log"))),
            free_page_reporting: spec.free_page_reporting,
            net: spec.net.clone(),
            spare_disks: spec.spare_disks,
            spare_writable_disks: spec.spare_writable_disks,
            spare_nets: spec.spare_nets.clone(),
            api_socket: (spec.spare_disks > 0
                || spec.spare_writable_disks > 0
                || spec.snapshot_dir.is_some())
            .then(|| inside(API_SOCKET)),
            shared_memory: spec.shared_memory,
            fs: spec.fs.clone(),
            spare_fs: spec.spare_fs.clone(),
            restore: spec.restore.clone(),
        };
        let mut stdout = None;
        let binary = assets::vmm_binary();
        let mut snapshot_dir = spec.snapshot_dir.clone();
        if let Some(jail) = &mut jail {
            stdout = jail_config(jail, &mut config, spec.netns.as_deref(), &binary)?;
            if let Some(d) = &snapshot_dir {
                snapshot_dir = Some(jail.bind_dir(d, "/snapshot")?);
            }
        }
        let cfg_path = dir.join("vm.json");
        let text = serde_json::to_vec_pretty(&config)
            .map_err(|e| VmError::Prepare { path: cfg_path.clone(), source: e.into() })?;
        fs::write(&cfg_path, text).map_err(prep(&cfg_path))?;
        let stderr = fs::File::create(dir.join("vmm.log")).map_err(prep(&dir.join("vmm.log")))?;
        tracing::debug!(?binary, config = %cfg_path.display(), jail = jail.is_some(), "starting VMM");
        let mut cmd = vmm_command(jail.is_some(), &binary, &inside("vm.json"), deferred)
            .map_err(|source| VmError::Spawn { binary: binary.clone(), source })?;
        if deferred {
            cmd.stdin_pipe();
        }
        if let Some(f) = stdout {
            cmd.stdout(f);
        }
        cmd.stderr(stderr);
        // Open until the spawn below: the child enters it before exec.
        let netns_file = spec.netns.as_ref().map(|ns| fs::File::open(ns).map_err(prep(ns)));
        let netns_file = netns_file.transpose()?;
        if let Some(f) = &netns_file {
            // SAFETY: the hook makes one system call.
            unsafe { cmd.pre_exec(spawn::setns_hook(f)) };
        }
        // The child starts inside the cgroup (or joins it first thing), so all it makes and
        // allocates is counted there.
        let cg_files =
            cgroup.as_deref().map(|c| Ok::<_, std::io::Error>((c.v2_dir()?, c.procs_files()?)));
        let (cg_dir, cg_procs) = cg_files
            .transpose()
            .map_err(|e| VmError::Prepare { path: "the VM's cgroup".into(), source: e })?
            .unwrap_or_default();
        cmd.cgroup(cg_dir, cg_procs);
        let spawned = match &jail {
            Some(jail) => {
                let mut max_file = config
                    .disks
                    .iter()
                    .filter_map(|d| fs::metadata(jail.host_path(&d.path)).ok())
                    .map(|m| m.len())
                    .fold(crate::disks::WRITABLE_DISK_BYTES, u64::max);
                // A snapshot's memory file (a header page, then the guest's RAM), or the
                // memory file guest RAM moves into when a virtio-fs server is plugged in.
                max_file = max_file.max((spec.memory_mib << 20) + (1 << 20));
                let entry =
                    jail.entry(spec.netns.is_none(), spec.vcpus, max_file, spec.die_with_starter);
                // SAFETY: `Entry::enter` makes system calls only (see its docs).
                unsafe { cmd.pre_exec(Box::new(move || entry.enter())) };
                spawn::in_new_pid_namespace(cmd).map(|(c, stdin, p)| (c, stdin, Some(p)))
            }
            None => {
                if spec.die_with_starter {
                    // SAFETY: prctl is async-signal-safe. The VMM dies with the thread that
                    // started it, so a killed monitor or CLI never leaves a VM behind.
                    unsafe { cmd.pre_exec(spawn::die_with_parent_hook()) };
                }
                cmd.start().map(|(c, stdin)| (c, stdin, None))
            }
        };
        let (child, late, parent) =
            spawned.map_err(|source| VmError::Spawn { binary: binary.clone(), source })?;
        drop(netns_file);
        let vm = RunningVm {
            child,
            late,
            dir: dir.to_path_buf(),
            uds,
            started,
            memory_mib: spec.memory_mib,
            exit: None,
            jail,
            _parent: parent,
            attached: Vec::new(),
            cgroup,
            snapshot_dir,
        };
        if let Some(j) = &vm.jail {
            j.record_owner(vm.pid()).map_err(prep(j.root()))?;
        }
        Ok(vm)
    }

    /// When the VMM was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The VMM's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The VM's runtime directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The VMM's control socket (present when the VM has spare disk slots).
    pub fn api_path(&self) -> PathBuf {
        self.dir.join(API_SOCKET)
    }

    /// The host side of the vsock device.
    pub fn vsock_path(&self) -> &Path {
        &self.uds
    }

    /// The VMM's own error output so far (one line on failure).
    pub fn vmm_log(&self) -> String {
        fs::read_to_string(self.dir.join("vmm.log")).unwrap_or_default().trim().to_string()
    }

    /// How the VMM ended, for a user: `ironpod-vmm was killed by its seccomp filter (syscall
    /// N)` when its filter stopped it, else its exit status and the end of its log.
    pub fn end_reason(&self, status: ExitStatus) -> String {
        use std::os::unix::process::ExitStatusExt;
        if let Some(u) = self.host_usage().filter(|u| u.oom_kills > 0) {
            if status.signal() == Some(libc::SIGKILL) {
                return format!(
                    "ironpod-vmm was killed by the pod's host memory limit ({} MiB)",
                    u.memory_limit >> 20
                );
            }
        }
        end_reason(status, &self.vmm_log())
    }

    /// Exit status, if the VMM has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits for the agent (retrying while the guest boots) and returns a session.
    pub fn wait_agent(&mut self, timeout: Duration) -> Result<AgentClient, VmError> {
        let deadline = Instant::now() + timeout;
        let uds = self.uds.clone();
        let client =
            AgentClient::connect(&uds, AGENT_VSOCK_PORT, deadline, || match self.try_exit() {
                None => Ok(()),
                Some(status) => {
                    let log = self.vmm_log();
                    Err(format!(
                        " ({status}){}",
                        if log.is_empty() { String::new() } else { format!(": {log}") }
                    ))
                }
            })
            .map_err(|e| match e {
                ClientError::Timeout(_) => ClientError::Timeout(timeout),
                e => e,
            })?;
        let mut client = client;
        // The set-up that follows (disks, network, the container) may be slow on a host
        // that starts many pods at once: a minute per answer before the guest counts as hung.
        client.set_timeout(AGENT_CALL_TIMEOUT)?;
        Ok(client)
    }

    /// Waits up to `timeout` for the VMM to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks the agent to end the VM and waits for the VMM to exit (killing it after
    /// `timeout`).
    pub fn shutdown(
        &mut self,
        client: &mut AgentClient,
        timeout: Duration,
    ) -> Result<ExitStatus, VmError> {
        client.shutdown()?;
        match self.wait_exit(timeout) {
            Some(s) => Ok(s),
            None => {
                self.kill();
                Err(VmError::ShutdownTimeout(timeout))
            }
        }
    }

    /// Sends the VMM SIGKILL without waiting for it to be gone ([`Self::kill`] waits).
    pub fn start_kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
        }
    }

    /// Kills the VMM at once.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// Attaches the layer disk `disk` (read-only) to a free spare slot of the running VM
    /// through its control socket; returns the serial the guest sees.
    pub fn attach_disk(&mut self, disk: &Path) -> Result<String, VmError> {
        let api = self.api_path();
        let Some(jail) = &mut self.jail else {
            return Ok(vmm_api::attach_disk(&api, disk)?);
        };
        let inside = jail.expose_disk(disk, true)?;
        match vmm_api::attach_disk(&api, &inside) {
            Ok(serial) => {
                self.attached.push((serial.clone(), inside));
                Ok(serial)
            }
            Err(e) => {
                let _ = jail.unbind(&inside);
                Err(e.into())
            }
        }
    }

    /// Empties the slot holding the disk with `serial` (see [`RunningVm::attach_disk`]).
    pub fn detach_disk(&mut self, serial: &str) -> Result<(), VmError> {
        vmm_api::detach_disk(&self.api_path(), serial)?;
        if let Some(i) = self.attached.iter().position(|(s, _)| s == serial) {
            let (_, inside) = self.attached.remove(i);
            if let Some(jail) = &self.jail {
                jail.unbind(&inside)?;
            }
        }
        Ok(())
    }

    /// Plugs the file system server `fs` into the running VM's spare virtio-fs device with
    /// its tag (moving private guest memory into a shared memory file first).
    pub fn attach_fs(&mut self, fs: ironpod_vmm::config::FsConfig) -> Result<(), VmError> {
        let api = self.api_path();
        let fs = match &self.jail {
            Some(jail) => jail_fs(jail, vec![fs])?.remove(0),
            None => fs,
        };
        Ok(vmm_api::attach_fs(&api, &fs.tag, &fs.socket)?)
    }

    /// Pauses the VM and writes its snapshot into `VmSpec::snapshot_dir` (files `state` and
    /// `memory`, which must not exist); the VM stays paused.
    pub fn snapshot(&self) -> Result<(), VmError> {
        let Some(dir) = &self.snapshot_dir else {
            return Err(VmError::Late("the VM was started without a snapshot directory".into()));
        };
        let api = self.api_path();
        vmm_api::pause(&api)?;
        vmm_api::snapshot(&api, &dir.join("state"), &dir.join("memory"))?;
        Ok(())
    }

    /// The network namespace a jailed VMM runs in (`/proc/PID/ns/net`): the one it was given
    /// or a new, empty one.
    pub fn own_netns(&self) -> Option<PathBuf> {
        self.jail.as_ref().map(|_| PathBuf::from(format!("/proc/{}/ns/net", self.pid())))
    }

    /// What the VM's host cgroup (VMM, virtiofsd) uses now; `None` without one.
    pub fn host_usage(&self) -> Option<Usage> {
        self.cgroup.as_ref().map(|c| c.usage())
    }

    /// The VMM's user id when it runs jailed.
    pub fn uid(&self) -> Option<u32> {
        self.jail.as_ref().map(Jail::uid)
    }

    /// Resident memory of the VMM process itself, excluding guest RAM (KiB).
    pub fn vmm_overhead_kib(&self) -> Option<u64> {
        overhead_kib(self.pid(), self.memory_mib)
    }
}

/// Sums the RSS of every mapping of `pid` except guest RAM, which the VMM marks
/// `MADV_DONTFORK` (`dc` in smaps' VmFlags; nothing else of the VMM's is). `memory_mib`:
/// the guest's memory, for a VMM of an older build, whose RAM mappings are told by their
/// sizes.
pub fn overhead_kib(pid: u32, memory_mib: u64) -> Option<u64> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let total = memory_mib << 20;
    let gap = 0xc000_0000u64;
    let guest_sizes: Vec<u64> = if total <= gap { vec![total] } else { vec![gap, total - gap] };
    let (mut size, mut rss, mut sum) = (0u64, 0u64, 0u64);
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                size = b.saturating_sub(a);
                rss = 0;
                continue;
            }
        }
        match first {
            "Rss:" => rss = parts.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
            // The last line of each mapping.
            "VmFlags:" => {
                let guest = parts.any(|f| f == "dc") || guest_sizes.contains(&size);
                if !guest {
                    sum += rss;
                }
            }
            _ => {}
        }
    }
    Some(sum)
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        self.kill();
        self._parent = None;
        self.jail = None;
        self.cgroup = None;
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The VMM's command: in its jail (`/ironpod-vmm`, with nothing of the launcher's
/// environment but what the VMM's diagnostics read), or unconfined (`binary`, without
/// seccomp filters: a measuring mode).
fn vmm_command(
    jailed: bool,
    binary: &Path,
    config: &Path,
    deferred: bool,
) -> std::io::Result<Spawn> {
    let mut args = vec![std::ffi::OsStr::new("--config"), config.as_os_str()];
    if deferred {
        args.push("--late-config".as_ref());
    }
    let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = match jailed {
        true => ["RUST_LOG", "RUST_BACKTRACE"]
            .into_iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (k.into(), v)))
            .collect(),
        false => {
            args.push("--no-seccomp".as_ref());
            std::env::vars_os().collect()
        }
    };
    let program = if jailed { Path::new(jail::VMM_IN_JAIL) } else { binary };
    Spawn::new(program.as_os_str(), &args, env)
}

/// How a VMM that exited with `status`, having written `log`, ended (see
/// [`RunningVm::end_reason`]).
pub fn end_reason(status: ExitStatus, log: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    const MARK: &str = "killed by its seccomp filter (syscall ";
    if status.code() == Some(ironpod_vmm::seccomp::SECCOMP_EXIT) {
        if let Some(rest) = log.lines().rev().find_map(|l| l.split_once(MARK).map(|(_, r)| r)) {
            let nr: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
            return format!("ironpod-vmm was killed by its seccomp filter (syscall {nr})");
        }
    }
    if status.signal() == Some(libc::SIGSYS) {
        return "ironpod-vmm was killed by its seccomp filter (SIGSYS)".into();
    }
    if log.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {log}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_of_this_process_is_positive() {
        assert!(overhead_kib(std::process::id(), 1).unwrap() > 0);
    }

    #[test]
    fn a_seccomp_kill_is_named() {
        use std::os::unix::process::ExitStatusExt;
        let killed = ExitStatus::from_raw(ironpod_vmm::seccomp::SECCOMP_EXIT << 8);
        let log = "ironpod-vmm: killed by its seccomp filter (syscall 165)";
        assert_eq!(
            end_reason(killed, log),
            "ironpod-vmm was killed by its seccomp filter (syscall 165)"
        );
        let sigsys = ExitStatus::from_raw(libc::SIGSYS);
        assert_eq!(end_reason(sigsys, ""), "ironpod-vmm was killed by its seccomp filter (SIGSYS)");
        let failed = ExitStatus::from_raw(1 << 8);
        assert_eq!(end_reason(failed, "ironpod-vmm: boom"), "exit status: 1: ironpod-vmm: boom");
        assert_eq!(end_reason(failed, ""), "exit status: 1");
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(unique_id(), unique_id());
    }
}
