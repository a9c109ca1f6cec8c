//! Facts about the host that decide what it can run.

use std::path::Path;

/// Why this host cannot run Linux guests on KVM, or `None` when it can: the CPU must have
/// hardware virtualization (vmx or svm) and /dev/kvm must be a real KVM, not kvm_pvm (a
/// software nested hypervisor on which Linux guests do not boot).
pub fn linux_guest_blocker() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw {
        return Some("the CPU has no vmx/svm flag, so KVM cannot run a Linux guest here".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Some(
            "/dev/kvm is kvm_pvm (software nested virtualization), which cannot boot Linux".into(),
        );
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Some(format!("cannot open /dev/kvm: {e}"));
    }
    None
}
