//! The device controller of cgroup v2: which device nodes a container's processes may open
//! or make (`linux.resources.devices`), enforced by a `BPF_PROG_TYPE_CGROUP_DEVICE` program
//! attached to the container's cgroup, as runc does.
//!
//! Rules are read as the runtime spec says: in order, the last one that matches a request
//! decides; a request no rule matches is refused. An allow rule matches a request for
//! access it grants in full (one open for reading and writing needs a rule with both), a
//! deny rule one that asks for any access it names. A spec without a device list gets no
//! program (every device the container can reach is usable: `--privileged`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use ironpod_protocol::AgentError;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::plan::bad;

/// `bpf_cgroup_dev_ctx.access_type`: the device type in the low 16 bits…
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// …the access in the high 16 bits.
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

/// `dst = *(u32 *)(src + off)`
fn load_word(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0)
}
/// `dst &= imm`
fn and_imm(dst: u8, imm: i32) -> Insn {
    insn(0x57, dst, 0, 0, imm)
}
/// `dst >>= imm`
fn rsh_imm(dst: u8, imm: i32) -> Insn {
    insn(0x77, dst, 0, 0, imm)
}
/// `dst = src`
fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// `dst = imm`
fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// `if dst != imm goto +off`
fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x55, dst, 0, off, imm)
}
/// `if dst == imm goto +off`
fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x15, dst, 0, off, imm)
}
/// `if dst != src goto +off`
fn jne_reg(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x5d, dst, src, off, 0)
}
fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}

/// A rule's access letters as the program's bits.
fn access_bits(access: &str) -> Result<i32, AgentError> {
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(bad(format!("device rule access {access:?}: only r, w and m"))),
        };
    }
    Ok(bits)
}

