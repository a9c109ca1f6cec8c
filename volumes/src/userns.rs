//! virtiofsd's user namespace: entered between fork and exec, so the file server never holds
//! a capability in the host's user namespace.
//!
//! The namespace maps every uid and gid to itself. Files keep Docker's ownership rules (what
//! a container's root creates in a volume is owned by root on the host; `chown` to any id
//! works), while virtiofsd's capabilities count only inside namespaces it owns: no
//! `CAP_DAC_READ_SEARCH` in the host's namespace (so `open_by_handle_at`, the classic way
//! out of a chroot, is refused), no `mknod` of devices, no mounts, `ptrace`, module loads or
//! sysctls on the host. Each virtiofsd gets a namespace of its own, so one pod's cannot reach
//! another's either.

use std::io::Error;

/// The one line written to `uid_map` and `gid_map`: ids 0..2³²-1 map to themselves.
const IDENTITY: &[u8] = b"0 0 4294967295\n";

/// Moves the calling process into a new user namespace with identity uid and gid maps.
///
/// Call only in a single-threaded child between fork and exec (a `pre_exec` hook) while it
/// is still root in the host's namespace: it uses only async-signal-safe system calls. A
/// process cannot write a full map for its own new namespace, so a forked helper, still in
/// the parent namespace, writes it once this one has unshared.
pub(crate) fn enter_identity_userns() -> std::io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: fds is an array of two ints, as pipe2 wants.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::last_os_error());
    }
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // SAFETY: fork in a single-threaded process; the helper only makes async-signal-safe
    // calls and leaves with _exit.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        let e = Error::last_os_error();
        close(rd);
        close(wr);
        return Err(e);
    }
    if helper == 0 {
        close(wr);
        let mut byte = 0u8;
        // SAFETY: reads one byte into a local.
        let n = unsafe { libc::read(rd, (&mut byte as *mut u8).cast(), 1) };
        let ok =
            n == 1 && write_map(me, b"uid_map\0").is_ok() && write_map(me, b"gid_map\0").is_ok();
        // SAFETY: _exit ends the helper without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    close(rd);
    // SAFETY: unshare with a constant flag; the process is single-threaded.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    let unshare_err = Error::last_os_error();
    if unshared == 0 {
        // SAFETY: writes one byte from a constant.
        unsafe { libc::write(wr, b"u".as_ptr().cast(), 1) };
    }
    close(wr);
    let mut status = 0;
    // SAFETY: waits for our own child.
    let waited = unsafe { libc::waitpid(helper, &mut status, 0) };
    if unshared != 0 {
        return Err(unshare_err);
    }
    if waited != helper || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(Error::other("could not write the user namespace's id maps"));
    }
    // Root of the new namespace from here on (its uid 0 is the host's 0), with every
    // capability in it and none outside.
    Ok(())
}

/// Writes [`IDENTITY`] to `/proc/<pid>/<file>` (`file` NUL-terminated), async-signal-safe.
fn write_map(pid: libc::pid_t, file: &[u8]) -> Result<(), ()> {
    let mut path = [0u8; 64];
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        for &b in bytes {
            if len < path.len() {
                path[len] = b;
                len += 1;
            }
        }
    };
    push(b"/proc/");
    let mut digits = [0u8; 12];
    let (mut n, mut i) = (pid as u32, digits.len());
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    push(&digits[i..]);
    push(b"/");
    push(file);
    if path[len - 1] != 0 {
        return Err(());
    }
    // SAFETY: path is NUL-terminated (checked above).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(());
    }
    // SAFETY: writes a constant buffer of its own length.
    let n = unsafe { libc::write(fd, IDENTITY.as_ptr().cast(), IDENTITY.len()) };
    close(fd);
    if n == IDENTITY.len() as isize {
        Ok(())
    } else {
        Err(())
    }
}

fn close(fd: libc::c_int) {
    // SAFETY: closes a descriptor this process opened and owns.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    /// A child that entered the namespace is in a user namespace of its own, root in it, with
    /// the identity map, and cannot make device nodes or read the host's kernel log.
    #[test]
    fn a_child_enters_an_identity_mapped_namespace() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
        let tmp = tempfile::tempdir().unwrap();
        let node = tmp.path().join("null");
        let script = format!(
            "readlink /proc/self/ns/user; cat /proc/self/uid_map /proc/self/gid_map; id -u; \
             mknod {} c 1 3 2>&1 || echo refused; grep CapEff /proc/self/status",
            node.display()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        // SAFETY: enter_identity_userns is made for the time between fork and exec.
        unsafe { cmd.pre_exec(super::enter_identity_userns) };
        let out = cmd.output().unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{s}{}", String::from_utf8_lossy(&out.stderr));
        let host_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
        let mut lines = s.lines();
        assert_ne!(lines.next().unwrap(), host_ns.to_str().unwrap(), "{s}");
        for _ in 0..2 {
            let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
            assert_eq!(map, ["0", "0", "4294967295"], "{s}");
        }
        assert_eq!(lines.next(), Some("0"), "{s}");
        assert!(s.contains("refused"), "a device node was made: {s}");
        assert!(!node.exists());
        // Every capability, but only in its own namespace.
        assert!(s.contains("CapEff:\t000001ffffffffff"), "{s}");
    }
}
