//! A snapshot's state file: versioned and checksummed.
//!
//! Layout: the magic `IRONPOD-SNAPSHOT`, the format version (u32 LE), the body's length (u64
//! LE), the SHA-256 of the body, then the body (JSON). The body names the VMM version and the
//! host CPU model it was taken on; a file of another format version, another VMM version or
//! another CPU model, or one whose checksum does not match, is refused with the reason (a
//! vCPU state from another CPU model can crash the guest in ways no check would explain).

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Magic bytes at the start of a state file.
const MAGIC: &[u8; 16] = b"IRONPOD-SNAPSHOT";
/// The state file's format version: raised whenever what a snapshot holds changes.
pub const FORMAT_VERSION: u32 = 1;
/// Fixed part before the body: magic, version, length, checksum.
const PREFIX: usize = 16 + 4 + 8 + 32;
/// Largest body read (a VM's device and vCPU state is tens of KiB per vCPU).
const MAX_BODY: u64 = 64 << 20;

/// A state file could not be written or read, or does not fit this VMM and host.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading or writing the file failed.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is damaged, or not a snapshot.
    #[error("snapshot {path} is damaged: {why}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The snapshot was taken by another VMM or on another CPU.
    #[error("snapshot {path} cannot be restored here: {why}")]
    Incompatible {
        /// The file.
        path: String,
        /// What differs.
        why: String,
    },
}

/// The host CPU a snapshot was taken on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuModel {
    /// CPUID vendor string (`GenuineIntel`, `AuthenticAMD`).
    pub vendor: String,
    /// Family, with the extended family added (CPUID 1 EAX).
    pub family: u32,
    /// Model, with the extended model (CPUID 1 EAX).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
}

impl CpuModel {
    /// The CPU this process runs on.
    pub fn host() -> Self {
        use std::arch::x86_64::__cpuid;
        // CPUID is present on every x86_64 CPU and has no side effects.
        let (v, f) = (__cpuid(0), __cpuid(1));
        let mut vendor = Vec::with_capacity(12);
        for r in [v.ebx, v.edx, v.ecx] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        let base_family = (f.eax >> 8) & 0xf;
        let family =
            if base_family == 0xf { base_family + ((f.eax >> 20) & 0xff) } else { base_family };
        let mut model = (f.eax >> 4) & 0xf;
        if base_family == 0x6 || base_family == 0xf {
            model |= ((f.eax >> 16) & 0xf) << 4;
        }
        CpuModel {
            vendor: String::from_utf8_lossy(&vendor).into_owned(),
            family,
            model,
            stepping: f.eax & 0xf,
        }
    }
}

impl std::fmt::Display for CpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} family {:#x} model {:#x} stepping {}",
            self.vendor, self.family, self.model, self.stepping
        )
    }
}

/// What every state file starts its body with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The VMM's version (its package version).
    pub vmm_version: String,
    /// The host CPU.
    pub cpu: CpuModel,
}

impl Origin {
    /// This VMM on this host.
    pub fn here() -> Self {
        Origin { vmm_version: env!("CARGO_PKG_VERSION").to_string(), cpu: CpuModel::host() }
    }
}

#[derive(Serialize, Deserialize)]
struct Body<T> {
    origin: Origin,
    state: T,
}

/// Writes `state` to a new file at `path` (which must not exist), synced.
pub fn write<T: Serialize>(path: &Path, state: &T) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io { path: path.display().to_string(), source };
    let body = serde_json::to_vec(&Body { origin: Origin::here(), state })
        .map_err(|e| io(std::io::Error::other(e)))?;
    let mut out = Vec::with_capacity(PREFIX + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io)?;
    f.write_all(&out).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Reads the state file at `path`, refusing a damaged one or one from another VMM version or
