//! OCI seccomp profiles compiled to BPF with seccompiler.
//!
//! seccompiler builds filters with a single on-match action, while an OCI profile gives each
//! rule its own action. The kernel runs every installed filter and keeps the most
//! restrictive answer, so a profile becomes a stack of filters: one per distinct rule action
//! (match → that action, otherwise allow), plus one for the default action (any listed
//! syscall whose conditions hold → allow, otherwise the default action).

use std::collections::BTreeMap;
use std::str::FromStr;

use ironpod_protocol::{AgentError, ErrorKind};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::plan::bad;

/// A compiled program as (code, jt, jf, k) tuples.
pub type Program = Vec<(u16, u8, u8, u32)>;

fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    default_errno: u32,
) -> Result<SeccompAction, AgentError> {
    use LinuxSeccompAction as A;
    Ok(match a {
        A::ScmpActKill | A::ScmpActKillThread => SeccompAction::KillThread,
        A::ScmpActKillProcess => SeccompAction::KillProcess,
        A::ScmpActTrap => SeccompAction::Trap,
        A::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(default_errno)),
        A::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(default_errno)),
        A::ScmpActLog => SeccompAction::Log,
        A::ScmpActAllow => SeccompAction::Allow,
        other => {
            return Err(AgentError::new(
                ErrorKind::Unsupported,
                format!("seccomp action {other:?} is not supported"),
            ))
        }
    })
}

fn condition(a: &oci_spec::runtime::LinuxSeccompArg) -> Result<SeccompCondition, AgentError> {
    if a.index() > 5 {
        return Err(bad(format!("seccomp argument index {} is above 5", a.index())));
    }
    let (op, value) = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            (SeccompCmpOp::MaskedEq(a.value()), a.value_two().unwrap_or(0))
        }
    };
    SeccompCondition::new(a.index() as u8, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| bad(format!("seccomp condition: {e}")))
}

fn program(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<Program, AgentError> {
    let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)
        .map_err(|e| bad(format!("seccomp filter: {e}")))?;
    let bpf = BpfProgram::try_from(filter).map_err(|e| bad(format!("seccomp filter: {e}")))?;
    if bpf.len() > 4096 {
        return Err(bad("seccomp filter longer than 4096 instructions"));
    }
    Ok(bpf.into_iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect())
}

/// Rules per syscall number; an empty list matches the syscall unconditionally.
#[derive(Default)]
struct RuleSet {
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    unconditional: std::collections::BTreeSet<i64>,
}

impl RuleSet {
    fn add(&mut self, nr: i64, rule: Option<SeccompRule>) {
        if self.unconditional.contains(&nr) {
            return;
        }
        let entry = self.rules.entry(nr).or_default();
        match rule {
            None => {
                entry.clear();
                self.unconditional.insert(nr);
            }
            Some(r) => entry.push(r),
        }
    }
}

/// Compiles a profile into the programs to install, in order.
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<Program>, AgentError> {
    let default_errno = s.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(s.default_action(), s.default_errno_ret(), default_errno)?;
    if s.listener_path().is_some() {
        return Err(AgentError::new(
            ErrorKind::Unsupported,
            "seccomp notify listeners are not supported",
        ));
    }
    // Rules grouped by action; every listed syscall also goes into the default filter.
    let mut by_action: Vec<(SeccompAction, RuleSet)> = Vec::new();
    let mut listed = RuleSet::default();
    for sc in s.syscalls().clone().unwrap_or_default() {
        let act = action(sc.action(), sc.errno_ret(), libc::EPERM as u32)?;
        if act == default {
            continue;
        }
        let conds = sc
            .args()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()?;
        let rule = if conds.is_empty() {
            None
        } else {
            Some(SeccompRule::new(conds).map_err(|e| bad(format!("seccomp rule: {e}")))?)
        };
        for name in sc.names() {
            // Names this kernel's table lacks are skipped, as libseccomp-based runtimes do.
            let Ok(nr) = syscalls::Sysno::from_str(name) else { continue };
            let nr = nr.id() as i64;
            listed.add(nr, rule.clone());
            if act != SeccompAction::Allow {
                let i = match by_action.iter().position(|(a, _)| *a == act) {
                    Some(i) => i,
                    None => {
                        by_action.push((act.clone(), RuleSet::default()));
                        by_action.len() - 1
                    }
                };
                by_action[i].1.add(nr, rule.clone());
            }
        }
    }
    let mut out = Vec::new();
    if default != SeccompAction::Allow {
        out.push(program(listed.rules, default, SeccompAction::Allow)?);
    }
    for (act, set) in by_action {
        if !set.rules.is_empty() {
            out.push(program(set.rules, SeccompAction::Allow, act)?);
        }
    }
    Ok(out)
}

/// Installs one program (no_new_privs or CAP_SYS_ADMIN must hold).
pub fn install(p: &Program) -> std::io::Result<()> {
    let filter: Vec<libc::sock_filter> =
        p.iter().map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k }).collect();
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
    // SAFETY: prog points at `filter`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog as libc::c_ulong,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn default_errno_with_allow_list() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read","write","no_such_call"],"action":"SCMP_ACT_ALLOW"},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW",
                 "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},
                {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
        );
        let progs = compile(&p).unwrap();
        assert_eq!(progs.len(), 2, "default filter + the ENOSYS filter");
        assert!(progs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn allow_by_default_with_a_deny_list() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        assert_eq!(compile(&p).unwrap().len(), 1);
    }

    #[test]
    fn bad_profiles() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","args":[{"index":9,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(compile(&p).is_err());
        let p = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        assert!(compile(&p).is_err());
    }

    #[test]
    fn an_installed_filter_denies_in_a_child() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        );
        let progs = compile(&p).unwrap();
        // SAFETY: fork in a test; the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain prctl.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let ok = progs.iter().all(|p| install(p).is_ok());
            // SAFETY: plain syscalls in the child.
            let r = unsafe { libc::getppid() };
            let code = if ok && r == -1 { 0 } else { 1 };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    #[test]
    fn a_masked_argument_rule_sees_only_the_low_32_bits() {
        // ironpod's default profile denies AF_VSOCK (40) so: the kernel reads the family as
        // an int, so garbage in the register's upper half must not slip past the rule.
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":97,
                 "args":[{"index":0,"value":4294967295,"valueTwo":40,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        );
        let progs = compile(&p).unwrap();
        // SAFETY: fork in a test; the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain prctl and socket calls in the child.
            let code = unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let ok = progs.iter().all(|p| install(p).is_ok());
                let errno = || *libc::__errno_location();
                let vsock = libc::syscall(libc::SYS_socket, 40i64, libc::SOCK_STREAM, 0);
                let vsock_errno = errno();
                let high = libc::syscall(libc::SYS_socket, 0x1_0000_0028i64, libc::SOCK_STREAM, 0);
                let high_errno = errno();
                let unix = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let denied = |r: i64, e: i32| r == -1 && e == libc::EAFNOSUPPORT;
                i32::from(
                    !(ok && denied(vsock, vsock_errno) && denied(high, high_errno) && unix >= 0),
                )
            };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
