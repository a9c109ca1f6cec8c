//! The request handlers. Every argument comes from the host and is checked.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use ironpod_protocol::{AgentError, ErrorKind, GuestInfo, RequestBody, ResponseBody, MAX_READ};

use crate::{container, init};

type Result<T> = std::result::Result<T, AgentError>;

fn bad(msg: impl Into<String>) -> AgentError {
    AgentError::new(ErrorKind::BadRequest, msg)
}

fn with_path(path: &str, e: std::io::Error) -> AgentError {
    AgentError::new(ErrorKind::from(&e), format!("{path}: {e}"))
}

/// Checks that a path from the host is absolute and NUL-free.
pub fn absolute(path: &str) -> Result<&Path> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(bad(format!("path must be absolute and NUL-free: {path:?}")));
    }
    Ok(Path::new(path))
}

/// Answers one request (everything except Shutdown, which the session handles).
pub fn handle(body: RequestBody) -> Result<ResponseBody> {
    match body {
        RequestBody::Ping { nonce } => Ok(ResponseBody::Pong { nonce }),
        RequestBody::Info => info().map(ResponseBody::Info),
        RequestBody::Mount { source, target, fstype, read_only, options } => {
            mount(&source, &target, &fstype, read_only, options.as_deref())
        }
        RequestBody::ReadFile { path, offset, max_len } => read_file(&path, offset, max_len),
        RequestBody::WriteFile { path, data, append, attrs } => {
            write_file(&path, &data, append, attrs)
        }
        RequestBody::CreateContainer(req) => {
            container::runtime().create(req).map(|pid| ResponseBody::Created { pid })
        }
        RequestBody::ExecProcess(req) => {
            container::runtime().exec(req).map(|pid| ResponseBody::Created { pid })
        }
        RequestBody::StartProcess(p) => container::runtime().start(&p).map(|()| ResponseBody::Done),
        RequestBody::WaitProcess(p) => container::runtime().wait(&p).map(ResponseBody::Exited),
        RequestBody::Signal { process, signal, all, group } => {
            let target = if all {
                container::SignalTarget::Container
            } else if group {
                container::SignalTarget::Group
            } else {
                container::SignalTarget::Process
            };
            container::runtime().signal(&process, signal, target).map(|()| ResponseBody::Done)
        }
        RequestBody::ResizePty { process, rows, cols } => {
            container::runtime().resize(&process, rows, cols).map(|()| ResponseBody::Done)
        }
        RequestBody::CloseStdin(p) => {
            container::runtime().close_stdin(&p).map(|()| ResponseBody::Done)
        }
        RequestBody::ListProcesses { container } => {
            container::runtime().processes(&container).map(ResponseBody::Processes)
        }
        RequestBody::Stats { container } => {
            container::runtime().stats(&container).map(ResponseBody::Stats)
        }
        RequestBody::Freeze { container, frozen } => {
            container::runtime().set_frozen(&container, frozen).map(|()| ResponseBody::Done)
        }
        RequestBody::UpdateResources { container, resources } => {
            container::runtime().update(&container, &resources).map(|()| ResponseBody::Done)
        }
        RequestBody::Commit { container } => {
            container::runtime().commit(&container).map(ResponseBody::Committed)
        }
        RequestBody::ReleaseProcess(p) => {
            container::runtime().release(&p).map(|()| ResponseBody::Done)
        }
        RequestBody::StatPath { container, path } => {
            container::runtime().stat_path(&container, &path).map(ResponseBody::PathStat)
        }
        RequestBody::Changes { container } => {
            container::runtime().changes(&container).map(ResponseBody::Changes)
        }
        RequestBody::RemoveFile { path } => {
            let p = absolute(&path)?;
            std::fs::remove_file(p).map_err(|e| with_path(&path, e))?;
            Ok(ResponseBody::Done)
        }
        RequestBody::Symlink { target, path } => symlink(&target, &path),
        RequestBody::Rename { from, to } => {
            std::fs::rename(absolute(&from)?, absolute(&to)?).map_err(|e| with_path(&from, e))?;
            Ok(ResponseBody::Done)
        }
        RequestBody::RemoveTree { path } => {
            let p = absolute(&path)?;
            if p.parent().is_none() {
                return Err(bad("the root cannot be removed"));
            }
            std::fs::remove_dir_all(p).map_err(|e| with_path(&path, e))?;
            Ok(ResponseBody::Done)
        }
        RequestBody::MakeDir { path, attrs } => make_dir(&path, attrs),
        RequestBody::ConfigureNetwork(cfg) => {
            crate::net::configure(&cfg).map(|()| ResponseBody::Done)
        }
        RequestBody::ReleaseDisk { serial } => {
            container::storage::release_layer(&serial).map(|()| ResponseBody::Done)
        }
        RequestBody::DeleteContainer { container, discard_changes } => {
            container::runtime().delete(&container, discard_changes).map(|()| ResponseBody::Done)
        }
        RequestBody::Restored { entropy, unix_time_ns, trace } => {
            if trace {
                crate::log::trace_from_now();
            }
            crate::reseed::restored(&entropy, unix_time_ns).map(|()| ResponseBody::Done)
        }
        RequestBody::Shutdown
        | RequestBody::OpenStdio { .. }
        | RequestBody::OpenFile { .. }
        | RequestBody::ReadArchive { .. }
        | RequestBody::WriteArchive(_) => {
            Err(AgentError::new(ErrorKind::Unsupported, "handled by the session"))
        }
    }
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Counts CPUs in a list like `0-3,5`.
fn count_cpu_list(list: &str) -> u32 {
    list.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u32::from(part.parse::<u32>().is_ok()),
        })
        .sum()
}

