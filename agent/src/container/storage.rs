//! The disks behind container roots: read-only layer disks (erofs) mounted once per pod, the
//! pod's writable disk (ext4), and the overlayfs that stacks them per container.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ironpod_protocol::{AgentError, ErrorKind};

use super::rootfs::mount;

/// Where layer disks are mounted.
pub const LAYERS_DIR: &str = "/run/ironpod/layers";
/// Where writable disks are mounted.
pub const RW_DIR: &str = ironpod_protocol::WRITABLE_DIR;

fn serial_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// How long a disk the host attached while the guest runs may take to show its size.
const ATTACH_WAIT: Duration = Duration::from_secs(5);

/// The virtio disks' names under /sys/block, with their size in sectors now.
fn virtio_disks() -> Result<Vec<(String, u64)>, AgentError> {
    let entries = fs::read_dir("/sys/block").map_err(AgentError::from)?;
    Ok(entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("vd"))
        .map(|name| {
            let size = disk_size(&name);
            (name, size)
        })
        .collect())
}

fn disk_size(name: &str) -> u64 {
    let size = fs::read_to_string(Path::new("/sys/block").join(name).join("size"));
    size.unwrap_or_default().trim().parse().unwrap_or(0)
}

/// Whether disk `name`'s serial is `serial`. Reading a serial is a request to the device
/// (virtio-blk's GET_ID) that waits for its answer, unlike reading its size.
fn has_serial(name: &str, serial: &str) -> bool {
    let s = fs::read_to_string(Path::new("/sys/block").join(name).join("serial"));
    s.unwrap_or_default().trim_end_matches(['\0', '\n']) == serial
}