/// CPU model.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, StateFileError> {
    let p = path.display().to_string();
    let io = |source| StateFileError::Io { path: p.clone(), source };
    let damaged = |why: String| StateFileError::Damaged { path: p.clone(), why };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > PREFIX as u64 + MAX_BODY {
        return Err(damaged(format!("{len} bytes is more than a snapshot holds")));
    }
    let data = std::fs::read(path).map_err(io)?;
    if data.len() < PREFIX || &data[..16] != MAGIC {
        return Err(damaged("not an ironpod snapshot".into()));
    }
    let version = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(StateFileError::Incompatible {
            path: p.clone(),
            why: format!("format version {version}; this VMM reads version {FORMAT_VERSION}"),
        });
    }
    let body_len = u64::from_le_bytes(data[20..28].try_into().expect("8 bytes"));
    let body = &data[PREFIX..];
    if body.len() as u64 != body_len {
        return Err(damaged(format!("body of {} bytes, the header says {body_len}", body.len())));
    }
    if Sha256::digest(body).as_slice() != &data[28..60] {
        return Err(damaged("checksum mismatch".into()));
    }
    let body: Body<T> =
        serde_json::from_slice(body).map_err(|e| damaged(format!("unreadable state: {e}")))?;
    let here = Origin::here();
    if body.origin.vmm_version != here.vmm_version {
        return Err(StateFileError::Incompatible {
            path: p.clone(),
            why: format!(
                "taken by ironpod-vmm {}, this is {}",
                body.origin.vmm_version, here.vmm_version
            ),
        });
    }
    if body.origin.cpu != here.cpu {
        return Err(StateFileError::Incompatible {
            path: p,
            why: format!("taken on a {}, this host is a {}", body.origin.cpu, here.cpu),
        });
    }
    Ok(body.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        a: u32,
        b: String,
    }

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let s = S { a: 7, b: "x".into() };
        write(&path, &s).unwrap();
        assert!(write(&path, &s).is_err(), "an existing file is not overwritten");
        assert_eq!(read::<S>(&path).unwrap(), s);

        let good = std::fs::read(&path).unwrap();
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut d = good.clone();
            f(&mut d);
            let p = dir.path().join("bad");
            std::fs::write(&p, &d).unwrap();
            read::<S>(&p).unwrap_err().to_string()
        };
        let e = bad(&|d| {
            let n = d.len();
            d[n - 3] ^= 1
        });
        assert!(e.contains("checksum mismatch"), "{e}");
        let e = bad(&|d| d.truncate(d.len() - 1));
        assert!(e.contains("the header says"), "{e}");
        let e = bad(&|d| d[0] = b'X');
        assert!(e.contains("not an ironpod snapshot"), "{e}");
        let e = bad(&|d| d[16..20].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes()));
        assert!(e.contains("format version"), "{e}");

        // Another VMM version and another CPU, with a valid checksum.
        let rewrite = |origin: Origin| {
            let body = serde_json::to_vec(&Body { origin, state: &s }).unwrap();
            let mut out = good[..20].to_vec();
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
            out.extend_from_slice(&Sha256::digest(&body));
            out.extend_from_slice(&body);
            let p = dir.path().join("other");
            std::fs::write(&p, out).unwrap();
            read::<S>(&p).unwrap_err().to_string()
        };
        let e = rewrite(Origin { vmm_version: "0.0.0-old".into(), ..Origin::here() });
        assert!(e.contains("taken by ironpod-vmm 0.0.0-old"), "{e}");
        let mut cpu = CpuModel::host();
        cpu.model ^= 1;
        let e = rewrite(Origin { cpu, ..Origin::here() });
        assert!(e.contains("cannot be restored here") && e.contains("taken on a"), "{e}");
    }

    #[test]
    fn host_cpu_model_is_read() {
        let c = CpuModel::host();
        assert!(["GenuineIntel", "AuthenticAMD"].contains(&c.vendor.as_str()), "{c}");
        assert!(c.family >= 6, "{c}");
    }
}
