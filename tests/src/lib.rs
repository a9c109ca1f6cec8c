//! Shared helpers for the Linux-booting integration tests.
//!
//! These tests need a KVM that can run a Linux guest: hardware virtualization (vmx/svm) with
//! the real kvm_intel/kvm_amd module. On machines without it they **fail** with the reason —
//! `cargo xtask test` runs them inside the rig there (see README.md) — they never skip.

use std::path::PathBuf;

/// Why this machine cannot boot Linux guests on KVM, or `None` if it can.
pub fn linux_kvm_unavailable() -> Option<String> {
    ironpod_vmm::host::linux_guest_blocker()
}

/// How long one Linux-booting test may take before the whole test process is aborted.
pub const TEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Aborts the test process if the test that created it is still running after its limit:
/// a hung guest or VMM must fail CI quickly and say which test hung, not stall it for an
/// hour. Dropping the guard (the test ended) disarms it.
pub struct Watchdog {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    /// Arms a watchdog for the current test (named after the test's thread).
    pub fn arm(limit: std::time::Duration) -> Watchdog {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let name = std::thread::current().name().unwrap_or("test").to_string();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < limit {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if flag.load(Ordering::SeqCst) {
                    return;
                }
            }
            eprintln!("{name} is still running after {limit:?}: aborting (hung guest or VMM?)");
            let _ = std::process::Command::new("ps").args(["-eo", "pid,stat,etime,args"]).status();
            std::process::abort();
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Fails the calling test, with the reason, when Linux guests cannot run on this machine;
/// otherwise arms a [`Watchdog`] for it (keep the guard alive for the whole test).
#[must_use = "the watchdog guard must live as long as the test"]
pub fn require_linux_kvm() -> Watchdog {
    if let Some(why) = linux_kvm_unavailable() {
        panic!(
            "this test boots a Linux guest and cannot run here: {why}. \
             Run it through `cargo xtask test`, which uses the rig (README.md) on such machines."
        );
    }
    Watchdog::arm(TEST_LIMIT)
}

/// The directory holding the workspace's built binaries (target/debug or target/release),
/// found from the test executable's own path (target/<profile>/deps/<test>).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Path of a workspace binary (`ironpod`, `ironpod-vmm`), failing with a hint if it was not
/// built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} not built: run `cargo build --workspace --bins` first", p.display());
    p
}
