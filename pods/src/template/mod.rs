//! Pod templates: a VM booted once to agent-ready, snapshotted, and restored for every later
//! pod of its shape instead of booting again.
//!
//! A template is made the first time a shape (vCPUs, memory, a network card or none) is
//! asked for with the current guest kernel, initramfs, VMM binary and host CPU: its VM boots
//! with no container, empty disk slots ([`READ_ONLY_SLOTS`] read-only for layers, one
//! writable), for pods on a network a card without a tap (MAC [`TEMPLATE_MAC`]) and for
//! pods with volumes a share without a backend ([`Shape::share`]), and is snapshotted under the state root
//! (`templates/vm/<key>/`). A pod restored from it gets its layer disks, writable disk and tap
//! in those slots before its vCPUs run (the VMM's late configuration), is told it was
//! restored (the agent reseeds the guest's RNG and sets its clock), and its agent gives
//! the card the pod's own MAC address before bringing it up.
//!
//! Restored VMs map the memory file private (copy on write): the pages none of them writes
//! stay one copy in the host's page cache. The key names every input, so a new kernel,
//! initramfs or VMM makes a new template; templates of files that changed are removed when
//! the next one is made. A template is checked (its state file's checksum, format, VMM
//! version, CPU model) before each use and made again when the check fails.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironpod_vmm::config::{RestoreConfig, SpareFsConfig, SpareNetConfig};
use ironpod_vmm::snapshot::state_file::CpuModel;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::assets;
use crate::vm::{RunningVm, VmError, VmSpec};

pub mod admin;

/// Read-only disk slots of a template's VM: the most layers a templated pod can have. With
/// the writable slot, the card, the balloon and vsock it takes all 19 of the VMM's
/// interrupt lines, and with the writable slot all of its 16 disks.
pub const READ_ONLY_SLOTS: u8 = 15;
/// Read-only disk slots of a template with a share: one interrupt line goes to the share.
pub const READ_ONLY_SLOTS_WITH_SHARE: u8 = READ_ONLY_SLOTS - 1;
/// Entries of each queue of a template's share (the size pods' shares have).
pub const SHARE_QUEUE_SIZE: u16 = 1024;
/// The MAC address of a template's card, which each pod's agent replaces with the pod's
/// own before the card comes up.
pub const TEMPLATE_MAC: &str = "02:00:00:00:00:01";
/// MTU of a template's card (ironpod's networks').
pub const TEMPLATE_MTU: u16 = ironpod_net::MTU;
/// Command-line words of every pod VM (cold or template): free page reporting from 32 KiB
/// blocks up (the default, 2 MiB blocks, leaves much of what the guest freed on the host);
/// and the per-CPU allocator's first chunk in pages (`percpu_alloc=page`). By default x86-64
/// embeds it in 2 MiB units, so each later chunk is 2 MiB per CPU with a 4 MiB table of
/// memory-cgroup pointers beside it (one per 4 bytes), zeroed when made: the first container
/// (its cgroup, mounts, counters) overflows the small first chunk, and each pod wrote those
/// 4 MiB — 40 % of a restored pod's own memory. With page-sized units a new chunk's table is
/// a few hundred KiB.
pub const POD_CMDLINE: &str = "page_reporting.page_reporting_order=3 percpu_alloc=page";
/// Environment variable that turns templates off (`IRONPOD_NO_TEMPLATE=1`): every pod boots
/// cold, as with `--no-template`.
pub const NO_TEMPLATE_ENV: &str = "IRONPOD_NO_TEMPLATE";
/// Bumped when what a template holds changes in a way its key does not show.
const FORMAT: &str = "ironpod-template-2";