/// The program for `rules`. Registers once loaded: r2 the device type, r3 the access
/// asked for, r4 the major and r5 the minor number. Each rule is a block that jumps to the
/// next one as soon as a field does not match and otherwise returns the rule's verdict;
/// the blocks go last rule first, so the last matching rule decides.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>, AgentError> {
    let mut p = vec![
        load_word(2, 1, 0),
        and_imm(2, 0xffff),
        load_word(3, 1, 0),
        rsh_imm(3, 16),
        load_word(4, 1, 4),
        load_word(5, 1, 8),
    ];
    for rule in rules.iter().rev() {
        // The tests, each a jump to the end of this block; then the verdict.
        let mut tests: Vec<Vec<Insn>> = Vec::new();
        match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => {}
            LinuxDeviceType::B => tests.push(vec![jne_imm(2, DEV_BLOCK, 0)]),
            LinuxDeviceType::C | LinuxDeviceType::U => tests.push(vec![jne_imm(2, DEV_CHAR, 0)]),
            // A fifo is no device: no cgroup rule covers it.
            LinuxDeviceType::P => continue,
        }
        let bits = access_bits(rule.access().as_deref().unwrap_or("rwm"))?;
        if bits != ACC_READ | ACC_WRITE | ACC_MKNOD {
            tests.push(if rule.allow() {
                // All of the access asked for must be the rule's: (r3 & bits) == r3.
                vec![mov_reg(1, 3), and_imm(1, bits), jne_reg(1, 3, 0)]
            } else {
                // Any of it: (r3 & bits) != 0.
                vec![mov_reg(1, 3), and_imm(1, bits), jeq_imm(1, 0, 0)]
            });
        }
        for (reg, number) in [(4, rule.major()), (5, rule.minor())] {
            match number {
                None | Some(-1) => {}
                Some(n) => {
                    let n = u32::try_from(n)
                        .map_err(|_| bad(format!("device rule number {n} is out of range")))?;
                    tests.push(vec![jne_imm(reg, n as i32, 0)]);
                }
            }
        }
        let catch_all = tests.is_empty();
        let len: usize = tests.iter().map(Vec::len).sum::<usize>() + 2;
        let mut at = 0;
        for t in tests {
            for mut i in t {
                at += 1;
                if matches!(i.code, 0x15 | 0x55 | 0x5d) {
                    // Past the rest of the block.
                    i.off = (len - at) as i16;
                }
                p.push(i);
            }
        }
        p.push(mov_imm(0, i32::from(rule.allow())));
        p.push(exit());
        if catch_all {
            // Rules before it never decide anything (and the verifier refuses dead code).
            return Ok(p);
        }
    }
    p.push(mov_imm(0, 0));
    p.push(exit());
    Ok(p)
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, the fields up to `kern_version`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    _pad: [u32; 27],
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    _pad: [u32; 28],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a properly sized, initialised bpf_attr variant for cmd that lives
    // across the call; the kernel reads (and for loads may write the log) within its size.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32)
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads the program for `rules` into the kernel (its verifier checks it).
pub fn load(rules: &[LinuxDeviceCgroup]) -> Result<OwnedFd, AgentError> {
    let insns = program(rules)?;
    let license = c"Apache";
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let fd = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => fd,
        Err(e) => {
            // Once more with the verifier's log, to say why.
            let mut log = vec![0u8; 64 << 10];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let log = String::from_utf8_lossy(&log);
            let log = log.trim_end_matches('\0').trim_end();
            return Err(AgentError::new(
                (&e).into(),
                format!("load the device filter: {e}: {log}"),
            ));
        }
    };
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What every container may do whatever its rules say, appended to them as runc does: make
/// any node, and use the pseudo-devices and terminals the runtime itself sets up (a CRI pod
/// sandbox's spec denies everything, yet it gets its /dev/null).
fn always_allowed() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true).set_typ(Some(typ)).set_major(major).set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    let mut rules = vec![rule(C, None, None, "m"), rule(B, None, None, "m")];
    // null, zero, full, random, urandom, tty, ptmx, tun; then every pts.
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (10, 200)] {
        rules.push(rule(C, Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(C, Some(136), None, "rwm"));
    rules
}

/// Makes `rules` (and what is [`always_allowed`]) the device policy of the cgroup at `dir`,
/// replacing an earlier one.
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), AgentError> {
    let rules: Vec<LinuxDeviceCgroup> = rules.iter().cloned().chain(always_allowed()).collect();
    let prog = load(&rules)?;
    let cgroup = std::fs::File::open(dir)
        .map_err(|e| AgentError::new((&e).into(), format!("open {}: {e}", dir.display())))?;
    let mut attr = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        AgentError::new((&e).into(), format!("attach the device filter to {}: {e}", dir.display()))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    /// Runs the program on one request, as the kernel would (only the instructions
    /// [`program`] emits).
    fn decide(p: &[Insn], typ: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [(typ | (access << 16)) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                0x61 => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                0x57 => r[dst] &= i.imm as u64,
                0x77 => r[dst] >>= i.imm,
                0xbf => r[dst] = r[src],
                0xb7 => r[dst] = i.imm as u64,
                0x55 if r[dst] != i.imm as u64 => pc += i.off as usize,
                0x5d if r[dst] != r[src] => pc += i.off as usize,
                0x15 if r[dst] == i.imm as u64 => pc += i.off as usize,
                0x15 | 0x55 | 0x5d => {}
                0x95 => return r[0],
                c => panic!("unexpected instruction {c:#x}"),
            }
        }
    }

    fn docker_like() -> Vec<LinuxDeviceCgroup> {
        use LinuxDeviceType::{A, B, C};
        vec![
            rule(false, A, None, None, "rwm"),
            rule(true, C, None, None, "m"),
            rule(true, B, None, None, "m"),
            rule(true, C, Some(1), Some(3), "rwm"),
            rule(true, C, Some(136), None, "rwm"),
            rule(false, C, Some(136), Some(7), "w"),
        ]
    }

    #[test]
    fn the_last_matching_rule_decides_and_nothing_else_passes() {
        let p = program(&docker_like()).unwrap();
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(decide(&p, DEV_CHAR, rw, 1, 3), 1, "/dev/null");
        assert_eq!(decide(&p, DEV_CHAR, ACC_MKNOD, 4, 64), 1, "mknod of anything");
        assert_eq!(decide(&p, DEV_BLOCK, ACC_MKNOD, 254, 0), 1);
        assert_eq!(decide(&p, DEV_CHAR, ACC_WRITE, 4, 64), 0, "a serial port");
        assert_eq!(decide(&p, DEV_BLOCK, ACC_READ, 254, 0), 0, "a disk");
        assert_eq!(decide(&p, DEV_CHAR, rw, 136, 3), 1, "any pts");
        assert_eq!(decide(&p, DEV_CHAR, ACC_READ, 136, 7), 1);
        assert_eq!(decide(&p, DEV_CHAR, rw, 136, 7), 0, "its later deny rule");
        assert_eq!(decide(&p, DEV_BLOCK, rw, 1, 3), 0, "the type matters");
        assert_eq!(decide(&program(&[]).unwrap(), DEV_CHAR, ACC_READ, 1, 3), 0);
        let all = [rule(true, LinuxDeviceType::A, None, None, "rwm")];
        assert_eq!(decide(&program(&all).unwrap(), DEV_BLOCK, rw, 254, 0), 1);
        // Rules before a catch-all are left out (they could never decide).
        let mut rules = docker_like();
        rules.push(rule(false, LinuxDeviceType::A, None, None, "rwm"));
        let p = program(&rules).unwrap();
        assert_eq!(p.len(), 8, "{p:?}");
        assert_eq!(decide(&p, DEV_CHAR, ACC_READ, 1, 3), 0);
    }

    #[test]
    fn a_deny_all_spec_still_gets_the_pseudo_devices() {
        let mut rules = vec![rule(false, LinuxDeviceType::A, None, None, "rwm")];
        rules.extend(always_allowed());
        let p = program(&rules).unwrap();
        assert_eq!(decide(&p, DEV_CHAR, ACC_MKNOD, 1, 3), 1);
        assert_eq!(decide(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 1);
        assert_eq!(decide(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 136, 0), 1);
        assert_eq!(decide(&p, DEV_CHAR, ACC_WRITE, 4, 64), 0);
        assert_eq!(decide(&p, DEV_BLOCK, ACC_READ, 254, 0), 0);
        load(&rules).unwrap();
    }

    #[test]
    fn bad_rules_are_refused() {
        let r = rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwx");
        assert!(program(&[r]).unwrap_err().to_string().contains("only r, w and m"));
        let r = rule(true, LinuxDeviceType::C, Some(1 << 40), None, "r");
        assert!(program(&[r]).unwrap_err().to_string().contains("out of range"));
    }

    #[test]
    fn the_kernel_verifier_accepts_the_programs() {
        // Loading needs CAP_BPF (or CAP_SYS_ADMIN): the host tests run as root.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test loads a BPF program and must run as root");
        }
        load(&docker_like()).unwrap();
        load(&[]).unwrap();
        load(&[rule(true, LinuxDeviceType::A, None, None, "rwm")]).unwrap();
        let mut rules = docker_like();
        rules.push(rule(true, LinuxDeviceType::A, None, None, "rwm"));
        load(&rules).unwrap();
    }
}
