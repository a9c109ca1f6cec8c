//! Building and running one microVM from a [`VmConfig`]: KVM VM, guest memory, devices,
//! kernel, vCPUs, and the event loop that runs until the guest stops.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use linux_loader::loader::Cmdline;
use vm_memory::GuestAddress;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::{boot, cpuid, layout, mptable, regs};
use crate::bus::{lock, Bus, BusDevice};
use crate::config::{VmConfig, MAX_CMDLINE_LEN};
use crate::control::{share_memory, VmController};
use crate::devices::{i8042::I8042, serial};
use crate::snapshot::vm::VmSnapshot;
use crate::vcpu::{Vcpu, VcpuStop};
use crate::virtio::net::socket::TapSocket;
use crate::virtio::{blk::Block, mmio, GuestMemoryMmap, Interrupt, VirtioDevice};

/// Everything that can stop a VM from being built or running.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// /dev/kvm is missing or unusable.
    #[error("cannot open /dev/kvm: {0}")]
    Kvm(kvm_ioctls::Error),
    /// KVM lacks a capability we rely on.
    #[error("KVM lacks required capability {0}")]
    MissingCap(&'static str),
    /// A KVM call failed while building the VM.
    #[error("KVM {what}: {source}")]
    KvmCall {
        /// Which call.
        what: &'static str,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be allocated.
    #[error("cannot allocate {mib} MiB of guest memory: {reason}")]
    Memory {
        /// Requested size.
        mib: u64,
        /// Why.
        reason: String,
    },
    /// Kernel, initrd or boot structures.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// vCPU register setup.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// MP table.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    /// A device could not be created.
    #[error("device: {0}")]
    Device(String),
    /// The kernel command line is invalid.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// Event loop or other host resources.
    #[error("{0}")]
    Host(String),
    /// A snapshot could not be restored.
    #[error("restore: {0}")]
    Restore(String),
}

fn kvm_call(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::KvmCall { what, source }
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset or powered off: exit status 0.
    Clean,
    /// The guest or KVM failed: non-zero exit status.
    Failed(String),
    /// The VMM received a termination signal.
    Signal(i32),
}

impl VmExit {
    /// Process exit status for this outcome.
    pub fn code(&self) -> i32 {
        match self {
            VmExit::Clean => 0,
            VmExit::Failed(_) => 1,
            VmExit::Signal(s) => 128 + s,
        }
    }
}

/// Watches the events that end the VM: a vCPU stopping, the i8042 reset line, signals.
struct ExitWatcher {
    reset_evt: EventFd,
    vcpu_evt: EventFd,
    signal_fd: Option<crate::signals::TerminationSignals>,
    stops: Receiver<VcpuStop>,
    exit: Arc<Mutex<Option<VmExit>>>,
}

impl ExitWatcher {
    fn set(&self, e: VmExit) {
        let mut slot = lock(&self.exit);
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

impl MutEventSubscriber for ExitWatcher {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            0 => {
                let _ = self.reset_evt.read();
                self.set(VmExit::Clean);
            }
            1 => {
                let _ = self.vcpu_evt.read();
                while let Ok(stop) = self.stops.try_recv() {
                    match stop {
                        VcpuStop::GuestShutdown => self.set(VmExit::Clean),
                        other => self.set(VmExit::Failed(other.to_string())),
                    }
                }
            }
            _ => {
                if let Some(sfd) = &self.signal_fd {
                    if let Some(signo) = sfd.read() {
                        self.set(VmExit::Signal(signo));
                    }
                }
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::with_data(&self.reset_evt, 0, EventSet::IN));
        let _ = ops.add(Events::with_data(&self.vcpu_evt, 1, EventSet::IN));
        if let Some(sfd) = &self.signal_fd {
            let _ = ops.add(Events::with_data(sfd, 2, EventSet::IN));
        }
    }
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A VM ready to run.
pub struct Vm {
    _kvm: Arc<Kvm>,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    pio: Bus,
    mmio: Bus,
    serial: Option<Arc<Mutex<serial::Serial>>>,
    subscribers: Vec<Subscriber>,
    cmdline: Cmdline,
    next_mmio: u64,
    next_irq: u32,
    cleanup: Vec<PathBuf>,
    config: VmConfig,
    disks: Vec<Arc<Mutex<Block>>>,
    spare_disks: Vec<Arc<Mutex<Block>>>,
    /// Network cards without a tap (`spare_nets`).
    spare_nets: Vec<Arc<Mutex<crate::virtio::net::Net<TapSocket>>>>,
    /// virtio-fs devices without a backend (`spare_fs`).
    spare_fs: Vec<Arc<Mutex<crate::virtio::fs::Fs>>>,
    /// Disks of a restored VM's late configuration: they go into spare slots once the
    /// slots' saved state is back (see [`Vm::add_late`]).
    pending_disks: Vec<crate::config::DiskConfig>,
    /// The virtio devices' transports, in the order of their MMIO windows.
    transports: Vec<Arc<Mutex<mmio::MmioTransport>>>,
    /// The snapshot this VM is restored from.
    restored: Option<Box<VmSnapshot>>,
}

/// A random locally administered unicast MAC address (02:…).
/// A random locally administered MAC address, from getrandom(2): a jailed VMM has no
/// /dev/urandom.
fn random_mac() -> std::io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom fills at most the 5 bytes of the buffer it is given.
    let n = unsafe { libc::getrandom(mac[1..].as_mut_ptr().cast(), 5, 0) };
    if n != 5 {
        return Err(std::io::Error::last_os_error());
    }
    mac[0] = 0x02;
    Ok(mac)
}

/// The MAC address `mac`, or a random one.
fn card_mac(mac: Option<&str>) -> Result<[u8; 6], VmmError> {
    match mac {
        Some(m) => crate::config::parse_mac(m)
            .ok_or_else(|| VmmError::Device(format!("bad MAC address {m:?}"))),
        None => random_mac().map_err(|e| VmmError::Host(format!("random MAC: {e}"))),
    }
}

fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

impl Vm {
    /// Creates the KVM VM, guest memory and devices for `config`.
    pub fn new(config: VmConfig) -> Result<Self, VmmError> {
        config.validate().map_err(|e| VmmError::Host(e.to_string()))?;
        if let Some(host) = host_memory_mib() {
            if config.memory_mib > host {
                return Err(VmmError::Memory {
                    mib: config.memory_mib,
                    reason: format!("the host has only {host} MiB"),
                });
            }
        }
        let restored = match &config.restore {
            Some(r) => {
                let snap: VmSnapshot = crate::snapshot::state_file::read(&r.state)
                    .map_err(|e| VmmError::Restore(e.to_string()))?;
                crate::snapshot::vm::check_compatible(&snap.config, &config)
                    .map_err(VmmError::Restore)?;
                Some(Box::new(snap))
            }
            None => None,
        };
        // Fail on missing files before touching KVM, with the path in the message.
        let boot_files = std::iter::once(("kernel", &config.kernel))
            .chain(config.initrd.iter().map(|p| ("initrd", p)))
            .filter(|_| restored.is_none());
        for (what, p) in boot_files {
            if !p.is_file() {
                return Err(VmmError::Boot(boot::BootError::Open {
                    what,
                    path: p.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                }));
            }
        }
        let kvm = Kvm::new().map_err(VmmError::Kvm)?;
        for (cap, name) in [
            (Cap::Irqchip, "IRQCHIP"),
            (Cap::Ioeventfd, "IOEVENTFD"),
            (Cap::Irqfd, "IRQFD"),
            (Cap::UserMemory, "USER_MEMORY"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmmError::MissingCap(name));
            }
        }
        let vm = Arc::new(kvm.create_vm().map_err(kvm_call("create VM"))?);
        let size = config.memory_mib << 20;
        let mem = match (&restored, &config.restore) {
            (Some(snap), Some(r)) => {
                crate::snapshot::memory_file::restore(&r.memory, &snap.memory, config.shared_memory)
                    .map_err(|e| VmmError::Restore(e.to_string()))?
            }
            _ => crate::memory::guest_memory(size, config.shared_memory)
                .map_err(|reason| VmmError::Memory { mib: config.memory_mib, reason })?,
        };
        crate::memory::register(&vm, &mem).map_err(kvm_call("set memory region"))?;
        vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS)
            .map_err(kvm_call("set identity map address"))?;
        vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
            .map_err(kvm_call("set TSS address"))?;
        vm.create_irq_chip().map_err(kvm_call("create irqchip"))?;
        vm.create_pit2(kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() })
            .map_err(kvm_call("create PIT"))?;

        let mut cmdline =
            Cmdline::new(MAX_CMDLINE_LEN).map_err(|e| VmmError::Cmdline(e.to_string()))?;
        if !config.cmdline.trim().is_empty() {
            cmdline
                .insert_str(config.cmdline.trim())
                .map_err(|e| VmmError::Cmdline(e.to_string()))?;
        }
        let mut vmm = Vm {
            _kvm: Arc::new(kvm),
            vm,
            mem,
            pio: Bus::new(),
            mmio: Bus::new(),
            serial: None,
            subscribers: Vec::new(),
            cmdline,
            next_mmio: layout::VIRTIO_MMIO_START,
            next_irq: layout::IRQ_BASE,
            cleanup: Vec::new(),
            config,
            disks: Vec::new(),
            spare_disks: Vec::new(),
            spare_nets: Vec::new(),
            spare_fs: Vec::new(),
            pending_disks: Vec::new(),
            transports: Vec::new(),
            restored,
        };
        vmm.add_legacy_devices()?;
        for disk in vmm.config.disks.clone() {
            vmm.add_disk(&disk.path, disk.read_only)?;
        }
        let (ro, rw) = (vmm.config.spare_disks, vmm.config.spare_writable_disks);
        for read_only in
            std::iter::repeat_n(true, ro.into()).chain(std::iter::repeat_n(false, rw.into()))
        {
            let dev = Arc::new(Mutex::new(
                Block::empty(read_only).map_err(|e| VmmError::Device(e.to_string()))?,
            ));
            vmm.add_virtio(dev.clone())?;
            vmm.spare_disks.push(dev);
        }
        for net in vmm.config.net.clone() {
            vmm.add_net(&net)?;
        }
        for spare in vmm.config.spare_nets.clone() {
            let mac = card_mac(spare.mac.as_deref())?;
            let socket = TapSocket::empty().map_err(|e| VmmError::Host(e.to_string()))?;
            let dev = crate::virtio::net::Net::new(socket, mac, spare.mtu)
                .map_err(|e| VmmError::Device(format!("virtio-net: {e}")))?;
            let dev = Arc::new(Mutex::new(dev));
            vmm.add_virtio(dev.clone())?;
            vmm.spare_nets.push(dev);
        }
        for fs in vmm.config.fs.clone() {
            vmm.add_fs(&fs)?;
        }
        for spare in vmm.config.spare_fs.clone() {
            let dev = crate::virtio::fs::Fs::empty(&spare.tag, spare.queue_size)
                .map_err(|e| VmmError::Device(format!("virtio-fs {}: {e}", spare.tag)))?;
            let dev = Arc::new(Mutex::new(dev));
            vmm.add_virtio(dev.clone())?;
            vmm.spare_fs.push(dev);
        }
        if vmm.config.free_page_reporting {
            let dev = crate::virtio::balloon::Balloon::new()
                .map_err(|e| VmmError::Device(format!("balloon: {e}")))?;
            vmm.add_virtio(Arc::new(Mutex::new(dev)))?;
        }
        if let Some(vsock) = vmm.config.vsock.clone() {
            let dev = crate::virtio::vsock::Vsock::new(vsock.cid as u64, vsock.uds_path.clone())
                .map_err(|e| VmmError::Device(format!("vsock: {e}")))?;
            vmm.cleanup.push(vsock.uds_path);
            vmm.add_virtio(Arc::new(Mutex::new(dev)))?;
        }
        Ok(vmm)
    }

    /// Adds what came after the set-up (`--late-config`): more disks, more command line.
    /// Called before [`Vm::run`]. A restored VM's late configuration fills its spare slots
    /// instead ([`crate::config::LateConfig::parse`] checked that it fits): taps go into the
    /// spare cards and virtio-fs backends into the spare virtio-fs devices now, disks into the spare slots once their saved state is back, before
    /// the guest runs (it learns of them through configuration-change interrupts).
    pub fn add_late(&mut self, late: crate::config::LateConfig) -> Result<(), VmmError> {
        if self.restored.is_some() {
            for (net, slot) in late.net.iter().zip(&self.spare_nets) {
                let tap = open_tap(&net.tap, net.netns.as_deref())
                    .map_err(|e| VmmError::Device(format!("tap {}: {e}", net.tap)))?;
                lock(slot)
                    .backend_mut()
                    .plug(tap)
                    .map_err(|e| VmmError::Device(format!("tap {}: {e}", net.tap)))?;
            }
            if !late.fs.is_empty() && !crate::memory::is_shared(&self.mem) {
                // Restored private (copy on write): the backends map guest memory too.
                self.mem = share_memory(&self.mem, &self.transports).map_err(VmmError::Restore)?;
            }
            for fs in &late.fs {
                let slot = self.spare_fs.iter().find(|d| lock(d).tag() == fs.tag);
                let slot = slot.ok_or_else(|| {
                    VmmError::Device(format!("no spare virtio-fs device with tag {:?}", fs.tag))
                })?;
                lock(slot)
                    .plug(&fs.socket)
                    .map_err(|e| VmmError::Device(format!("virtio-fs {}: {e}", fs.tag)))?;
            }
            self.pending_disks = late.disks;
            return Ok(());
        }
        for disk in late.disks {
            self.add_disk(&disk.path, disk.read_only)?;
            self.config.disks.push(disk);
        }
        for net in late.net {
            self.add_net(&net)?;
            self.config.net.push(net);
        }
        for fs in late.fs {
            self.add_fs(&fs)?;
            self.config.fs.push(fs);
        }
        if !late.cmdline.trim().is_empty() {
            self.cmdline
                .insert_str(late.cmdline.trim())
                .map_err(|e| VmmError::Cmdline(e.to_string()))?;
        }
        Ok(())
    }

    fn add_net(&mut self, net: &crate::config::NetConfig) -> Result<(), VmmError> {
        let mac = card_mac(net.mac.as_deref())?;
        let tap = open_tap(&net.tap, net.netns.as_deref())
            .map_err(|e| VmmError::Device(format!("tap {}: {e}", net.tap)))?;
        let dev = crate::virtio::net::Net::new(tap, mac, net.mtu)
            .map_err(|e| VmmError::Device(format!("virtio-net: {e}")))?;
        self.add_virtio(Arc::new(Mutex::new(dev)))
    }

    fn add_fs(&mut self, fs: &crate::config::FsConfig) -> Result<(), VmmError> {
        if !self.config.shared_memory {
            return Err(VmmError::Device("virtio-fs needs shared_memory".into()));
        }
        let dev = crate::virtio::fs::Fs::new(&fs.socket, &fs.tag, fs.queue_size)
            .map_err(|e| VmmError::Device(format!("virtio-fs {}: {e}", fs.tag)))?;
        self.add_virtio(Arc::new(Mutex::new(dev)))
    }

    fn add_disk(&mut self, path: &std::path::Path, read_only: bool) -> Result<(), VmmError> {
        let dev = Arc::new(Mutex::new(
            Block::new(path, read_only).map_err(|e| VmmError::Device(e.to_string()))?,
        ));
        self.add_virtio(dev.clone())?;
        self.disks.push(dev);
        Ok(())
    }

    /// The configuration the VM was made with.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    fn add_legacy_devices(&mut self) -> Result<(), VmmError> {
        let host = |e: std::io::Error| VmmError::Host(e.to_string());
        let irq = EventFd::new(EFD_NONBLOCK).map_err(host)?;
        self.vm
            .register_irqfd(&irq, layout::SERIAL_IRQ)
            .map_err(kvm_call("register serial irqfd"))?;
        let sink = serial::SerialSink::open(&self.config.serial)
            .map_err(|e| VmmError::Device(format!("serial output: {e}")))?;
        let serial = Arc::new(Mutex::new(serial::Serial::new(irq, sink)));
        self.pio
            .insert(serial::COM1_BASE, serial::COM_PORTS, serial.clone())
            .map_err(|e| VmmError::Device(e.to_string()))?;
        self.serial = Some(serial);
        Ok(())
    }

    /// Attaches a virtio device on the next MMIO window and IRQ line; `dev` is also
    /// registered with the event loop.
    fn add_virtio<D>(&mut self, dev: Arc<Mutex<D>>) -> Result<(), VmmError>
    where
        D: VirtioDevice + MutEventSubscriber + Send + 'static,
    {
        if self.next_irq > layout::IRQ_MAX {
            return Err(VmmError::Device("too many devices: out of IRQ lines".into()));
        }
        let base = self.next_mmio;
        let irq = self.next_irq;
        let host = |e: std::io::Error| VmmError::Host(e.to_string());
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(host)?;
        self.vm.register_irqfd(&irqfd, irq).map_err(kvm_call("register irqfd"))?;
        for (i, evt) in lock(&dev).queue_events().iter().enumerate() {
            self.vm
                .register_ioevent(evt, &IoEventAddress::Mmio(base + mmio::NOTIFY_OFFSET), i as u32)
                .map_err(kvm_call("register ioeventfd"))?;
        }
        let interrupt = Arc::new(Interrupt::new(irqfd));
        let as_virtio: Arc<Mutex<dyn VirtioDevice>> = dev.clone();
        let transport = mmio::MmioTransport::new(as_virtio, self.mem.clone(), interrupt);
        let transport = Arc::new(Mutex::new(transport));
        self.transports.push(transport.clone());
        self.mmio
            .insert(base, mmio::MMIO_WINDOW, transport)
            .map_err(|e| VmmError::Device(e.to_string()))?;
        self.cmdline
            .add_virtio_mmio_device(mmio::MMIO_WINDOW, GuestAddress(base), irq, None)
            .map_err(|e| VmmError::Cmdline(e.to_string()))?;
        self.subscribers.push(dev);
        self.next_mmio += mmio::MMIO_WINDOW;
        self.next_irq += 1;
        Ok(())
    }

    /// Boots the guest and runs until it stops; returns how it ended. With `seccomp`, every
    /// thread runs under its seccomp filter ([`crate::seccomp`]) from before the guest's
    /// first instruction (vCPU threads) or the first event it causes (the event loop).
    pub fn run(mut self, seccomp: bool) -> Result<VmExit, VmmError> {
        let host = |e: std::io::Error| VmmError::Host(e.to_string());
        if seccomp {
            crate::seccomp::install_sigsys_handler()
                .map_err(|e| VmmError::Host(format!("SIGSYS handler: {e}")))?;
        }
        let restored = self.restored.take();
        let entry = match restored {
            // The restored memory holds the kernel and the boot tables.
            Some(_) => None,
            None => {
                let size = self.config.memory_mib << 20;
                let entry = boot::load(
                    &self.mem,
                    size,
                    &self.config.kernel,
                    self.config.initrd.as_deref(),
                    &self.cmdline,
                )?;
                mptable::setup(&self.mem, self.config.vcpus)?;
                Some(entry)
            }
        };
        let restore_err = |e: String| VmmError::Restore(e);
        if let Some(snap) = &restored {
            snap.vm.restore(&self.vm).map_err(|e| restore_err(e.to_string()))?;
        }

        let reset_evt = EventFd::new(EFD_NONBLOCK).map_err(host)?;
        let i8042: Arc<Mutex<dyn BusDevice>> =
            Arc::new(Mutex::new(I8042::new(reset_evt.try_clone().map_err(host)?)));
        self.pio
            .insert(crate::devices::i8042::I8042_BASE, crate::devices::i8042::I8042_LEN, i8042)
            .map_err(|e| VmmError::Device(e.to_string()))?;

        let base_cpuid = self
            ._kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_call("get supported CPUID"))?;
        let caps =
            cpuid::HostCaps { tsc_deadline: self._kvm.check_extension(Cap::TscDeadlineTimer) };
        let pio = Arc::new(std::mem::take(&mut self.pio));
        let mmio = Arc::new(std::mem::take(&mut self.mmio));
        let mut vcpus = Vec::new();
        for i in 0..self.config.vcpus {
            let fd = self.vm.create_vcpu(i as u64).map_err(kvm_call("create vCPU"))?;
            match (&restored, entry) {
                (Some(snap), _) => {
                    let state = snap.vcpus.get(usize::from(i)).ok_or_else(|| {
                        restore_err(format!("the snapshot has no state for vCPU {i}"))
                    })?;
                    state.restore(&fd).map_err(|e| restore_err(format!("vCPU {i}: {e}")))?;
                    // Tell the guest it was stopped (its watchdogs then ignore the gap).
                    let _ = fd.kvmclock_ctrl();
                }
                (None, entry) => {
                    let mut c = base_cpuid.clone();
                    cpuid::filter(&mut c, i, self.config.vcpus, caps);
                    fd.set_cpuid2(&c).map_err(kvm_call("set CPUID"))?;
                    regs::setup_msrs(&fd)?;
                    regs::setup_fpu(&fd)?;
                    regs::setup_lapic(&fd)?;
                    if let (0, Some(entry)) = (i, entry) {
                        regs::setup_sregs(&self.mem, &fd, entry.mode)?;
                        regs::setup_regs(&fd, entry)?;
                    }
                }
            }
            vcpus.push(Vcpu::new(fd, i, pio.clone(), mmio.clone()));
        }
        // The devices after the vCPUs: a restored device may raise an interrupt at once
        // (vsock's transport reset), which must land in the restored interrupt controllers.
        if let Some(snap) = &restored {
            if let (Some(serial), Some(st)) = (&self.serial, &snap.serial) {
                lock(serial).restore_state(st).map_err(restore_err)?;
            }
            if snap.devices.len() != self.transports.len() {
                return Err(restore_err(format!(
                    "the snapshot has {} virtio devices, this VM {}",
                    snap.devices.len(),
                    self.transports.len()
                )));
            }
            for (i, (t, st)) in self.transports.iter().zip(&snap.devices).enumerate() {
                lock(t).restore_state(st).map_err(|e| restore_err(format!("device {i}: {e}")))?;
            }
            let slots = crate::api::DiskSlots {
                fixed: self.disks.clone(),
                spare: self.spare_disks.clone(),
            };
            for disk in std::mem::take(&mut self.pending_disks) {
                slots
                    .attach(&disk.path, disk.read_only)
                    .map_err(|e| VmmError::Device(format!("disk {}: {e}", disk.path.display())))?;
            }
        }

        // Block the termination signals in every thread; the event loop reads them.
        let signal_fd = crate::signals::TerminationSignals::new().ok();
        let (tx, rx) = channel();
        let vcpu_evt = EventFd::new(EFD_NONBLOCK).map_err(host)?;
        let exit = Arc::new(Mutex::new(None));
        let mut em: EventManager<Subscriber> =
            EventManager::new().map_err(|e| VmmError::Host(format!("event loop: {e}")))?;
        for s in self.subscribers.drain(..) {
            em.add_subscriber(s);
        }
        em.add_subscriber(Arc::new(Mutex::new(ExitWatcher {
            reset_evt,
            vcpu_evt: vcpu_evt.try_clone().map_err(host)?,
            signal_fd,
            stops: rx,
            exit: exit.clone(),
        })));
        crate::vcpu::install_kick_handler()
            .map_err(|e| VmmError::Host(format!("vCPU kick signal handler: {e}")))?;
        let mut handles = Vec::with_capacity(vcpus.len());
        for v in vcpus {
            handles.push(
                v.spawn(tx.clone(), vcpu_evt.try_clone().map_err(host)?, seccomp).map_err(host)?,
            );
        }
        // Held until the loop ends: dropping the server removes its socket file.
        let _api = match self.config.api_socket.clone() {
            Some(path) => {
                let slots = crate::api::DiskSlots {
                    fixed: std::mem::take(&mut self.disks),
                    spare: std::mem::take(&mut self.spare_disks),
                };
                let controls = crate::api::Controls {
                    slots,
                    vm: Box::new(VmController {
                        vcpus: handles,
                        paused: false,
                        kvm: self._kvm.clone(),
                        vm: self.vm.clone(),
                        mem: self.mem.clone(),
                        transports: self.transports.clone(),
                        serial: self.serial.clone(),
                        config: self.config.clone(),
                        spare_fs: self.spare_fs.clone(),
                    }),
                };
                let server = crate::api::ApiServer::bind(&path, controls)
                    .map_err(|e| VmmError::Host(format!("API socket {}: {e}", path.display())))?;
                let server = Arc::new(Mutex::new(server));
                em.add_subscriber(server.clone());
                Some(server)
            }
            None => None,
        };

        // After the vCPU threads started (they do not inherit it), before the first event.
        if seccomp {
            crate::seccomp::install(crate::seccomp::ThreadKind::Vmm)
                .map_err(|e| VmmError::Host(format!("seccomp filter: {e}")))?;
        }
        let outcome = loop {
            if let Some(e) = lock(&exit).take() {
                break e;
            }
            if let Err(e) = em.run() {
                break VmExit::Failed(format!("event loop: {e:?}"));
            }
        };
        if let Some(s) = &self.serial {
            lock(s).flush();
        }
        for p in &self.cleanup {
            let _ = std::fs::remove_file(p);
        }
        Ok(outcome)
    }
}

/// Opens a tap device, in the network namespace at `netns` if given: on a thread of its own
/// that enters the namespace (a tap stays in the namespace it was opened in, whatever thread
/// then uses it), so the VMM itself stays where it is.
fn open_tap(
    name: &str,
    netns: Option<&std::path::Path>,
) -> std::io::Result<crate::virtio::net::tap::Tap> {
    use std::os::fd::AsRawFd;
    let Some(path) = netns else {
        return crate::virtio::net::tap::Tap::open(name);
    };
    let ns = std::fs::File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on an open namespace descriptor; it changes this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            crate::virtio::net::tap::Tap::open(name)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the tap thread panicked")))
    })
}
