//! vCPU threads: the KVM_RUN loop and the dispatch of port I/O and MMIO exits to the buses,
//! and pausing them (for a snapshot): the VMM asks through a [`VcpuHandle`], kicks the thread
//! out of `KVM_RUN` with a signal, and the thread parks where its state is consistent (the
//! last exit's I/O completed) until resumed; while parked it saves its KVM state on request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{lock, Bus};
use crate::snapshot::kvm_state::VcpuState;

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
    control: Arc<Control>,
}

/// What the VMM asks of a vCPU thread, and what the thread reports.
#[derive(Default)]
struct Control {
    /// Set to ask the thread to park; read on every exit without the lock.
    pause: AtomicBool,
    state: Mutex<ControlState>,
    changed: Condvar,
}

#[derive(Default)]
struct ControlState {
    /// The thread is parked.
    parked: bool,
    /// The thread has stopped for good.
    gone: bool,
    /// A request to save the vCPU's state, with the MSRs to save.
    save: Option<Vec<u32>>,
    /// The saved state (or why it could not be saved).
    saved: Option<Result<VcpuState, String>>,
}

/// The signal that kicks a vCPU thread out of `KVM_RUN` (its handler does nothing: the
/// interrupted `KVM_RUN` returns EINTR).
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int) {}

/// Installs the kick signal's handler (no SA_RESTART, so `KVM_RUN` returns EINTR). Once per
/// process, before the vCPU threads start.
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction with a handler that does nothing (async-signal-safe) and an
    // empty mask; the old action is not needed.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Why pausing or saving a vCPU failed.
#[derive(Debug, thiserror::Error)]
pub enum VcpuControlError {
    /// The thread did not park in time.
    #[error("vCPU {0} did not stop within {1:?}")]
    Timeout(u8, Duration),
    /// The thread has ended (the guest stopped or failed).
    #[error("vCPU {0} has stopped")]
    Gone(u8),
    /// Saving the state failed.
    #[error("vCPU {0}: {1}")]
    Save(u8, String),
    /// The vCPU is not paused.
    #[error("vCPU {0} is not paused")]
    NotPaused(u8),
}

/// The VMM's end of a running vCPU thread.
pub struct VcpuHandle {
    index: u8,
    thread: libc::pthread_t,
    control: Arc<Control>,
}

/// How long a vCPU may take to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

impl VcpuHandle {
    /// Asks the vCPU to park; returns when it has (or has ended, or after a timeout).
    pub fn pause(&self) -> Result<(), VcpuControlError> {
        let c = &self.control;
        c.pause.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let mut st = lock(&c.state);
        loop {
            if st.gone {
                return Err(VcpuControlError::Gone(self.index));
            }
            if st.parked {
                return Ok(());
            }
            if start.elapsed() > PAUSE_TIMEOUT {
                return Err(VcpuControlError::Timeout(self.index, PAUSE_TIMEOUT));
            }
            // The thread may have been between its check and KVM_RUN when the last signal
            // came: kick again until it parks.
            // SAFETY: pthread_kill on a thread of this process that has not been joined
            // (the handle lives as long as the thread may run); the signal has a handler.
            unsafe { libc::pthread_kill(self.thread, kick_signal()) };
            st = c
                .changed
                .wait_timeout(st, Duration::from_millis(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Lets a parked vCPU run again.
    pub fn resume(&self) {
        let c = &self.control;
        c.pause.store(false, Ordering::SeqCst);
        let _g = lock(&c.state);
        c.changed.notify_all();
    }

    /// Saves the KVM state of the parked vCPU (the thread itself reads it).
    pub fn save(&self, msrs: &[u32]) -> Result<VcpuState, VcpuControlError> {
        let c = &self.control;
        let mut st = lock(&c.state);
        if !st.parked {
            return Err(VcpuControlError::NotPaused(self.index));
        }
        st.saved = None;
        st.save = Some(msrs.to_vec());
        c.changed.notify_all();
        loop {
            if let Some(r) = st.saved.take() {
                return r.map_err(|e| VcpuControlError::Save(self.index, e));
            }
            if st.gone {
                return Err(VcpuControlError::Gone(self.index));
            }
            st = c.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The vCPU's index.
    pub fn index(&self) -> u8 {
        self.index
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        // SAFETY: the handle owns the pthread_t (taken from its JoinHandle) and detaches it
        // once; nothing uses it afterwards.
        unsafe { libc::pthread_detach(self.thread) };
    }
}

/// KVM_SYSTEM_EVENT types.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;

impl Vcpu {
    /// Wraps a configured vCPU.
    pub fn new(fd: VcpuFd, index: u8, pio: Arc<Bus>, mmio: Arc<Bus>) -> Self {
        Vcpu { fd, index, pio, mmio, control: Arc::default() }
    }

    /// Parks until resumed, saving the vCPU's state when asked. First completes the last
    /// exit's I/O (an `in` or MMIO read takes its data on the next entry): one `KVM_RUN`
    /// with `immediate_exit`, which returns at once.
    fn park(&mut self) {
        self.fd.set_kvm_immediate_exit(1);
        let _ = self.fd.run();
        self.fd.set_kvm_immediate_exit(0);
        let c = self.control.clone();
        let mut st = lock(&c.state);
        st.parked = true;
        c.changed.notify_all();
        loop {
            if let Some(msrs) = st.save.take() {
                drop(st);
                let r = VcpuState::save(&self.fd, &msrs).map_err(|e| e.to_string());
                st = lock(&c.state);
                st.saved = Some(r);
                c.changed.notify_all();
                continue;
            }
            if !c.pause.load(Ordering::SeqCst) {
                break;
            }
            st = c.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.parked = false;
        c.changed.notify_all();
    }

    /// Runs until the guest stops this vCPU for good.
    pub fn run(&mut self) -> VcpuStop {
        let index = self.index;
        loop {
            if self.control.pause.load(Ordering::SeqCst) {
                self.park();
            }
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
    ) -> std::io::Result<VcpuHandle> {
        use std::os::unix::thread::JoinHandleExt;
        let (index, control) = (self.index, self.control.clone());
        let thread =
            std::thread::Builder::new().name(format!("vcpu{}", self.index)).spawn(move || {
                let filtered = match seccomp {
                    true => {
                        crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu).map_err(|e| {
                            VcpuStop::Error {
                                vcpu: self.index,
                                reason: format!("seccomp filter: {e}"),
                            }
                        })
                    }
                    false => Ok(()),
                };
                let reason = match filtered {
                    Ok(()) => self.run(),
                    Err(stop) => stop,
                };
                {
                    let mut st = lock(&self.control.state);
                    st.gone = true;
                    self.control.changed.notify_all();
                }
                let _ = stops.send(reason);
                let _ = stop_evt.write(1);
            })?;
        Ok(VcpuHandle { index, thread: thread.into_pthread_t(), control })
    }
}