/// Errors making or checking a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Files under the state root.
    #[error("pod template: {what}: {source}")]
    Io {
        /// What was done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The template's VM.
    #[error("pod template: {0}")]
    Vm(#[from] VmError),
    /// Making this template failed a short while ago; it is not tried again until
    /// [`RETRY_AFTER`] has passed (or its inputs change).
    #[error("making this pod template failed recently: {0}")]
    Failed(String),
    /// No template has that key.
    #[error("no pod template {0:?}")]
    NotFound(String),
    /// More than one template's key starts so.
    #[error("more than one pod template's key starts with {0:?}")]
    Ambiguous(String),
}

/// How long a template that could not be made is not tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);

/// Why making the template `key` failed, if it did less than [`RETRY_AFTER`] ago.
fn recent_failure(base: &Path, key: &str) -> Option<String> {
    let p = base.join(format!("{key}.failed"));
    let age = fs::metadata(&p).ok()?.modified().ok()?.elapsed().unwrap_or_default();
    (age < RETRY_AFTER).then(|| fs::read_to_string(&p).unwrap_or_default())
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TemplateError {
    let what = what.into();
    move |source| TemplateError::Io { what, source }
}

/// Set (to anything), the agent of every pod this process starts writes its steps with
/// timestamps to the pod's console log (diagnostics): booted guests are told on their
/// command line, restored ones when they are told they were restored.
pub const GUEST_TRACE_ENV: &str = "IRONPOD_GUEST_TRACE";

/// Whether the pods' agents trace their steps ([`GUEST_TRACE_ENV`]).
pub fn guest_trace() -> bool {
    std::env::var_os(GUEST_TRACE_ENV).is_some()
}

/// Whether templates are turned off for this process ([`NO_TEMPLATE_ENV`]).
pub fn disabled_by_env() -> bool {
    std::env::var_os(NO_TEMPLATE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The shape of a pod's VM that a template must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory.
    pub memory_mib: u64,
    /// A network card (a pod with `--network none` has none: only loopback, as under
    /// Docker).
    pub card: bool,
    /// A share (virtio-fs, [`ironpod_protocol::SHARE_TAG`]) for the pod's volumes. Its
    /// template's VM has the device without a backend (the guest does not mount it); a pod
    /// restored from it plugs its own virtiofsd in, and its RAM is a copy of the template's
    /// in shared memory (which virtiofsd maps too) rather than the template's file mapped
    /// private: such pods start as fast but do not share the template's pages.
    pub share: bool,
}

impl Shape {
    /// The read-only disk slots of its VM: the most layers a pod of this shape can have.
    pub fn read_only_slots(&self) -> u8 {
        if self.share {
            READ_ONLY_SLOTS_WITH_SHARE
        } else {
            READ_ONLY_SLOTS
        }
    }
}

/// A template on disk, checked.
#[derive(Debug, Clone)]
pub struct Template {
    /// Its directory.
    pub dir: PathBuf,
    /// Its VM's shape.
    pub shape: Shape,
}

impl Template {
    /// Its files, for [`VmSpec::restore`].
    pub fn files(&self) -> RestoreConfig {
        RestoreConfig { state: self.dir.join("state"), memory: self.dir.join("memory") }
    }

    /// A VM spec that restores this template (jailed, with the template's slots and card):
    /// the caller adds its cgroup, network namespace and CPU limit.
    pub fn restore_spec(&self) -> Result<VmSpec, VmError> {
        let mut s = vm_spec(self.shape)?;
        s.restore = Some(self.files());
        Ok(s)
    }
}

/// What a template was made from (kept beside it, to tell a stale one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Inputs {
    format: String,
    kernel: FileId,
    initramfs: FileId,
    vmm: FileId,
    cpu: CpuModel,
    vcpus: u8,
    memory_mib: u64,
    card: bool,
    share: bool,
    cmdline: String,
    read_only_slots: u8,
    mac: String,
    mtu: u16,
}

/// A file as it is now: a change of content changes its size or modification time (or its
/// inode, when it is replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileId {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(path: &Path) -> Result<Self, TemplateError> {
        let path = fs::canonicalize(path).map_err(io_err(format!("find {}", path.display())))?;
        let m = fs::metadata(&path).map_err(io_err(format!("stat {}", path.display())))?;
        let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
        Ok(FileId { path, dev: m.dev(), ino: m.ino(), size: m.len(), mtime_ns })
    }

    fn current(&self) -> bool {
        FileId::of(&self.path).is_ok_and(|now| &now == self)
    }
}

impl Inputs {
    fn now(shape: Shape) -> Result<Self, TemplateError> {
        let kernel = assets::kernel().map_err(VmError::from)?;
        let initramfs = assets::initramfs().map_err(VmError::from)?;
        Ok(Inputs {
            format: FORMAT.into(),
            kernel: FileId::of(&kernel)?,
            initramfs: FileId::of(&initramfs)?,
            vmm: FileId::of(&assets::vmm_binary())?,
            cpu: CpuModel::host(),
            vcpus: shape.vcpus,
            memory_mib: shape.memory_mib,
            card: shape.card,
            share: shape.share,
            cmdline: POD_CMDLINE.into(),
            read_only_slots: shape.read_only_slots(),
            mac: TEMPLATE_MAC.into(),
            mtu: TEMPLATE_MTU,
        })
    }

