//! containerd writes an OCI spec for a host runtime; this turns it into one the agent runs
//! in the pod VM. What names host resources is translated or refused, never passed on
//! blindly:
//! - namespace paths: the network namespace is the VM's own (the VM is the pod's network
//!   sandbox), so a host netns path is dropped; `/proc/<pid>/ns/<kind>` of the pod's
//!   sandbox task (the pid we reported for it) becomes that task's namespace in the guest;
//!   any other path is refused;
//! - hooks run host programs: dropped (containerd's CRI does not use them; CNI runs on the
//!   host before the pod starts);
//! - a host directory bound at `/dev/shm` (the CRI's pod-wide shm) becomes the pod's shared
//!   tmpfs in the guest; small host files that [`crate::copies`] says to copy (the CRI's
//!   `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, read-only files,
//!   `/dev/termination-log`, Kubernetes' configMap, secret, projected and downward-API
//!   volumes) are listed so the caller copies them into the guest, and memory-backed
//!   emptyDirs so that it mounts a tmpfs in the guest; other bind mounts of host files and
//!   directories (Kubernetes' disk emptyDir and hostPath volumes) are listed so the caller adds them to the pod's virtio-fs share and the mount
//!   points at the share: the container sees the host's files themselves, with their owners
//!   and modes, and the host sees its writes;
//! - AppArmor and SELinux labels name host policies: cleared.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Mount, Spec};

/// What the caller must provide in the guest for the spec's bind mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestBinds {
    /// Indexes of mounts to point at the pod's shared `/dev/shm` tmpfs.
    pub pod_shm: Vec<usize>,
    /// Host files and directories to share with the guest (and point their mounts at).
    pub shared: Vec<HostMount>,
    /// Host files to copy into the guest (and point their mounts at).
    pub copied: Vec<CopiedFile>,
    /// Memory-backed emptyDirs: indexes of mounts to point at a tmpfs of the guest's, with
    /// the host directory and its shape.
    pub memory_dirs: Vec<(usize, PathBuf, crate::kube_dirs::MemoryDir)>,
}

/// A host file that a bind mount of the spec needs a copy of in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedFile {
    /// Index of the mount in `spec.mounts`.
    pub mount: usize,
    /// The host file.
    pub source: PathBuf,
    /// How it is copied.
    pub kind: crate::copies::CopyKind,
}

/// A host file or directory that a bind mount of the spec needs in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    /// Index of the mount in `spec.mounts`.
    pub mount: usize,
    /// The host file or directory.
    pub source: PathBuf,
    /// The mount is read-only (so is the share's entry on the host).
    pub read_only: bool,
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options().as_ref().is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// The host pid in a `/proc/<pid>/ns/<kind>` path.
fn proc_ns_pid(p: &Path) -> Option<u32> {
    let s = p.to_str()?;
    let rest = s.strip_prefix("/proc/")?;
    let (pid, tail) = rest.split_once('/')?;
    if !tail.starts_with("ns/") || tail[3..].contains('/') {
        return None;
    }
    pid.parse().ok()
}

/// Rewrites `spec` for the guest. `sandbox` maps the host pid we reported for the pod's
/// sandbox task to its init's pid in the guest. Returns what the bind mounts need.
pub fn for_guest(
    spec: &mut Spec,
    sandbox: impl Fn(u32) -> Option<i32>,
) -> Result<GuestBinds, String> {
    spec.set_hooks(None);
    if let Some(p) = spec.process_mut() {
        p.set_apparmor_profile(None);
        p.set_selinux_label(None);
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_mount_label(None);
        let mut out: Vec<LinuxNamespace> = Vec::new();
        for ns in linux.namespaces().clone().unwrap_or_default() {
            match (ns.typ(), ns.path()) {
                (_, None) => out.push(ns),
                // The VM is the pod's network: its containers share the guest's network.
                (LinuxNamespaceType::Network, Some(_)) => {}
                (kind, Some(p)) => {
                    let guest = proc_ns_pid(p).and_then(&sandbox).ok_or_else(|| {
                        format!(
                            "the {kind:?} namespace path {} names a host namespace that is \
                             not the pod sandbox's",
                            p.display()
                        )
                    })?;
                    let tail = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    let mut n = ns.clone();
                    n.set_path(Some(PathBuf::from(format!("/proc/{guest}/ns/{tail}"))));
                    out.push(n);
                }
            }
        }
        linux.set_namespaces(Some(out));
    }
    let mut binds = GuestBinds::default();
    for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
        if !is_bind(m) {
            continue;
        }
        let source = m
            .source()
            .clone()
            .ok_or_else(|| format!("bind mount at {} has no source", m.destination().display()))?;
        let meta = std::fs::metadata(&source)
            .map_err(|e| format!("bind mount source {}: {e}", source.display()))?;
        if meta.is_dir() && m.destination() == Path::new("/dev/shm") {
            binds.pod_shm.push(i);
            continue;
        }
        if !meta.is_dir() && !meta.is_file() {
            return Err(format!(
                "bind mount source {} must be a regular file or a directory",
                source.display()
            ));
        }
        let read_only = m.options().as_ref().is_some_and(|o| o.iter().any(|x| x == "ro"));
        if meta.is_file() {
            if let Some(kind) = crate::copies::kind_for(m.destination(), meta.len(), read_only) {
                binds.copied.push(CopiedFile { mount: i, source, kind });
                continue;
            }
        } else if let Some(shape) = crate::kube_dirs::memory_empty_dir(&source) {
            binds.memory_dirs.push((i, source, shape));
            continue;
        } else if read_only && crate::kube_dirs::is_kube_volume(&source) {
            let kind = crate::copies::CopyKind::Volume;
            binds.copied.push(CopiedFile { mount: i, source, kind });
            continue;
        }
        binds.shared.push(HostMount { mount: i, source, read_only });
    }
    Ok(binds)
}