/// Finds the block device whose virtio-blk serial is `serial`. A disk the host has just
/// attached to a spare slot shows its serial at once but its size only once the kernel has
/// handled the configuration-change interrupt: wait for that.
pub fn find_disk(serial: &str) -> Result<PathBuf, AgentError> {
    if !serial_ok(serial) {
        return Err(AgentError::new(ErrorKind::BadRequest, format!("bad disk serial {serial:?}")));
    }
    let disks = virtio_disks()?;
    // The disks with a size first: a restored pod has a dozen empty spare slots, and
    // asking each for its serial costs a request to the device.
    let attached = disks.iter().filter(|(_, size)| *size > 0).map(|(name, _)| name);
    if let Some(name) = attached.clone().find(|name| has_serial(name, serial)) {
        return Ok(Path::new("/dev").join(name));
    }
    // One attached a moment ago may not show its size yet.
    let empty = disks.iter().filter(|(_, size)| *size == 0).map(|(name, _)| name);
    for name in empty {
        if !has_serial(name, serial) {
            continue;
        }
        let deadline = Instant::now() + ATTACH_WAIT;
        loop {
            if disk_size(name) > 0 {
                return Ok(Path::new("/dev").join(name));
            }
            if Instant::now() >= deadline {
                return Err(AgentError::new(
                    ErrorKind::Io,
                    format!("disk {serial:?} ({name}) stays empty"),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Err(AgentError::new(ErrorKind::NotFound, format!("no disk with serial {serial:?} is attached")))
}

/// Disks mounted so far (by mount point).
static MOUNTED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn mount_once(
    serial: &str,
    base: &str,
    fstype: &str,
    read_only: bool,
) -> Result<PathBuf, AgentError> {
    let target = Path::new(base).join(serial);
    let mut mounted = MOUNTED.lock().unwrap_or_else(|e| e.into_inner());
    let set = mounted.get_or_insert_with(HashSet::new);
    if set.contains(&target) {
        return Ok(target);
    }
    let dev = find_disk(serial)?;
    crate::log::trace("disk found");
    fs::create_dir_all(&target).map_err(AgentError::from)?;
    let flags = if read_only { libc::MS_RDONLY } else { 0 } | libc::MS_NOSUID | libc::MS_NODEV;
    // The writable disk's inode tables were left unzeroed by mkfs (lazy_itable_init, safe
    // with uninit_bg/metadata_csum): without `noinit_itable` the kernel would zero them in
    // the background after the mount, writing ~128 MiB per 8 GiB disk into every pod's
    // sparse disk file on the host, and spending the pod's I/O and CPU on it.
    let data = (fstype == "ext4").then_some("noinit_itable");
    mount(Some(&dev.to_string_lossy()), &target, Some(fstype), flags, data).map_err(|e| {
        AgentError::new(
            ErrorKind::Io,
            format!("mount {} ({fstype}, disk {serial}): {e}", dev.display()),
        )
    })?;
    set.insert(target.clone());
    Ok(target)
}

/// Mounts (once) the pod's share (virtio-fs, [`ironpod_protocol::SHARE_TAG`]) at
/// [`ironpod_protocol::SHARE_DIR`].
pub fn share() -> Result<PathBuf, AgentError> {
    let target = PathBuf::from(ironpod_protocol::SHARE_DIR);
    let mut mounted = MOUNTED.lock().unwrap_or_else(|e| e.into_inner());
    let set = mounted.get_or_insert_with(HashSet::new);
    if set.contains(&target) {
        return Ok(target);
    }
    fs::create_dir_all(&target).map_err(AgentError::from)?;
    let tag = ironpod_protocol::SHARE_TAG;
    mount(Some(tag), &target, Some("virtiofs"), 0, None).map_err(|e| {
        AgentError::new(ErrorKind::Io, format!("mount the pod's share (virtio-fs {tag}): {e}"))
    })?;
    set.insert(target.clone());
    Ok(target)
}

/// Whether a container's mounts use the pod's share.
pub fn uses_share(spec: &oci_spec::runtime::Spec) -> bool {
    let dir = Path::new(ironpod_protocol::SHARE_DIR);
    spec.mounts()
        .iter()
        .flatten()
        .any(|m| m.source().as_deref().is_some_and(|s| s.starts_with(dir)))
}

/// Mounts (once) a read-only layer disk and returns its mount point.
pub fn layer(serial: &str) -> Result<PathBuf, AgentError> {
    mount_once(serial, LAYERS_DIR, "erofs", true)
}

/// Unmounts a layer disk so that the host can detach it. Refused while anything still
/// uses its filesystem: an overlay keeps the filesystem alive after its mount point is
/// gone, which the exclusive open of the device detects (the mount is then made again, so
/// the layer stays usable).
pub fn release_layer(serial: &str) -> Result<(), AgentError> {
    if !serial_ok(serial) {
        return Err(AgentError::new(ErrorKind::BadRequest, format!("bad disk serial {serial:?}")));
    }
    let target = Path::new(LAYERS_DIR).join(serial);
    let mut mounted = MOUNTED.lock().unwrap_or_else(|e| e.into_inner());
    let set = mounted.get_or_insert_with(HashSet::new);
    if !set.contains(&target) {
        return Ok(()); // never mounted
    }
    let dev = find_disk(serial)?;
    let busy = |what: &str| {
        AgentError::new(ErrorKind::InvalidState, format!("layer disk {serial} is {what}"))
    };
    let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| AgentError::new(ErrorKind::BadRequest, "bad mount point"))?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        return Err(busy(&format!("still mounted: {}", std::io::Error::last_os_error())));
    }
    set.remove(&target);
    let _ = fs::remove_dir(&target);
    let exclusive = fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(&dev);
    if exclusive.is_err() {
        drop(mounted);
        let _ = layer(serial); // keep it usable for the containers still on it
        return Err(busy("still in use by a container"));
    }
    Ok(())
}

/// Mounts (once) the pod's writable disk and returns its mount point.
pub fn writable(serial: &str) -> Result<PathBuf, AgentError> {
    mount_once(serial, RW_DIR, "ext4", false)
}

/// The pod's disks named on the kernel command line (`ironpod.layers=S1,S2 ironpod.rw=S`):
/// (layer serials, writable serial).
pub fn disks_on_cmdline(cmdline: &str) -> (Vec<String>, Option<String>) {
    let mut layers = Vec::new();
    let mut rw = None;
    for w in cmdline.split_whitespace() {
        if let Some(v) = w.strip_prefix("ironpod.layers=") {
            layers.extend(v.split(',').filter(|s| serial_ok(s)).map(str::to_string));
        } else if let Some(v) = w.strip_prefix("ironpod.rw=") {
            rw = serial_ok(v).then(|| v.to_string());
        }
    }
    (layers, rw)
}

/// Mounts the disks the host named on the kernel command line, so that they are ready
/// when the first container is created (the host connects meanwhile). A failure here is
/// only logged: creating the container mounts again and reports it.
pub fn premount(cmdline: &str) {
    let (layers, rw) = disks_on_cmdline(cmdline);
    if cmdline.split_whitespace().any(|w| w == "ironpod.share") {
        if let Err(e) = share() {
            crate::log::line(&e.message);
        }
    }
    for l in &layers {
        if let Err(e) = layer(l) {
            crate::log::line(&format!("layer disk {l}: {}", e.message));
        }
    }
    if let Some(w) = rw {
        if let Err(e) = writable(&w) {
            crate::log::line(&format!("writable disk {w}: {}", e.message));
        }
    }
}

/// Mounts the overlay for a container: `lowers` bottom first.
pub fn overlay(
    target: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<(), AgentError> {
    let empty;
    let lowers: Vec<String> = if lowers.is_empty() {
        // An image without layers: an empty lower directory.
        empty = Path::new("/run/ironpod/empty");
        fs::create_dir_all(empty).map_err(AgentError::from)?;
        vec![empty.to_string_lossy().into_owned()]
    } else {
        lowers.iter().rev().map(|p| p.to_string_lossy().into_owned()).collect()
    };
    for d in [target, upper, work] {
        fs::create_dir_all(d).map_err(AgentError::from)?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    if data.len() >= 4000 {
        return Err(AgentError::new(
            ErrorKind::TooLarge,
            format!("{} layers are too many for one overlay", lowers.len()),
        ));
    }
    mount(Some("overlay"), target, Some("overlay"), 0, Some(&data))
        .map_err(|e| AgentError::new(ErrorKind::Io, format!("mount the container's overlay: {e}")))
}

/// Detaches a mount (errors ignored: it may be gone already).
pub fn unmount(target: &Path) {
    if let Ok(c) = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()) {
        // SAFETY: c is a valid path string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_from_the_command_line() {
        let (l, w) =
            disks_on_cmdline("console=ttyS0 ironpod.layers=ab12,cd-3.x ironpod.rw=rw.ext4 q");
        assert_eq!(l, ["ab12", "cd-3.x"]);
        assert_eq!(w.as_deref(), Some("rw.ext4"));
        // Hostile or absent values are dropped.
        let (l, w) = disks_on_cmdline("ironpod.layers=../x,,ok ironpod.rw=a/b");
        assert_eq!(l, ["ok"]);
        assert_eq!(w, None);
        assert_eq!(disks_on_cmdline("quiet"), (vec![], None));
    }
}