fn info() -> Result<GuestInfo> {
    // SAFETY: utsname is plain data filled by uname(2).
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid out pointer.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: uname NUL-terminates the release field.
    let release =
        unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy().into_owned();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let uptime_ms = first_line("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0);
    Ok(GuestInfo {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release: release,
        boot_id: first_line("/proc/sys/kernel/random/boot_id"),
        cpus_online: count_cpu_list(&first_line("/sys/devices/system/cpu/online")),
        memory_total_kib: mem_kib,
        uptime_ms,
    })
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    read_only: bool,
    options: Option<&str>,
) -> Result<ResponseBody> {
    let target_path = absolute(target)?;
    if source.is_empty() || fstype.is_empty() || source.contains('\0') || fstype.contains('\0') {
        return Err(bad("mount source and fstype must be non-empty and NUL-free"));
    }
    std::fs::create_dir_all(target_path).map_err(|e| with_path(target, e))?;
    let flags = if read_only { libc::MS_RDONLY } else { 0 };
    init::mount(source, target, fstype, flags, options.unwrap_or(""))
        .map_err(|e| with_path(&format!("mount {source} on {target}"), e))?;
    Ok(ResponseBody::Done)
}

fn read_file(path: &str, offset: u64, max_len: u32) -> Result<ResponseBody> {
    let p = absolute(path)?;
    let mut f = File::open(p).map_err(|e| with_path(path, e))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| with_path(path, e))?;
    let want = max_len.min(MAX_READ) as usize;
    let mut data = Vec::with_capacity(want);
    Read::by_ref(&mut f)
        .take(want as u64)
        .read_to_end(&mut data)
        .map_err(|e| with_path(path, e))?;
    // EOF if fewer bytes than asked came back, or nothing is left after them.
    let eof = data.len() < want || {
        let mut probe = [0u8; 1];
        matches!(f.read(&mut probe), Ok(0))
    };
    Ok(ResponseBody::Data { data, eof })
}

fn symlink(target: &str, path: &str) -> Result<ResponseBody> {
    let p = absolute(path)?;
    if target.is_empty() || target.contains('\0') {
        return Err(bad(format!("bad link target {target:?}")));
    }
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(|e| with_path(path, e))?;
    }
    std::os::unix::fs::symlink(target, p).map_err(|e| with_path(path, e))?;
    Ok(ResponseBody::Done)
}