    fn key(&self) -> String {
        let text = serde_json::to_vec(self).unwrap_or_default();
        let sum = Sha256::digest(&text);
        sum.iter().take(12).map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the files it names are still as they were.
    fn current(&self) -> bool {
        self.kernel.current() && self.initramfs.current() && self.vmm.current()
    }
}

/// Where the pod templates of state root `root` live (beside the writable disks' ext4
/// templates, [`crate::disks`]).
pub fn templates_dir(root: &Path) -> PathBuf {
    root.join("templates").join("vm")
}

/// The VM of a template, or of a pod restored from it: jailed, free page reporting, the
/// template's slots and card.
fn vm_spec(shape: Shape) -> Result<VmSpec, VmError> {
    let mut s = VmSpec::with_defaults()?;
    s.vcpus = shape.vcpus;
    s.memory_mib = shape.memory_mib;
    s.free_page_reporting = true;
    s.cmdline_extra = POD_CMDLINE.into();
    s.spare_disks = shape.read_only_slots();
    s.spare_writable_disks = 1;
    if shape.card {
        s.spare_nets = vec![SpareNetConfig { mac: Some(TEMPLATE_MAC.into()), mtu: TEMPLATE_MTU }];
    }
    // The template's memory is private (anonymous, in huge pages); a pod restored from it
    // maps the memory file private too, until it plugs a virtio-fs server into the spare
    // device (at its start, or later through the control API), which moves its memory into
    // a shared memory file.
    if shape.share {
        s.spare_fs = vec![SpareFsConfig {
            tag: ironpod_protocol::SHARE_TAG.into(),
            queue_size: SHARE_QUEUE_SIZE,
        }];
    }
    Ok(s)
}

/// The template for a pod of `shape` under state root `root`: the one on disk if it is
/// current and sound, else a new one (made while holding the template's lock, so that pods
/// started together make it once).
pub fn get_or_make(root: &Path, shape: Shape) -> Result<Template, TemplateError> {
    let inputs = Inputs::now(shape)?;
    let key = inputs.key();
    let base = templates_dir(root);
    ironpod_images::private::private_dir(root)
        .map_err(io_err(format!("create {}", root.display())))?;
    fs::create_dir_all(&base).map_err(io_err(format!("create {}", base.display())))?;
    let dir = base.join(&key);
    let template = Template { dir: dir.clone(), shape };
    if sound(&dir) {
        return Ok(template);
    }
    let _lock = lock(&base.join(format!("{key}.lock")))?;
    if sound(&dir) {
        return Ok(template);
    }
    // A host that cannot make this template (one whose CPU state the VMM cannot snapshot)
    // would otherwise boot a template VM before every pod.
    if let Some(why) = recent_failure(&base, &key) {
        return Err(TemplateError::Failed(why));
    }
    if dir.exists() {
        tracing::warn!(dir = %dir.display(), "a pod template failed its check: making it again");
        fs::remove_dir_all(&dir).map_err(io_err(format!("remove {}", dir.display())))?;
    }
    remove_stale(&base);
    if let Err(e) = make(&base, &dir, &inputs) {
        let _ = fs::write(base.join(format!("{key}.failed")), e.to_string());
        return Err(e);
    }
    let _ = fs::remove_file(base.join(format!("{key}.failed")));
    Ok(template)
}

/// The file in a template's directory that names its state and memory files as they were
/// when they last passed [`sound`]'s whole check (see [`files_now`]).
const CHECKED: &str = "checked";

/// The template's state and memory files as they are now (device, inode, size, modification
/// time): a write or a replacement changes it (their change times would also change with
/// every hard link made to them).
fn files_now(dir: &Path) -> Option<String> {
    let mut text = String::new();
    for f in ["state", "memory"] {
        let m = fs::metadata(dir.join(f)).ok()?;
        text.push_str(&format!(
            "{f} {} {} {} {}.{}\n",
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    Some(text)
}

/// Whether the template in `dir` passes the VMM's checks of its state file (checksum,
/// format, VMM version, CPU model) and its memory file is there, whole. The whole check
/// (reading and hashing the state file) runs once per state of the files, not before every
/// pod: [`CHECKED`] records the files that passed, and the VMM checks the state file again
/// when it restores.
fn sound(dir: &Path) -> bool {
    let now = files_now(dir);
    if now.is_some() && fs::read_to_string(dir.join(CHECKED)).ok() == now {
        return true;
    }
    let state = ironpod_vmm::snapshot::state_file::read::<ironpod_vmm::snapshot::vm::VmSnapshot>(
        &dir.join("state"),
    );
    let Ok(snap) = state else { return false };
    let want = snap.memory.file_len();
    let whole = fs::metadata(dir.join("memory")).is_ok_and(|m| m.len() == want);
    if let (true, Some(now)) = (whole, now) {
        // Made whole, then renamed: a reader sees the old record or the new one.
        let tmp = dir.join(format!(".{CHECKED}-{}", std::process::id()));
        if fs::write(&tmp, now).and_then(|()| fs::rename(&tmp, dir.join(CHECKED))).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
    whole
}

/// Boots the template's VM and snapshots it into `dir` (made whole, then renamed into place).
fn make(base: &Path, dir: &Path, inputs: &Inputs) -> Result<(), TemplateError> {
    let started = std::time::Instant::now();
    let work = base.join(format!(".new-{}-{}", std::process::id(), inputs.key()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir(&work).map_err(io_err(format!("create {}", work.display())))?;
    let made = (|| {
        let shape = Shape {
            vcpus: inputs.vcpus,
            memory_mib: inputs.memory_mib,
            card: inputs.card,
            share: inputs.share,
        };
        let mut spec = vm_spec(shape)?;
        spec.snapshot_dir = Some(work.clone());
        let mut vm = RunningVm::start(&spec)?;
        // Agent-ready, then no connection left open: the snapshot holds none.
        drop(vm.wait_agent(Duration::from_secs(120))?);
        vm.snapshot()?;
        vm.kill();
        Ok::<_, TemplateError>(())
    })();
    let finished = made.and_then(|()| {
        let text = serde_json::to_vec_pretty(inputs).unwrap_or_default();
        fs::write(work.join("inputs.json"), text).map_err(io_err("write inputs.json"))?;
        for f in ["state", "memory", "inputs.json"] {
            let p = work.join(f);
            std::os::unix::fs::chown(&p, Some(0), Some(0))
                .and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(0o444)))
                .and_then(|()| fs::File::open(&p)?.sync_all())
                .map_err(io_err(format!("seal {}", p.display())))?;
        }
        std::os::unix::fs::chown(&work, Some(0), Some(0))
            .and_then(|()| fs::set_permissions(&work, fs::Permissions::from_mode(0o755)))
            .map_err(io_err(format!("seal {}", work.display())))?;
        fs::rename(&work, dir).map_err(io_err(format!("move the template to {}", dir.display())))
    });
    if finished.is_err() {
        let _ = fs::remove_dir_all(&work);
    }
    finished?;
    if !sound(dir) {
        let _ = fs::remove_dir_all(dir);
        return Err(TemplateError::Io {
            what: format!("check the new template in {}", dir.display()),
            source: io::Error::other("it fails its own check"),
        });
    }
    tracing::info!(dir = %dir.display(), ms = started.elapsed().as_millis(), "pod template made");
    Ok(())
}

/// Removes the templates made from files that changed since (and work directories left by a
/// crash): no pod can start from them any more. Pods running from one keep their mapping.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(".new-") {
            let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = fs::remove_dir_all(&p);
            }
            continue;
        }
        if !p.is_dir() {
            // Failure records of templates whose inputs are gone: their keys never come back.
            if name.ends_with(".failed")
                && recent_failure(base, name.trim_end_matches(".failed")).is_none()
            {
                let _ = fs::remove_file(&p);
            }
            continue;
        }
        let inputs: Option<Inputs> =
            fs::read(p.join("inputs.json")).ok().and_then(|t| serde_json::from_slice(&t).ok());
        let stale = match inputs {
            Some(i) => i.format != FORMAT || !i.current(),
            None => true,
        };
        if stale {
            tracing::info!(dir = %p.display(), "removing a stale pod template");
            let _ = fs::remove_dir_all(&p);
            let _ = fs::remove_file(base.join(format!("{name}.lock")));
        }
    }
}

/// Holds an exclusive lock on a file until dropped (closing the file releases it).
struct Lock {
    _file: fs::File,
}

fn lock(path: &Path) -> Result<Lock, TemplateError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("open {}", path.display())))?;
    // SAFETY: flock on a descriptor we own; released when it is closed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err(format!("lock {}", path.display()))(io::Error::last_os_error()));
    }
    Ok(Lock { _file: f })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn inputs(dir: &Path) -> Inputs {
        let f = |n: &str| {
            let p = dir.join(n);
            fs::write(&p, n).unwrap();
            FileId::of(&p).unwrap()
        };
        Inputs {
            format: FORMAT.into(),
            kernel: f("vmlinux"),
            initramfs: f("initramfs"),
            vmm: f("vmm"),
            cpu: CpuModel::host(),
            vcpus: 1,
            memory_mib: 256,
            card: true,
            share: false,
            cmdline: POD_CMDLINE.into(),
            read_only_slots: READ_ONLY_SLOTS,
            mac: TEMPLATE_MAC.into(),
            mtu: TEMPLATE_MTU,
        }
    }

    #[test]
    fn the_key_follows_every_input() {
        let d = tempfile::tempdir().unwrap();
        let a = inputs(d.path());
        assert_eq!(a.key(), a.clone().key());
        assert_eq!(a.key().len(), 24);
        let mut b = a.clone();
        b.memory_mib = 512;
        assert_ne!(a.key(), b.key());
        let mut c = a.clone();
        c.card = false;
        assert_ne!(a.key(), c.key());
        let mut e = a.clone();
        e.share = true;
        assert_ne!(a.key(), e.key());
        assert!(a.current());
        // A rebuilt kernel (new content, new time) is another input.
        std::thread::sleep(Duration::from_millis(10));
        fs::write(d.path().join("vmlinux"), "a new kernel").unwrap();
        assert!(!a.current());
        assert_ne!(inputs(d.path()).key(), a.key());
    }

    #[test]
    fn a_failure_is_remembered_for_a_while() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(recent_failure(d.path(), "k"), None);
        fs::write(d.path().join("k.failed"), "xsave too large").unwrap();
        assert_eq!(recent_failure(d.path(), "k").as_deref(), Some("xsave too large"));
        let old = std::time::SystemTime::now() - RETRY_AFTER - Duration::from_secs(1);
        fs::File::options()
            .write(true)
            .open(d.path().join("k.failed"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(recent_failure(d.path(), "k"), None);
        remove_stale(d.path());
        assert!(!d.path().join("k.failed").exists());
    }

    #[test]
    fn stale_templates_and_leftovers_go_current_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("templates");
        fs::create_dir(&base).unwrap();
        let current = inputs(d.path());
        for (name, i) in [("cur", Some(&current)), ("none", None)] {
            fs::create_dir(base.join(name)).unwrap();
            if let Some(i) = i {
                fs::write(base.join(name).join("inputs.json"), serde_json::to_vec(i).unwrap())
                    .unwrap();
            }
        }
        let mut old = current.clone();
        old.kernel.size += 1;
        fs::create_dir(base.join("old")).unwrap();
        fs::write(base.join("old/inputs.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        fs::create_dir(base.join(".new-999999999-x")).unwrap();
        fs::create_dir(base.join(format!(".new-{}-x", std::process::id()))).unwrap();
        remove_stale(&base);
        let mut left: Vec<String> = fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [format!(".new-{}-x", std::process::id()), "cur".to_string()]);
        assert!(!sound(&base.join("cur")), "no state file");
    }

    #[test]
    fn a_checked_template_is_not_read_again_until_its_files_change() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        fs::write(dir.join("state"), b"not a snapshot").unwrap();
        fs::write(dir.join("memory"), b"").unwrap();
        assert!(!sound(dir), "a damaged state file fails the whole check");
        assert!(!dir.join(CHECKED).exists(), "nothing recorded for a failed check");
        // As if it had passed: the record matches the files, so they are not read.
        fs::write(dir.join(CHECKED), files_now(dir).unwrap()).unwrap();
        assert!(sound(dir));
        // Any change to the files (here a rewrite) brings the whole check back.
        std::thread::sleep(Duration::from_millis(10));
        fs::write(dir.join("state"), b"still not a snapshot").unwrap();
        assert!(!sound(dir));
        fs::remove_file(dir.join("memory")).unwrap();
        assert!(files_now(dir).is_none());
        assert!(!sound(dir));
    }
}
