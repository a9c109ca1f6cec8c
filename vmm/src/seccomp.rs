//! The VMM's seccomp filters: one allowlist per kind of thread, compiled to BPF at build time
//! from `seccomp/x86_64.json` (see `build.rs`), installed before the guest runs.
//!
//! - `vmm`: the main thread, which runs the event loop (devices' queues, the vsock muxer,
//!   the control API, the console, termination signals). It installs its filter after the
//!   vCPU threads started and before it handles the first event.
//! - `vcpu`: each vCPU thread, before its first `KVM_RUN` (so before the first guest
//!   instruction). Its MMIO and port I/O handlers run here too.
//!
//! A syscall outside a thread's list traps: the SIGSYS handler writes
//! `ironpod-vmm: killed by its seccomp filter (syscall N, args A, B, C)` on stderr and the VMM exits with
//! status [`SECCOMP_EXIT`]. `ironpod-vmm --no-seccomp` skips the filters (debugging only).

use std::io;

use seccompiler::{BpfProgram, Error as SeccompError};

include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));

/// The VMM's exit status when its seccomp filter stopped it (128 + SIGSYS).
pub const SECCOMP_EXIT: i32 = 128 + libc::SIGSYS;

/// The kinds of threads with a filter of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread: setup, then the event loop.
    Vmm,
    /// A vCPU thread.
    Vcpu,
}

/// The BPF program of a thread kind.
pub fn program(kind: ThreadKind) -> BpfProgram {
    let insns = match kind {
        ThreadKind::Vmm => VMM_FILTER,
        ThreadKind::Vcpu => VCPU_FILTER,
    };
    insns.iter().map(|&(code, jt, jf, k)| seccompiler::sock_filter { code, jt, jf, k }).collect()
}

/// Installs the filter of `kind` on the calling thread (it also sets `no_new_privs`).
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    seccompiler::apply_filter(&program(kind))
}

/// Offset of `si_syscall` in `siginfo_t` for SIGSYS, in `i32`s (x86_64: after si_signo,
/// si_errno, si_code, padding, and the 8-byte si_call_addr).
const SI_SYSCALL_OFFSET: usize = 6;

/// Appends `n` in decimal to `buf` at `*len`.
fn push_decimal(buf: &mut [u8], len: &mut usize, n: i64) {
    let mut digits = [0u8; 20];
    let mut v = n.unsigned_abs();
    let mut d = 0;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        buf[*len] = b'-';
        *len += 1;
    }
    while d > 0 {
        d -= 1;
        buf[*len] = digits[d];
        *len += 1;
    }
}

/// Appends `n` in hexadecimal (`0x…`) to `buf` at `*len`.
fn push_hex(buf: &mut [u8], len: &mut usize, n: u64) {
    buf[*len..*len + 2].copy_from_slice(b"0x");
    *len += 2;
    let mut started = false;
    for i in (0..16).rev() {
        let nib = ((n >> (i * 4)) & 0xf) as u8;
        if nib != 0 || started || i == 0 {
            started = true;
            buf[*len] = if nib < 10 { b'0' + nib } else { b'a' + nib - 10 };
            *len += 1;
        }
    }
}

/// Writes `ironpod-vmm: killed by its seccomp filter (syscall N, args A, B, C)` and exits:
/// what a thread that made a forbidden syscall runs instead of it.
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel hands a SIGSYS handler a valid siginfo_t whose si_syscall field
    // lies at this offset on x86_64.
    let nr = unsafe { *(info as *const i32).add(SI_SYSCALL_OFFSET) };
    // SAFETY: with SA_SIGINFO the third argument is the interrupted thread's ucontext_t,
    // whose registers hold the syscall's arguments (rdi, rsi, rdx).
    let args = unsafe {
        let g = &(*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs;
        [g[libc::REG_RDI as usize], g[libc::REG_RSI as usize], g[libc::REG_RDX as usize]]
    };
    let mut buf = [0u8; 160];
    let prefix = b"ironpod-vmm: killed by its seccomp filter (syscall ";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut len = prefix.len();
    push_decimal(&mut buf, &mut len, nr as i64);
    buf[len..len + 7].copy_from_slice(b", args ");
    len += 7;
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            buf[len..len + 2].copy_from_slice(b", ");
            len += 2;
        }
        push_hex(&mut buf, &mut len, *a as u64);
    }
    buf[len..len + 2].copy_from_slice(b")\n");
    len += 2;
    // SAFETY: write(2) and _exit(2) are async-signal-safe and in every thread's allowlist
    // (write, exit_group); the buffer is valid for `len` bytes.
    unsafe {
        libc::write(2, buf.as_ptr() as *const libc::c_void, len);
        libc::_exit(SECCOMP_EXIT);
    }
}