fn write_file(
    path: &str,
    data: &[u8],
    append: bool,
    attrs: Option<ironpod_protocol::FileAttrs>,
) -> Result<ResponseBody> {
    use std::os::unix::fs::{fchown, PermissionsExt};
    let p = absolute(path)?;
    if let Some(a) = attrs {
        if a.mode > 0o7777 {
            return Err(AgentError::new(
                ErrorKind::BadRequest,
                format!("file mode {:#o} is not permission bits", a.mode),
            ));
        }
    }
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(|e| with_path(path, e))?;
    }
    let mut opts = OpenOptions::new();
    opts.write(true).create(true);
    if append {
        opts.append(true);
    } else {
        opts.truncate(true);
    }
    let mut f = opts.open(p).map_err(|e| with_path(path, e))?;
    if let Some(a) = attrs {
        // Owner first: chown clears set-id bits, which the mode then sets.
        fchown(&f, Some(a.uid), Some(a.gid)).map_err(|e| with_path(path, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(a.mode))
            .map_err(|e| with_path(path, e))?;
    }
    f.write_all(data).map_err(|e| with_path(path, e))?;
    f.sync_all().map_err(|e| with_path(path, e))?;
    Ok(ResponseBody::Done)
}

/// Makes a directory and its parents; sets the last one's mode and owner through a
/// descriptor of it (a link in its place is not followed). One on the pod's writable disk
/// (under [`ironpod_protocol::WRITABLE_DIR`]) waits for the disk's mount.
fn make_dir(path: &str, attrs: Option<ironpod_protocol::FileAttrs>) -> Result<ResponseBody> {
    use std::os::unix::fs::{fchown, OpenOptionsExt, PermissionsExt};
    let p = absolute(path)?;
    if attrs.is_some_and(|a| a.mode > 0o7777) {
        return Err(bad("a directory mode is permission bits (at most 0o7777)"));
    }
    // A directory on the pod's writable disk: the disk is mounted first (its mount may be
    // under way since boot; made before it, the directory would be hidden under it).
    let rw = format!("{}/", ironpod_protocol::WRITABLE_DIR);
    if let Some(serial) = path.strip_prefix(&rw).and_then(|r| r.split('/').next()) {
        container::storage::writable(serial)?;
    }
    std::fs::create_dir_all(p).map_err(|e| with_path(path, e))?;
    if let Some(a) = attrs {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(p)
            .map_err(|e| with_path(path, e))?;
        fchown(&dir, Some(a.uid), Some(a.gid)).map_err(|e| with_path(path, e))?;
        dir.set_permissions(std::fs::Permissions::from_mode(a.mode))
            .map_err(|e| with_path(path, e))?;
    }
    Ok(ResponseBody::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_dir_sets_mode() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        let attrs = ironpod_protocol::FileAttrs { mode: 0o1777, uid: 0, gid: 0 };
        let me = ironpod_protocol::FileAttrs { uid: my_ids().0, gid: my_ids().1, ..attrs };
        handle(RequestBody::MakeDir { path: d.to_string_lossy().into(), attrs: Some(me) }).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777);
        handle(RequestBody::MakeDir { path: d.to_string_lossy().into(), attrs: None }).unwrap();
        assert!(handle(RequestBody::MakeDir { path: "rel".into(), attrs: None }).is_err());
        let big = ironpod_protocol::FileAttrs { mode: 0o17777, ..me };
        assert!(handle(RequestBody::MakeDir {
            path: d.to_string_lossy().into(),
            attrs: Some(big)
        })
        .is_err());
    }

    /// This process's uid and gid.
    fn my_ids() -> (u32, u32) {
        // SAFETY: getuid and getgid cannot fail.
        unsafe { (libc::getuid(), libc::getgid()) }
    }

    #[test]
    fn ping_and_info() {
        assert_eq!(
            handle(RequestBody::Ping { nonce: 5 }).unwrap(),
            ResponseBody::Pong { nonce: 5 }
        );
        let ResponseBody::Info(i) = handle(RequestBody::Info).unwrap() else { panic!() };
        assert!(!i.kernel_release.is_empty());
        assert!(i.cpus_online >= 1);
        assert!(i.memory_total_kib > 0);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-1\n"), 2);
        assert_eq!(count_cpu_list("0,2-3"), 3);
        assert_eq!(count_cpu_list("0"), 1);
        assert_eq!(count_cpu_list("3-1,x,"), 0);
    }

    #[test]
    fn written_files_take_the_mode_and_owner_asked_for() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key").to_string_lossy().into_owned();
        let me = (nix_ids().0, nix_ids().1);
        let attrs = ironpod_protocol::FileAttrs { mode: 0o640, uid: me.0, gid: me.1 };
        let write = |mode| {
            handle(RequestBody::WriteFile {
                path: p.clone(),
                data: b"k".to_vec(),
                append: false,
                attrs: Some(ironpod_protocol::FileAttrs { mode, ..attrs }),
            })
        };
        write(0o640).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, me.0, me.1));
        // An existing file takes the new mode too; bits beyond permissions are refused.
        write(0o400).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o400);
        assert!(write(0o100644).is_err());
    }

    #[test]
    fn links_renames_and_trees() {
        let dir = tempfile::tempdir().unwrap();
        let d = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
        let write = |p: String| {
            handle(RequestBody::WriteFile {
                path: p,
                data: b"v1".to_vec(),
                append: false,
                attrs: None,
            })
        };
        write(d("vol/..t1/key")).unwrap();
        handle(RequestBody::Symlink { target: "..t1".into(), path: d("vol/..data_tmp") }).unwrap();
        handle(RequestBody::Rename { from: d("vol/..data_tmp"), to: d("vol/..data") }).unwrap();
        handle(RequestBody::Symlink { target: "..data/key".into(), path: d("vol/key") }).unwrap();
        assert_eq!(std::fs::read(d("vol/key")).unwrap(), b"v1");
        // A new version replaces the link in one step; the old tree goes.
        write(d("vol/..t2/key")).unwrap();
        handle(RequestBody::Symlink { target: "..t2".into(), path: d("vol/..data_tmp") }).unwrap();
        handle(RequestBody::Rename { from: d("vol/..data_tmp"), to: d("vol/..data") }).unwrap();
        handle(RequestBody::RemoveTree { path: d("vol/..t1") }).unwrap();
        assert!(!dir.path().join("vol/..t1").exists());
        assert_eq!(std::fs::read_link(d("vol/..data")).unwrap(), Path::new("..t2"));
        // Refused: the root, relative paths, empty targets, an existing link.
        assert!(handle(RequestBody::RemoveTree { path: "/".into() }).is_err());
        assert!(handle(RequestBody::Rename { from: "a".into(), to: d("b") }).is_err());
        assert!(handle(RequestBody::Symlink { target: "".into(), path: d("x") }).is_err());
        assert!(handle(RequestBody::Symlink { target: "y".into(), path: d("vol/key") }).is_err());
    }

    fn nix_ids() -> (u32, u32) {
        // SAFETY: getuid and getgid cannot fail.
        unsafe { (libc::getuid(), libc::getgid()) }
    }

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f").to_string_lossy().into_owned();
        handle(RequestBody::WriteFile {
            path: p.clone(),
            data: b"hello".to_vec(),
            append: false,
            attrs: None,
        })
        .unwrap();
        handle(RequestBody::WriteFile {
            path: p.clone(),
            data: b" world".to_vec(),
            append: true,
            attrs: None,
        })
        .unwrap();
        let r = handle(RequestBody::ReadFile { path: p.clone(), offset: 0, max_len: 100 }).unwrap();
        assert_eq!(r, ResponseBody::Data { data: b"hello world".to_vec(), eof: true });
        let r = handle(RequestBody::ReadFile { path: p.clone(), offset: 6, max_len: 3 }).unwrap();
        assert_eq!(r, ResponseBody::Data { data: b"wor".to_vec(), eof: false });
        let r = handle(RequestBody::ReadFile { path: p, offset: 1 << 40, max_len: 3 }).unwrap();
        assert_eq!(r, ResponseBody::Data { data: vec![], eof: true });
    }

    #[test]
    fn hostile_arguments() {
        let e = handle(RequestBody::ReadFile { path: "relative".into(), offset: 0, max_len: 1 })
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        let e =
            handle(RequestBody::ReadFile { path: "/nonexistent/x".into(), offset: 0, max_len: 1 })
                .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        let e = handle(RequestBody::WriteFile {
            path: "/a\0b".into(),
            data: vec![],
            append: false,
            attrs: None,
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        let e = handle(RequestBody::Mount {
            source: "".into(),
            target: "/x".into(),
            fstype: "ext4".into(),
            read_only: false,
            options: None,
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        // A huge max_len is capped, not allocated.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 10]).unwrap();
        let r = handle(RequestBody::ReadFile {
            path: p.to_string_lossy().into(),
            offset: 0,
            max_len: u32::MAX,
        })
        .unwrap();
        assert!(matches!(r, ResponseBody::Data { ref data, eof: true } if data.len() == 10));
    }
}
