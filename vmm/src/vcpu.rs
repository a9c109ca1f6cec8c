//! vCPU threads: the KVM_RUN loop and the dispatch of port I/O and MMIO exits to the buses.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::Bus;

/// Why a vCPU stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest asked for a reset or power-off: a clean end of the VM.
    GuestShutdown,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault {
        /// vCPU index.
        vcpu: u8,
    },
    /// KVM could not run the vCPU.
    Error {
        /// vCPU index.
        vcpu: u8,
        /// What went wrong.
        reason: String,
    },
}

impl std::fmt::Display for VcpuStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VcpuStop::GuestShutdown => write!(f, "guest shut down"),
            VcpuStop::TripleFault { vcpu } => write!(f, "guest triple fault on vCPU {vcpu}"),
            VcpuStop::Error { vcpu, reason } => write!(f, "vCPU {vcpu}: {reason}"),
        }
    }
}

/// One vCPU with the buses it dispatches to.
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
}

/// KVM_SYSTEM_EVENT types.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;

impl Vcpu {
    /// Wraps a configured vCPU.
    pub fn new(fd: VcpuFd, index: u8, pio: Arc<Bus>, mmio: Arc<Bus>) -> Self {
        Vcpu { fd, index, pio, mmio }
    }

    /// Runs until the guest stops this vCPU for good.
    pub fn run(&mut self) -> VcpuStop {
        let index = self.index;
        loop {
            match self.fd.run() {
                Ok(exit) => {
                    match exit {
                        VcpuExit::IoIn(port, data) => {
                            self.pio.read(port as u64, data);
                        }
                        VcpuExit::IoOut(port, data) => {
                            self.pio.write(port as u64, data);
                        }
                        VcpuExit::MmioRead(addr, data) => {
                            self.mmio.read(addr, data);
                        }
                        VcpuExit::MmioWrite(addr, data) => {
                            self.mmio.write(addr, data);
                        }
                        VcpuExit::Hlt => {
                            // With the in-kernel irqchip HLT is handled by KVM; a HLT exit means
                            // the vCPU halted for good (interrupts off).
                            return VcpuStop::Error {
                                vcpu: index,
                                reason: "halted with interrupts disabled".into(),
                            };
                        }
                        VcpuExit::Shutdown => return VcpuStop::TripleFault { vcpu: index },
                        VcpuExit::SystemEvent(kind, _) => match kind {
                            SYSTEM_EVENT_SHUTDOWN | SYSTEM_EVENT_RESET => {
                                return VcpuStop::GuestShutdown
                            }
                            other => {
                                return VcpuStop::Error {
                                    vcpu: index,
                                    reason: format!("unexpected system event {other}"),
                                }
                            }
                        },
                        VcpuExit::FailEntry(reason, cpu) => {
                            return VcpuStop::Error {
                                vcpu: index,
                                reason: format!(
                                "KVM entry failed: hardware reason {reason:#x} on host CPU {cpu}"
                            ),
                            }
                        }
                        VcpuExit::InternalError => {
                            return VcpuStop::Error {
                                vcpu: index,
                                reason: "KVM internal error (emulation failure)".into(),
                            }
                        }
                        VcpuExit::Intr | VcpuExit::IrqWindowOpen | VcpuExit::IoapicEoi(_) => {}
                        other => {
                            return VcpuStop::Error {
                                vcpu: index,
                                reason: format!("unhandled KVM exit {other:?}"),
                            }
                        }
                    }
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => {
                    return VcpuStop::Error { vcpu: index, reason: format!("KVM_RUN failed: {e}") }
                }
            }
        }
    }

    /// Starts the vCPU on its own thread (under the vCPU seccomp filter with `seccomp`,
    /// installed before it enters the guest); when it stops, the reason is sent on `stops`
    /// and `stop_evt` is signalled so the event loop wakes up.
    pub fn spawn(
        mut self,
        stops: Sender<VcpuStop>,
        stop_evt: EventFd,
        seccomp: bool,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name(format!("vcpu{}", self.index)).spawn(move || {
            let filtered = match seccomp {
                true => crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu).map_err(|e| {
                    VcpuStop::Error { vcpu: self.index, reason: format!("seccomp filter: {e}") }
                }),
                false => Ok(()),
            };
            let reason = match filtered {
                Ok(()) => self.run(),
                Err(stop) => stop,
            };
            let _ = stops.send(reason);
            let _ = stop_evt.write(1);
        })
    }
}