/// Installs the SIGSYS handler that reports a forbidden syscall (process-wide; call before
/// installing filters).
pub fn install_sigsys_handler() -> io::Result<()> {
    // SAFETY: sigaction is plain data; zeroed is a valid empty value, then filled in.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = on_sigsys as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `act.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: installs a handler for SIGSYS with a valid sigaction; the old one is not needed.
    if unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child and returns its wait status.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the test harness may run threads; the child only runs `f` (no allocation:
        // async-signal-safe calls and installing a filter built before) and then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let code = f();
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    #[test]
    fn both_filters_compile_and_load() {
        for kind in [ThreadKind::Vmm, ThreadKind::Vcpu] {
            // Built before the fork: the child of a threaded process must not allocate.
            let prog = program(kind);
            assert!(!prog.is_empty(), "{kind:?}");
            let status = in_child(|| match seccompiler::apply_filter(&prog) {
                Ok(()) => 0,
                Err(_) => 3,
            });
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{kind:?}");
        }
    }

    /// Syscalls no VMM thread may make, each as a closure that makes it.
    fn forbidden() -> Vec<(&'static str, fn())> {
        vec![
            ("mount", || {
                // SAFETY: a plain syscall; the filter stops it before it runs.
                unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) };
            }),
            ("executable memory", || {
                // SAFETY: an anonymous mapping; the filter stops it before it runs.
                unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
            }),
            ("an internet socket", || {
                // SAFETY: as above.
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            }),
            ("a terminal ioctl", || {
                // SAFETY: as above.
                unsafe { libc::ioctl(0, libc::TIOCSTI, b"x".as_ptr()) };
            }),
        ]
    }

    #[test]
    fn a_forbidden_syscall_ends_the_process_with_the_seccomp_status() {
        for kind in [ThreadKind::Vmm, ThreadKind::Vcpu] {
            let prog = program(kind);
            for (what, call) in forbidden() {
                let status = in_child(|| {
                    if install_sigsys_handler().is_err()
                        || seccompiler::apply_filter(&prog).is_err()
                    {
                        return 3;
                    }
                    call();
                    4
                });
                assert!(libc::WIFEXITED(status), "{kind:?}, {what}: {status:#x}");
                assert_eq!(libc::WEXITSTATUS(status), SECCOMP_EXIT, "{kind:?}, {what}");
            }
        }
    }

    #[test]
    fn allowed_memory_and_sockets_still_work() {
        let prog = program(ThreadKind::Vmm);
        let status = in_child(|| {
            if install_sigsys_handler().is_err() || seccompiler::apply_filter(&prog).is_err() {
                return 3;
            }
            // SAFETY: plain syscalls on our own resources.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED
                    || libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_WRITE) != 0
                {
                    return 5;
                }
                if libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) < 0 {
                    return 6;
                }
                if libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC) < 0 {
                    return 7;
                }
            }
            0
        });
        assert!(libc::WIFEXITED(status), "{status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    /// README's table of the allowlists, as the JSON says it must read: one row per syscall,
    /// a column per thread (`yes`, or the allowed ioctl requests), and why.
    fn expected_table() -> String {
        struct Row {
            name: String,
            cells: [Vec<String>; 2],
            why: Vec<String>,
        }
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../seccomp/x86_64.json")).unwrap();
        let mut rows: Vec<Row> = Vec::new();
        for (col, thread) in ["vmm", "vcpu"].into_iter().enumerate() {
            for rule in json[thread]["filter"].as_array().unwrap() {
                let name = rule["syscall"].as_str().unwrap().to_string();
                let i = match rows.iter().position(|r| r.name == name) {
                    Some(i) => i,
                    None => {
                        rows.push(Row { name, cells: Default::default(), why: Vec::new() });
                        rows.len() - 1
                    }
                };
                let row = &mut rows[i];
                row.cells[col].push(match rule["args"].as_array() {
                    Some(args) => args
                        .iter()
                        .filter_map(|a| a["comment"].as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    None => "yes".into(),
                });
                let why = rule["comment"].as_str().unwrap_or("").to_string();
                if !why.is_empty() && !row.why.contains(&why) {
                    row.why.push(why);
                }
            }
        }
        let mut out = String::from("| syscall | vmm | vcpu | why |\n|---|---|---|---|\n");
        for r in rows {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                r.name,
                r.cells[0].join(", "),
                r.cells[1].join(", "),
                r.why.join("; ")
            ));
        }
        out
    }

    /// The KVM ioctl numbers in the JSON are the kernel's, computed from the structures'
    /// sizes as `_IOR`/`_IOW`/`_IOWR` do.
    #[test]
    fn kvm_ioctl_numbers_match_the_structures() {
        use kvm_bindings::*;
        use std::mem::size_of;
        let ioc =
            |dir: u64, nr: u64, size: usize| (dir << 30) | ((size as u64) << 16) | (0xae << 8) | nr;
        let (none, r, rw) = (0, 2, 3);
        let expected: std::collections::HashMap<&str, u64> = [
            ("KVM_RUN", ioc(none, 0x80, 0)),
            ("KVM_CHECK_EXTENSION", ioc(none, 0x03, 0)),
            ("KVM_GET_MSR_INDEX_LIST", ioc(rw, 0x02, size_of::<kvm_msr_list>())),
            ("KVM_GET_TSC_KHZ", ioc(none, 0xa3, 0)),
            ("KVM_GET_REGS", ioc(r, 0x81, size_of::<kvm_regs>())),
            ("KVM_GET_SREGS", ioc(r, 0x83, size_of::<kvm_sregs>())),
            ("KVM_GET_MSRS", ioc(rw, 0x88, size_of::<kvm_msrs>())),
            ("KVM_GET_CPUID2", ioc(rw, 0x91, size_of::<kvm_cpuid2>())),
            ("KVM_GET_LAPIC", ioc(r, 0x8e, size_of::<kvm_lapic_state>())),
            ("KVM_GET_MP_STATE", ioc(r, 0x98, size_of::<kvm_mp_state>())),
            ("KVM_GET_VCPU_EVENTS", ioc(r, 0x9f, size_of::<kvm_vcpu_events>())),
            ("KVM_GET_DEBUGREGS", ioc(r, 0xa1, size_of::<kvm_debugregs>())),
            ("KVM_GET_XSAVE", ioc(r, 0xa4, size_of::<kvm_xsave>())),
            ("KVM_GET_XCRS", ioc(r, 0xa6, size_of::<kvm_xcrs>())),
            ("KVM_GET_IRQCHIP", ioc(rw, 0x62, size_of::<kvm_irqchip>())),
            ("KVM_GET_PIT2", ioc(r, 0x9f, size_of::<kvm_pit_state2>())),
            ("KVM_GET_CLOCK", ioc(r, 0x7c, size_of::<kvm_clock_data>())),
        ]
        .into_iter()
        .collect();
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../seccomp/x86_64.json")).unwrap();
        let mut seen = 0;
        for thread in ["vmm", "vcpu"] {
            for rule in json[thread]["filter"].as_array().unwrap() {
                for arg in rule["args"].as_array().into_iter().flatten() {
                    let name = arg["comment"].as_str().unwrap_or("");
                    if name.starts_with("KVM_") {
                        let want = expected.get(name).unwrap_or_else(|| panic!("{name}?"));
                        assert_eq!(arg["val"].as_u64(), Some(*want), "{name}");
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(seen, expected.len());
    }

    #[test]
    fn readme_lists_every_allowed_syscall() {
        let table = expected_table();
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&table),
            "vmm/README.md's seccomp table does not match seccomp/x86_64.json; it must read:\n{table}"
        );
    }

    #[test]
    fn without_the_handler_sigsys_kills() {
        let prog = program(ThreadKind::Vcpu);
        let status = in_child(|| {
            if seccompiler::apply_filter(&prog).is_err() {
                return 3;
            }
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) };
            4
        });
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS, "{status:#x}");
    }
}
