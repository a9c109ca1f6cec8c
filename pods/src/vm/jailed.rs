//! Fitting a VM's configuration to a jailed VMM: its files bound or handed into the jail,
//! every path as the VMM sees it.

use std::fs;
use std::path::Path;

use ironpod_vmm::config::{SerialOutput, VmConfig};

use super::{prep, VmError};
use crate::jail::{self, Jail, JailError};

/// Makes `config` fit a VMM in `jail`: the VMM binary, kernel, initramfs, `/dev/kvm`, disks,
/// virtio-fs sockets and taps bound or handed into it, every path as the VMM sees it. The
/// console, when it goes to a file, is opened here and becomes the VMM's stdout (returned).
pub(super) fn jail_config(
    jail: &mut Jail,
    config: &mut VmConfig,
    netns: Option<&Path>,
    binary: &Path,
) -> Result<Option<fs::File>, VmError> {
    match jail::is_static_elf(binary) {
        Ok(true) => {}
        Ok(false) => {
            return Err(JailError::Unfit(format!(
                "{} is dynamically linked: a jailed VMM must be a static binary (`cargo xtask \
                 demo` and `cargo xtask test` build it so)",
                binary.display()
            ))
            .into())
        }
        Err(source) => return Err(VmError::Spawn { binary: binary.to_path_buf(), source }),
    }
    jail.bind(binary, jail::VMM_IN_JAIL, true)?;
    if !config.kernel.as_os_str().is_empty() {
        config.kernel = jail.bind(&config.kernel, "/kernel", true)?;
    }
    if let Some(i) = &config.initrd {
        config.initrd = Some(jail.bind(i, "/initrd", true)?);
    }
    if let Some(r) = &mut config.restore {
        // Read-only: every VM restored from it maps the memory file private.
        r.state = jail.bind(&r.state, "/template.state", true)?;
        r.memory = jail.bind(&r.memory, "/template.memory", true)?;
    }
    jail.device(Path::new("/dev/kvm"), "/dev/kvm")?;
    for d in &mut config.disks {
        d.path = jail.expose_disk(&d.path, d.read_only)?;
    }
    config.fs = jail_fs(jail, std::mem::take(&mut config.fs))?;
    config.net = jail_cards(jail, std::mem::take(&mut config.net), netns)?;
    let stdout = match &config.serial {
        SerialOutput::File(p) => {
            let f = fs::OpenOptions::new().create(true).append(true).open(p).map_err(prep(p))?;
            config.serial = SerialOutput::Stdout;
            Some(f)
        }
        _ => None,
    };
    Ok(stdout)
}

/// The virtio-fs sockets of a jailed VMM: each becomes its user's (it connects) and is bound
/// into the jail.
pub(super) fn jail_fs(
    jail: &Jail,
    fs: Vec<ironpod_vmm::config::FsConfig>,
) -> Result<Vec<ironpod_vmm::config::FsConfig>, VmError> {
    let mut out = Vec::with_capacity(fs.len());
    for mut f in fs {
        jail.give(&f.socket)?;
        let inside = match f.socket.strip_prefix(jail.root()) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => jail.bind(&f.socket, &format!("/fs-{}.sock", f.tag), false)?,
        };
        f.socket = inside;
        out.push(f);
    }
    Ok(out)
}

/// The network cards of a jailed VMM running in the namespace `vmm_ns`: each tap must be
/// there (the VMM cannot enter another), and becomes openable by the VMM's user.
pub(super) fn jail_cards(
    jail: &Jail,
    cards: Vec<ironpod_vmm::config::NetConfig>,
    vmm_ns: Option<&Path>,
) -> Result<Vec<ironpod_vmm::config::NetConfig>, VmError> {
    if cards.is_empty() {
        return Ok(cards);
    }
    let no_card = |why: String| JailError::Unfit(format!("a jailed VMM's network card: {why}"));
    let Some(vmm_ns) = vmm_ns else {
        return Err(no_card("the VMM has a network namespace of its own, empty".into()).into());
    };
    let mut out = Vec::with_capacity(cards.len());
    for mut card in cards {
        if let Some(ns) = &card.netns {
            if !same_file(ns, vmm_ns) {
                return Err(no_card(format!(
                    "tap {} is in {}, not in the VMM's network namespace",
                    card.tap,
                    ns.display()
                ))
                .into());
            }
        }
        let (uid, gid, tap) = (jail.uid(), jail.gid(), card.tap.clone());
        ironpod_net::netns::run_in(vmm_ns, move || {
            ironpod_vmm::virtio::net::tap::Tap::open(&tap)
                .and_then(|t| t.set_owner(uid, gid))
                .map_err(|e| format!("hand tap {tap} to the VMM's user: {e}"))
        })
        .map_err(no_card)?;
        card.netns = None;
        out.push(card);
    }
    if !jail.host_path(Path::new("/dev/net/tun")).exists() {
        jail.device(Path::new("/dev/net/tun"), "/dev/net/tun")?;
    }
    Ok(out)
}

/// Whether two paths name the same file (two names of one namespace).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