/// Points mount `index` of `spec` at `guest_path`.
pub fn set_mount_source(spec: &mut Spec, index: usize, guest_path: &str) {
    if let Some(mounts) = spec.mounts_mut() {
        if let Some(m) = mounts.get_mut(index) {
            m.set_source(Some(PathBuf::from(guest_path)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxNamespaceBuilder, MountBuilder};

    fn ns(kind: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut b = LinuxNamespaceBuilder::default().typ(kind);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().unwrap()
    }

    fn spec_with(nss: Vec<LinuxNamespace>, mounts: Vec<Mount>) -> Spec {
        let mut s = Spec::default();
        s.linux_mut().as_mut().unwrap().set_namespaces(Some(nss));
        s.set_mounts(Some(mounts));
        s
    }

    #[test]
    fn namespaces_are_translated() {
        let mut s = spec_with(
            vec![
                ns(LinuxNamespaceType::Mount, None),
                ns(LinuxNamespaceType::Network, Some("/var/run/netns/cni-1")),
                ns(LinuxNamespaceType::Ipc, Some("/proc/4242/ns/ipc")),
            ],
            vec![],
        );
        for_guest(&mut s, |p| (p == 4242).then_some(7)).unwrap();
        let got = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].path().as_deref(), Some(Path::new("/proc/7/ns/ipc")));
        let mut bad = spec_with(vec![ns(LinuxNamespaceType::Pid, Some("/proc/1/ns/pid"))], vec![]);
        assert!(for_guest(&mut bad, |_| None).is_err());
        let mut bad = spec_with(vec![ns(LinuxNamespaceType::Uts, Some("/etc/passwd"))], vec![]);
        assert!(for_guest(&mut bad, |_| Some(1)).is_err());
    }

    #[test]
    fn bind_mounts_of_files_and_dirs_are_shared_or_copied() {
        use crate::copies::CopyKind;
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("hosts");
        std::fs::write(&f, "127.0.0.1 localhost\n").unwrap();
        let bind_at = |src: &Path, dest: &str, ro: bool| {
            let mut o = vec!["rbind".to_string()];
            if ro {
                o.push("ro".into());
            }
            MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(src)
                .options(o)
                .build()
                .unwrap()
        };
        let bind = |src: &Path| bind_at(src, "/etc/hosts", true);
        let proc_ = MountBuilder::default().destination("/proc").typ("proc").build().unwrap();
        let mounts = vec![
            proc_,
            bind(&f),
            bind_at(&f, "/dev/termination-log", false),
            bind_at(&f, "/var/log/x", false),
        ];
        let mut s = spec_with(vec![], mounts);
        let binds = for_guest(&mut s, |_| None).unwrap();
        assert_eq!(
            binds.copied,
            vec![
                CopiedFile { mount: 1, source: f.clone(), kind: CopyKind::Pod },
                CopiedFile { mount: 2, source: f.clone(), kind: CopyKind::WriteBack },
            ]
        );
        assert_eq!(binds.shared, vec![HostMount { mount: 3, source: f.clone(), read_only: false }]);
        set_mount_source(&mut s, 1, "/run/x");
        assert_eq!(s.mounts().as_ref().unwrap()[1].source().as_deref(), Some(Path::new("/run/x")));
        let mut s = spec_with(vec![], vec![bind(t.path())]);
        let shared = for_guest(&mut s, |_| None).unwrap().shared;
        assert_eq!(
            shared,
            vec![HostMount { mount: 0, source: t.path().to_path_buf(), read_only: true }]
        );
        let mut s = spec_with(vec![], vec![bind(Path::new("/dev/null"))]);
        assert!(for_guest(&mut s, |_| None).unwrap_err().contains("regular file"));
        let mut s = spec_with(vec![], vec![bind(&t.path().join("missing"))]);
        assert!(for_guest(&mut s, |_| None).is_err());
        // The CRI's pod shm directory: the pod's shared tmpfs in the guest.
        let shm = MountBuilder::default()
            .destination("/dev/shm")
            .typ("bind")
            .source(t.path())
            .options(vec!["rbind".to_string(), "nosuid".to_string()])
            .build()
            .unwrap();
        let mut s = spec_with(vec![], vec![shm]);
        assert_eq!(for_guest(&mut s, |_| None).unwrap().pod_shm, vec![0]);
    }
}
