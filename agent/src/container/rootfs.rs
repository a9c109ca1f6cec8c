//! Building a container's root inside its new mount namespace (runs in the container child):
//! spec mounts, device nodes, pivot_root, masked and read-only paths.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::plan::{DevicePlan, MountPlan, RootfsPlan};

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn ctx(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// mount(2) with optional source/type/data.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> io::Result<()> {
    let s = source.map(CString::new).transpose()?;
    let f = fstype.map(CString::new).transpose()?;
    let d = data.filter(|d| !d.is_empty()).map(CString::new).transpose()?;
    let t = cpath(target)?;
    let ptr = |c: &Option<CString>| c.as_ref().map(|c| c.as_ptr()).unwrap_or(std::ptr::null());
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(&s),
            t.as_ptr(),
            ptr(&f),
            flags as libc::c_ulong,
            ptr(&d) as *const libc::c_void,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resolves `path` (absolute, inside the container) under `root`, following symlinks as the
/// container would see them, so a symlink in the image can never point a mount outside the
/// root. Missing trailing components are kept as they are.
pub fn secure_join(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn ensure_dir(p: &Path) -> io::Result<()> {
    std::fs::create_dir_all(p).map_err(ctx(format!("mkdir {}", p.display())))
}

fn ensure_file(p: &Path) -> io::Result<()> {
    if let Some(parent) = p.parent() {
        ensure_dir(parent)?;
    }
    if std::fs::symlink_metadata(p).is_err() {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(p)
            .map_err(ctx(format!("create {}", p.display())))?;
    }
    Ok(())
}

fn do_mount(root: &Path, m: &MountPlan) -> io::Result<()> {
    let dest = secure_join(root, &m.destination)?;
    let what = format!("mount {} ({})", m.destination, m.fstype);
    if m.fstype == "bind" {
        // A subpath is held open from its checked resolution until it is mounted.
        let held = match &m.subpath {
            Some(p) => Some(
                super::beneath::open(Path::new(&m.source), p)
                    .map_err(ctx(format!("{what}: subpath {p:?} of {}", m.source)))?,
            ),
            None => None,
        };
        let source = held.as_ref().map(super::beneath::proc_path).unwrap_or(m.source.clone());
        let src = Path::new(&source);
        let meta = std::fs::metadata(src).map_err(ctx(format!("{what}: source {}", m.source)))?;
        if meta.is_dir() {
            ensure_dir(&dest)?;
        } else {
            ensure_file(&dest)?;
        }
        let rec = m.flags & libc::MS_REC;
        mount(Some(&source), &dest, None, libc::MS_BIND | rec, None).map_err(ctx(what.clone()))?;
        // Bind mounts ignore most flags until remounted.
        let extra = m.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
        if extra != 0 {
            mount(None, &dest, None, libc::MS_BIND | libc::MS_REMOUNT | extra, None)
                .map_err(ctx(format!("{what}: remount")))?;
        }
    } else {
        ensure_dir(&dest)?;
        let (fstype, data) = match m.fstype.as_str() {
            // cgroup v1 does not exist in the guest: every cgroup mount is the v2 hierarchy,
            // seen through the container's cgroup namespace.
            "cgroup" | "cgroup2" => ("cgroup2", String::new()),
            t => (t, m.data.clone()),
        };
        let flags = m.flags & !libc::MS_REMOUNT;
        mount(Some(&m.source), &dest, Some(fstype), flags, Some(&data))
            .map_err(ctx(what.clone()))?;
    }
    if m.propagation != 0 {
        mount(None, &dest, None, m.propagation, None)
            .map_err(ctx(format!("{what}: propagation")))?;
    }
    Ok(())
}

fn make_device(root: &Path, d: &DevicePlan) -> io::Result<()> {
    let dest = secure_join(root, &d.path)?;
    if let Some(parent) = dest.parent() {
        ensure_dir(parent)?;
    }
    let _ = std::fs::remove_file(&dest);
    let c = cpath(&dest)?;
    let dev = libc::makedev(d.major as u32, d.minor as u32);
    // SAFETY: c is a valid path string.
    let rc = unsafe { libc::mknod(c.as_ptr(), d.kind | d.mode, dev) };
    if rc != 0 {
        return Err(ctx(format!("mknod {}", d.path))(io::Error::last_os_error()));
    }
    // SAFETY: c is a valid path string.
    unsafe {
        libc::chmod(c.as_ptr(), d.mode);
        libc::chown(c.as_ptr(), d.uid, d.gid);
    }
    Ok(())
}

fn dev_links(root: &Path) {
    let dev = root.join("dev");
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    let ptmx = dev.join("ptmx");
    if dev.join("pts/ptmx").exists() {
        let _ = std::fs::remove_file(&ptmx);
        let _ = std::os::unix::fs::symlink("pts/ptmx", &ptmx);
    }
}

fn pivot(root: &Path) -> io::Result<()> {
    std::env::set_current_dir(root).map_err(ctx(format!("chdir {}", root.display())))?;
    let dot = CString::new(".").expect("static string");
    // SAFETY: both arguments are the valid string ".".
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if rc != 0 {
        return Err(ctx("pivot_root".into())(io::Error::last_os_error()));
    }
    // The old root is now stacked under the new one at "/": detach it.
    mount(None, Path::new("."), None, libc::MS_SLAVE | libc::MS_REC, None)?;
    // SAFETY: "." is a valid string.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(ctx("detach the old root".into())(io::Error::last_os_error()));
    }
    std::env::set_current_dir("/")?;
    Ok(())
}

fn mask(path: &str) -> io::Result<()> {
    let p = Path::new(path);
    match std::fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => {
            mount(Some("tmpfs"), p, Some("tmpfs"), libc::MS_RDONLY, Some("size=0k,mode=000"))
                .map_err(ctx(format!("mask {path}")))
        }
        Ok(_) => mount(Some("/dev/null"), p, None, libc::MS_BIND, None)
            .map_err(ctx(format!("mask {path}"))),
    }
}

