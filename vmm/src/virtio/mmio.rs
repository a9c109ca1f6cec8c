//! The virtio-mmio (version 2) transport: the register block the guest driver programs.
//!
//! Queue notifications normally reach the device through an ioeventfd registered with KVM for
//! the QueueNotify register; a write that still arrives here (no ioeventfd) is forwarded to the
//! same eventfd. The device is activated when the driver sets DRIVER_OK with a valid setup; any
//! driver mistake marks the device FAILED/NEEDS_RESET instead of touching VMM state.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use super::{ActivateContext, GuestMemoryMmap, Interrupt, VirtioDevice};
use crate::bus::{lock, BusDevice};

/// Size of one device's MMIO window (registers + config space).
pub const MMIO_WINDOW: u64 = 0x1000;
/// Offset of the QueueNotify register (for ioeventfd registration).
pub const NOTIFY_OFFSET: u64 = 0x50;
/// Offset of the device-specific configuration space.
pub const CONFIG_OFFSET: u64 = 0x100;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x1d0f_1d0f;

/// Device status bits (virtio spec 2.1).
pub mod status {
    /// Guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// Guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// Driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is done.
    pub const FEATURES_OK: u32 = 8;
    /// Device hit an error it cannot recover from.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// Driver gave up.
    pub const FAILED: u32 = 0x80;
}

/// A virtqueue as a snapshot keeps it (virtio-queue's `QueueState`, serialisable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// Largest size the device offers.
    pub max_size: u16,
    /// The driver's size.
    pub size: u16,
    /// Set up by the driver.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available ring address.
    pub avail_ring: u64,
    /// Used ring address.
    pub used_ring: u64,
    /// Next available entry the device takes.
    pub next_avail: u16,
    /// Next used entry the device fills.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX in use.
    pub event_idx: bool,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        QueueSnapshot {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx: q.event_idx_enabled,
        }
    }
}

impl From<&QueueSnapshot> for QueueState {
    fn from(q: &QueueSnapshot) -> Self {
        QueueState {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx,
        }
    }
}

/// One virtio-mmio device's state in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransportState {
    /// The device's type (checked on restore).
    pub device_type: u32,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// QueueSel.
    pub queue_sel: u32,
    /// Device status.
    pub status: u32,
    /// The transport's part of ConfigGeneration.
    pub config_generation: u32,
    /// Interrupt bits the driver had not acknowledged.
    pub interrupt_status: u32,
    /// The queues.
    pub queues: Vec<QueueSnapshot>,
    /// The device's own state.
    pub extra: serde_json::Value,
}

/// One virtio-mmio device as the guest sees it.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    /// An activation failure was logged: the guest may retry forever, the log says it once.
    told_activation_failure: bool,
}

impl MmioTransport {
    /// Guest memory was mapped anew at the same addresses: later activations hand the
    /// device `mem`, and the device takes it now ([`VirtioDevice::set_memory`]).
    pub fn set_memory(&mut self, mem: &GuestMemoryMmap) {
        self.mem = mem.clone();
        lock(&self.device).set_memory(mem);
    }

