//! Virtio devices and their MMIO transport.
//!
//! A device implements [`VirtioDevice`] (what the transport needs: features, config space,
//! queue sizes, activation) and, separately, `event_manager::MutEventSubscriber` for its own
//! I/O (queue notifications arrive as ioeventfds, backend fds). The transport
//! ([`mmio::MmioTransport`]) is the guest-facing register block and hands the device its
//! queues on activation. Interrupts go to the guest through an irqfd ([`Interrupt`]).

pub mod balloon;
pub mod blk;
pub mod fs;
pub mod mmio;
pub mod net;
#[cfg(any(test, feature = "fuzzing"))]
pub mod test_queue;
pub mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::EventFd;

pub use virtio_queue::{Queue, QueueState, QueueT};

/// Guest memory as the devices see it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Virtio device type ids (virtio spec 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Socket device.
    pub const VSOCK: u32 = 19;
}

/// Feature bits shared by all devices.
pub mod features {
    /// The device conforms to virtio 1.x (required by our transport).
    pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
    /// Used/available event index suppression.
    pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
    /// Indirect descriptors.
    pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
}

/// Interrupt status bit: a used buffer was added to a queue.
pub const INT_VRING: u32 = 0x1;
/// Interrupt status bit: the configuration space changed.
pub const INT_CONFIG: u32 = 0x2;

/// The interrupt line of one virtio-mmio device: a status register the guest reads and acks,
/// and an irqfd that KVM turns into a guest interrupt.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    /// Bits that read as set whatever the driver acknowledges ([`Interrupt::set_sticky`]).
    sticky: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// Wraps an irqfd that has been registered with KVM for the device's GSI.
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt { status: AtomicU32::new(0), sticky: AtomicU32::new(0), irqfd }
    }

    /// Makes `bits` read as pending until cleared with `set_sticky(0)`. For a device whose
    /// queues a separate process serves and signals straight through the irqfd (vhost-user):
    /// the status register cannot be set per interrupt, so it always says "used buffers"
    /// and the driver checks its queues on every interrupt (it finds nothing on a spurious
    /// one, which is harmless).
    pub fn set_sticky(&self, bits: u32) {
        self.sticky.store(bits, Ordering::SeqCst);
    }

    /// Tells the guest a queue has new used buffers.
    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.signal(INT_VRING)
    }

    /// Tells the guest the device configuration changed.
    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.signal(INT_CONFIG)
    }

    fn signal(&self, bit: u32) -> std::io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    /// The pending interrupt bits (InterruptStatus register).
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst) | self.sticky.load(Ordering::SeqCst)
    }

    /// Sets the pending bits to a snapshot's (without raising the interrupt: the restored
    /// interrupt controllers hold whatever the guest had not taken yet).
    pub fn restore(&self, bits: u32) {
        self.status.store(bits & !self.sticky.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Clears acknowledged bits (InterruptACK register).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The irqfd (for registration with KVM).
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// Everything a device gets when the driver sets DRIVER_OK.
pub struct ActivateContext {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The queues, configured and validated by the transport, in index order.
    pub queues: Vec<Queue>,
    /// The device's interrupt.
    pub interrupt: std::sync::Arc<Interrupt>,
    /// Features the driver accepted.
    pub acked_features: u64,
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver configured the wrong number of queues.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device needs.
        expected: usize,
        /// Queues the driver set up.
        got: usize,
    },
    /// The device backend failed.
    #[error("device backend: {0}")]
    Backend(String),
}

/// What the virtio-mmio transport needs from a device model.
pub trait VirtioDevice: Send {
    /// Virtio device type ([`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the number of entries is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers.
    fn avail_features(&self) -> u64;
    /// Reads from the device-specific configuration space. Out-of-range bytes read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes to the device-specific configuration space. Out-of-range writes are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Changes whenever the device changes its configuration space by itself (the
    /// transport adds it to the ConfigGeneration register).
    fn config_generation(&self) -> u32 {
        0
    }
    /// One eventfd per queue, signalled by KVM when the guest notifies that queue.
    fn queue_events(&self) -> &[EventFd];
    /// Starts the device with the driver's queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Whether [`VirtioDevice::activate`] has succeeded and no reset happened since.
    fn is_activated(&self) -> bool;
    /// Returns the device to its initial state (the driver wrote 0 to Status).
    fn reset(&mut self);
    /// The state of the queues the device runs (those it was activated with, as it has
    /// advanced them); empty when it is not activated.
    fn queue_states(&self) -> Vec<QueueState>;
    /// For a snapshot: what the device holds beyond its queues and its configuration (for
    /// the VMM's configuration recreates the device), or why it cannot be saved.
    fn save_extra(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::Value::Null)
    }
    /// Takes back what [`VirtioDevice::save_extra`] returned, before the restored device is
    /// activated.
    fn restore_extra(&mut self, extra: &serde_json::Value) -> Result<(), String> {
        match extra {
            serde_json::Value::Null => Ok(()),
            _ => Err("this device keeps no state of its own".into()),
        }
    }
    /// Called once the restored device is activated again: what the guest must be told about
    /// host-side state the snapshot could not keep (vsock: its connections are gone).
    fn restored(&mut self) {}
    /// Guest memory was mapped anew at the same addresses ([`crate::memory::share_in_place`]):
    /// `mem` describes it now. Only a device that looks at how memory is backed, not only
    /// where it is, needs to take it (the default keeps the old description, whose
    /// addresses are still right).
    fn set_memory(&mut self, _mem: &GuestMemoryMmap) {}
}

/// Reads a little-endian config-space window: copies the part of `config` that overlaps
/// `offset..offset+data.len()` and zero-fills the rest.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else { return };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_window() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [9u8; 4];
        read_config_bytes(&cfg, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn interrupt_status_and_ack() {
        let i = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        i.signal_used_queue().unwrap();
        i.signal_config_change().unwrap();
        assert_eq!(i.status(), INT_VRING | INT_CONFIG);
        i.ack(INT_VRING);
        assert_eq!(i.status(), INT_CONFIG);
        assert_eq!(i.irqfd().read().unwrap(), 2);
        i.set_sticky(INT_VRING);
        i.ack(INT_VRING | INT_CONFIG);
        assert_eq!(i.status(), INT_VRING, "a sticky bit survives the ack");
        i.set_sticky(0);
        assert_eq!(i.status(), 0);
    }
}