fn make_readonly(path: &str) -> io::Result<()> {
    let p = Path::new(path);
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(Some(path), p, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(ctx(format!("readonly {path}")))?;
    mount(
        None,
        p,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(ctx(format!("readonly {path}")))
}

/// Builds the root and moves the calling process into it. Runs in a fresh mount namespace.
pub fn setup(plan: &RootfsPlan, console: Option<&Path>) -> io::Result<()> {
    // Nothing done here may leak back to the agent's namespace.
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(ctx("make mounts private".into()))?;
    let root = &plan.root;
    // pivot_root needs the new root to be a mount point of its own.
    mount(Some(&root.to_string_lossy()), root, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(ctx("bind the root".into()))?;
    for m in &plan.mounts {
        do_mount(root, m)?;
    }
    for d in &plan.devices {
        make_device(root, d)?;
    }
    dev_links(root);
    if let Some(tty) = console {
        let dest = root.join("dev/console");
        ensure_file(&dest)?;
        mount(Some(&tty.to_string_lossy()), &dest, None, libc::MS_BIND, None)
            .map_err(ctx("bind /dev/console".into()))?;
    }
    pivot(root)?;
    for (k, v) in &plan.sysctl {
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v).map_err(ctx(format!("sysctl {k}")))?;
    }
    for p in &plan.readonly_paths {
        make_readonly(p)?;
    }
    for p in &plan.masked {
        mask(p)?;
    }
    if plan.readonly {
        mount(None, Path::new("/"), None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY, None)
            .map_err(ctx("remount / read-only".into()))?;
    }
    Ok(())
}

/// After the pivot: makes `/dev/console` the container's own terminal `slave` (a path in
/// the container's devpts) instead of the carrier bound before the pivot.
pub fn rebind_console(slave: &Path) -> io::Result<()> {
    let console = Path::new("/dev/console");
    let c = CString::new("/dev/console").expect("static string");
    // SAFETY: c is a valid path string; failing (nothing mounted there) is fine.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    ensure_file(console)?;
    mount(Some(&slave.to_string_lossy()), console, None, libc::MS_BIND, None)
        .map_err(ctx("bind /dev/console".into()))
}

/// Sets host and domain name (the process is in a new UTS namespace).
pub fn set_names(host: Option<&str>, domain: Option<&str>) -> io::Result<()> {
    if let Some(h) = host {
        // SAFETY: the buffer is valid for its length.
        if unsafe { libc::sethostname(h.as_ptr() as *const libc::c_char, h.len()) } != 0 {
            return Err(ctx("sethostname".into())(io::Error::last_os_error()));
        }
    }
    if let Some(d) = domain {
        // SAFETY: the buffer is valid for its length.
        if unsafe { libc::setdomainname(d.as_ptr() as *const libc::c_char, d.len()) } != 0 {
            return Err(ctx("setdomainname".into())(io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(secure_join(root, "/abs/passwd").unwrap(), root.join("etc/passwd"));
        assert_eq!(secure_join(root, "/a/up/x").unwrap(), root.join("x"));
        assert_eq!(secure_join(root, "/../../a/b").unwrap(), root.join("a/b"));
        assert_eq!(secure_join(root, "/new/dir").unwrap(), root.join("new/dir"));
        assert!(secure_join(root, "/loop").is_err());
    }
}