    /// Builds the transport for `device`; `interrupt` must be wired to the device's GSI.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
    ) -> Self {
        let queues = lock(&device)
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("device queue sizes are powers of two"))
            .collect();
        MmioTransport {
            device,
            mem,
            interrupt,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            told_activation_failure: false,
        }
    }

    /// The current device status register (for tests and diagnostics).
    pub fn status(&self) -> u32 {
        self.status
    }

    /// For a snapshot (vCPUs paused, between events): the registers, the queues (as the
    /// device runs them when it is active) and the device's own state.
    pub fn save_state(&self) -> Result<TransportState, String> {
        let dev = lock(&self.device);
        let queues: Vec<QueueState> = if dev.is_activated() {
            dev.queue_states()
        } else {
            self.queues.iter().map(|q| q.state()).collect()
        };
        if queues.len() != self.queues.len() {
            return Err(format!(
                "virtio device type {} reports {} queues of {}",
                dev.device_type(),
                queues.len(),
                self.queues.len()
            ));
        }
        Ok(TransportState {
            device_type: dev.device_type(),
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            acked_features: self.acked_features,
            queue_sel: self.queue_sel,
            status: self.status,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            queues: queues.into_iter().map(QueueSnapshot::from).collect(),
            extra: dev.save_extra()?,
        })
    }

    /// Takes back a saved state into this freshly made transport (its device made from the
    /// same configuration); a device the driver had started is started again, on the saved
    /// queues, and told it was restored.
    pub fn restore_state(&mut self, st: &TransportState) -> Result<(), String> {
        let device_type = lock(&self.device).device_type();
        if st.device_type != device_type {
            return Err(format!(
                "the snapshot has a device of type {} where this VM has type {device_type}",
                st.device_type
            ));
        }
        if st.queues.len() != self.queues.len() {
            return Err(format!(
                "device type {device_type}: {} queues in the snapshot, {} here",
                st.queues.len(),
                self.queues.len()
            ));
        }
        let mut queues = Vec::with_capacity(st.queues.len());
        for (q, mine) in st.queues.iter().zip(&self.queues) {
            if q.max_size != mine.max_size() {
                return Err(format!("device type {device_type}: queue sizes differ"));
            }
            queues.push(
                Queue::try_from(QueueState::from(q))
                    .map_err(|e| format!("device type {device_type}: saved queue: {e:?}"))?,
            );
        }
        lock(&self.device).restore_extra(&st.extra)?;
        self.queues = queues;
        self.device_features_sel = st.device_features_sel;
        self.driver_features_sel = st.driver_features_sel;
        self.acked_features = st.acked_features;
        self.queue_sel = st.queue_sel;
        self.config_generation = st.config_generation;
        self.status = st.status;
        self.interrupt.restore(st.interrupt_status);
        let running = status::DRIVER_OK | status::FAILED | status::DEVICE_NEEDS_RESET;
        if st.status & running == status::DRIVER_OK {
            self.activate();
            if self.status & status::DEVICE_NEEDS_RESET != 0 {
                return Err(format!("the restored device of type {device_type} did not start"));
            }
            lock(&self.device).restored();
        }
        Ok(())
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may only change before DRIVER_OK and while the queue is not ready.
    fn queue_writable(&self) -> bool {
        self.status & (status::FEATURES_OK | status::DRIVER_OK | status::FAILED)
            == status::FEATURES_OK
    }

    fn update_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if !self.queue_writable() {
            return;
        }
        if let Some(q) = self.selected_queue() {
            if !q.ready() {
                f(q);
            }
        }
    }

    fn reset(&mut self) {
        lock(&self.device).reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt.ack(u32::MAX);
    }

    fn set_status(&mut self, new: u32) {
        if new == 0 {
            self.reset();
            return;
        }
        // The driver may only add bits (spec 3.1.1), except through a reset.
        if new & self.status != self.status {
            self.status |= status::FAILED;
            return;
        }
        let added = new & !self.status;
        if added & status::FEATURES_OK != 0 {
            let offered = lock(&self.device).avail_features();
            if self.acked_features & !offered != 0 {
                // Accepting unoffered features is a driver bug: refuse FEATURES_OK.
                self.status = new & !status::FEATURES_OK;
                return;
            }
        }
        if added & status::DRIVER_OK != 0 {
            self.status = new;
            self.activate();
            return;
        }
        self.status = new;
    }

    fn activate(&mut self) {
        if self.status & status::FEATURES_OK == 0 {
            self.status |= status::FAILED;
            return;
        }
        let mut dev = lock(&self.device);
        let all_valid = self.queues.iter().all(|q| q.ready() && q.is_valid(&self.mem));
        if !all_valid {
            drop(dev);
            self.status |= status::DEVICE_NEEDS_RESET;
            let _ = self.interrupt.signal_config_change();
            return;
        }
        let queues: Result<Vec<Queue>, _> =
            self.queues.iter().map(|q| Queue::try_from(q.state())).collect();
        let Ok(queues) = queues else {
            drop(dev);
            self.status |= status::DEVICE_NEEDS_RESET;
            return;
        };
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues,
            interrupt: self.interrupt.clone(),
            acked_features: self.acked_features,
        };
        if let Err(e) = dev.activate(ctx) {
            if !std::mem::replace(&mut self.told_activation_failure, true) {
                eprintln!(
                    "ironpod-vmm: virtio device type {} failed to activate: {e} (said once)",
                    dev.device_type()
                );
            }
            drop(dev);
            self.status |= status::DEVICE_NEEDS_RESET;
            let _ = self.interrupt.signal_config_change();
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => lock(&self.device).device_type(),
            0x0c => VENDOR_ID,
            0x10 => {
                let f = lock(&self.device).avail_features();
                match self.device_features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            0x34 => self.selected_queue().map_or(0, |q| q.max_size() as u32),
            0x44 => self.selected_queue().map_or(0, |q| q.ready() as u32),
            0x60 => self.interrupt.status(),
            0x70 => self.status,
            0xfc => self.config_generation.wrapping_add(lock(&self.device).config_generation()),
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            0x14 => self.device_features_sel = v,
            0x20 => {
                if self.status & (status::FEATURES_OK | status::DRIVER_OK) != 0 {
                    return;
                }
                match self.driver_features_sel {
                    0 => self.acked_features = (self.acked_features & !0xffff_ffff) | v as u64,
                    1 => {
                        self.acked_features =
                            (self.acked_features & 0xffff_ffff) | ((v as u64) << 32)
                    }
                    _ => {}
                }
            }
            0x24 => self.driver_features_sel = v,
            0x30 => self.queue_sel = v,
            0x38 => self.update_queue(|q| q.set_size(v.min(u16::MAX as u32) as u16)),
            0x44 if self.queue_writable() => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            0x50 => {
                // Reached only when no ioeventfd caught it.
                let dev = lock(&self.device);
                if let Some(evt) = dev.queue_events().get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            0x64 => self.interrupt.ack(v),
            0x70 => self.set_status(v),
            0x80 => self.update_queue(|q| q.set_desc_table_address(Some(v), None)),
            0x84 => self.update_queue(|q| q.set_desc_table_address(None, Some(v))),
            0x90 => self.update_queue(|q| q.set_avail_ring_address(Some(v), None)),
            0x94 => self.update_queue(|q| q.set_avail_ring_address(None, Some(v))),
            0xa0 => self.update_queue(|q| q.set_used_ring_address(Some(v), None)),
            0xa4 => self.update_queue(|q| q.set_used_ring_address(None, Some(v))),
            _ => {}
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            lock(&self.device).read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        let v = self.read_reg(offset);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            if self.status & status::DRIVER != 0 {
                lock(&self.device).write_config(offset - CONFIG_OFFSET, data);
                self.config_generation = self.config_generation.wrapping_add(1);
            }
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg(offset, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::ActivateError;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    struct Dummy {
        evts: Vec<EventFd>,
        active: bool,
        config: [u8; 8],
        activations: usize,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn avail_features(&self) -> u64 {
            crate::virtio::features::VIRTIO_F_VERSION_1 | 1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            crate::virtio::read_config_bytes(&self.config, offset, data)
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            if let Some(dst) = self.config.get_mut(offset as usize..offset as usize + data.len()) {
                dst.copy_from_slice(data)
            }
        }
        fn queue_events(&self) -> &[EventFd] {
            &self.evts
        }
        fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
            if ctx.queues.len() != 2 {
                return Err(ActivateError::QueueCount { expected: 2, got: ctx.queues.len() });
            }
            self.active = true;
            self.activations += 1;
            Ok(())
        }
        fn is_activated(&self) -> bool {
            self.active
        }
        fn reset(&mut self) {
            self.active = false;
        }
        fn queue_states(&self) -> Vec<crate::virtio::QueueState> {
            Vec::new()
        }
    }

    fn setup() -> (MmioTransport, Arc<Mutex<Dummy>>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let dev = Arc::new(Mutex::new(Dummy {
            evts: vec![EventFd::new(0).unwrap(), EventFd::new(0).unwrap()],
            active: false,
            config: [1, 2, 3, 4, 5, 6, 7, 8],
            activations: 0,
        }));
        let irq = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
        (MmioTransport::new(dev.clone(), mem, irq), dev)
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut d = [0u8; 4];
        t.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn setup_queues(t: &mut MmioTransport) {
        for (i, base) in [(0u32, 0x1000u32), (1, 0x2000)] {
            w(t, 0x30, i);
            w(t, 0x38, 16);
            w(t, 0x80, base);
            w(t, 0x90, base + 0x200);
            w(t, 0xa0, base + 0x400);
            w(t, 0x44, 1);
        }
    }

    #[test]
    fn identity_registers() {
        let (mut t, _) = setup();
        assert_eq!(r(&mut t, 0), MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 8), 42);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "VERSION_1 is bit 32");
        // Unaligned or short register access is ignored.
        let mut b = [0xaa; 2];
        t.read(0, &mut b);
        assert_eq!(b, [0, 0]);
    }

    #[test]
    fn full_negotiation_activates() {
        let (mut t, dev) = setup();
        w(&mut t, 0x70, status::ACKNOWLEDGE);
        w(&mut t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(&mut t, 0x70, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        assert_ne!(r(&mut t, 0x70) & status::FEATURES_OK, 0);
        setup_queues(&mut t);
        w(&mut t, 0x70, 0xf);
        assert!(dev.lock().unwrap().active);
        assert_eq!(r(&mut t, 0x70), 0xf);
        // Reset.
        w(&mut t, 0x70, 0);
        assert!(!dev.lock().unwrap().active);
        assert_eq!(r(&mut t, 0x70), 0);
    }

    #[test]
    fn unoffered_features_refused() {
        let (mut t, _) = setup();
        w(&mut t, 0x70, 3);
        w(&mut t, 0x24, 0);
        w(&mut t, 0x20, 0x8000_0000);
        w(&mut t, 0x70, 3 | status::FEATURES_OK);
        assert_eq!(r(&mut t, 0x70) & status::FEATURES_OK, 0);
    }

    #[test]
    fn bad_queues_do_not_activate() {
        let (mut t, dev) = setup();
        w(&mut t, 0x70, 3);
        w(&mut t, 0x70, 3 | status::FEATURES_OK);
        // Queue 0 placed beyond guest memory, queue 1 never made ready.
        w(&mut t, 0x30, 0);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, 0xffff_0000);
        w(&mut t, 0x84, 0xffff);
        w(&mut t, 0x44, 1);
        // Invalid queue size (not a power of two) and an out-of-range selector.
        w(&mut t, 0x30, 1);
        w(&mut t, 0x38, 3);
        w(&mut t, 0x30, 99);
        w(&mut t, 0x38, 16);
        assert_eq!(r(&mut t, 0x34), 0);
        w(&mut t, 0x70, 0xf);
        assert!(!dev.lock().unwrap().active);
        assert_ne!(r(&mut t, 0x70) & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn status_cannot_drop_bits() {
        let (mut t, _) = setup();
        w(&mut t, 0x70, 3);
        w(&mut t, 0x70, 1);
        assert_ne!(r(&mut t, 0x70) & status::FAILED, 0);
    }

    #[test]
    fn config_space_and_notify_fallback() {
        let (mut t, dev) = setup();
        let mut d = [0u8; 2];
        t.read(CONFIG_OFFSET + 6, &mut d);
        assert_eq!(d, [7, 8]);
        t.read(CONFIG_OFFSET + 0x1000, &mut d);
        assert_eq!(d, [0, 0]);
        w(&mut t, 0x70, 3);
        t.write(CONFIG_OFFSET, &[9]);
        assert_eq!(dev.lock().unwrap().config[0], 9);
        w(&mut t, NOTIFY_OFFSET, 1);
        assert_eq!(dev.lock().unwrap().evts[1].read().unwrap(), 1);
        w(&mut t, NOTIFY_OFFSET, 1000); // no such queue: ignored
    }
}
