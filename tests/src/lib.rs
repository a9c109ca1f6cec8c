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

/// Fails the calling test, with the reason, when Linux guests cannot run on this machine.
pub fn require_linux_kvm() {
    if let Some(why) = linux_kvm_unavailable() {
        panic!(
            "this test boots a Linux guest and cannot run here: {why}. \
             Run it through `cargo xtask test`, which uses the rig (README.md) on such machines."
        );
    }
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
