//! The VM configuration: one JSON document (see `vmm/README.md`), also usable as a typed struct.
//!
//! Everything in here comes from outside the VMM and is validated by [`VmConfig::validate`]
//! before any resource is created.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest number of vCPUs a VM may have.
pub const MAX_VCPUS: u8 = 32;
/// Smallest guest memory size that can boot our guest kernel.
pub const MIN_MEMORY_MIB: u64 = 32;
/// Largest guest memory size accepted (1 TiB). The host must still be able to map it.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Largest number of block devices.
pub const MAX_DISKS: usize = 16;
/// Largest kernel command line, including what the VMM appends.
pub const MAX_CMDLINE_LEN: usize = 4096;

/// Errors found while reading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path of the file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The configuration is not valid JSON or does not match the schema.
    #[error("invalid config: {0}")]
    Parse(#[from] serde_json::Error),
    /// A field has a value that is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialOutput {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// Discarded.
    Off,
    /// Appended to a file.
    File(PathBuf),
}

impl Serialize for SerialOutput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SerialOutput::Stdout => s.serialize_str("stdout"),
            SerialOutput::Off => s.serialize_str("off"),
            SerialOutput::File(p) => s.serialize_str(&p.to_string_lossy()),
        }
    }
}

impl<'de> Deserialize<'de> for SerialOutput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "stdout" => SerialOutput::Stdout,
            "off" => SerialOutput::Off,
            "" => {
                return Err(serde::de::Error::custom(
                    "serial must be \"stdout\", \"off\" or a file path",
                ))
            }
            p => SerialOutput::File(PathBuf::from(p)),
        })
    }
}

/// A virtio-blk disk backed by a raw file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Path of the raw disk image on the host.
    pub path: PathBuf,
    /// Whether the guest sees the disk read-only (the VMM also refuses writes).
    #[serde(default)]
    pub read_only: bool,
}

/// The virtio-vsock device and its host-side unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// Guest context id (3 or larger).
    pub cid: u32,
    /// Host unix socket: hosts connect here and send `CONNECT <port>\n`; guest connections
    /// to host port P go to `<uds_path>_P`.
    pub uds_path: PathBuf,
}

/// A whole microVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Number of vCPUs (1..=32).
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Guest kernel: ELF vmlinux (PVH entry) or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs (cpio, possibly compressed).
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; the VMM appends its `virtio_mmio.device=` entries.
    #[serde(default)]
    pub cmdline: String,
    /// Block devices, in order: the first is /dev/vda.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// Optional vsock device.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// Serial console output.
    #[serde(default)]
    pub serial: SerialOutput,
    /// A virtio-balloon for free page reporting: memory the guest frees goes back to the
    /// host.
    #[serde(default)]
    pub free_page_reporting: bool,
}

fn default_vcpus() -> u8 {
    1
}

fn default_memory() -> u64 {
    128
}

impl VmConfig {
    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_json(&text)
    }

    /// Parses and validates a configuration from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let cfg: VmConfig = serde_json::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and consistency (not the existence of files; the VMM reports those
    /// when it opens them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return bad(format!("vcpus must be between 1 and {MAX_VCPUS}, got {}", self.vcpus));
        }
        if self.memory_mib < MIN_MEMORY_MIB || self.memory_mib > MAX_MEMORY_MIB {
            return bad(format!(
                "memory_mib must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}, got {}",
                self.memory_mib
            ));
        }
        if self.kernel.as_os_str().is_empty() {
            return bad("kernel path is empty".into());
        }
        if self.cmdline.len() > MAX_CMDLINE_LEN / 2 {
            return bad(format!("cmdline is longer than {} bytes", MAX_CMDLINE_LEN / 2));
        }
        if self.cmdline.bytes().any(|b| b == 0 || b == b'\n') {
            return bad("cmdline must not contain NUL or newline".into());
        }
        if self.disks.len() > MAX_DISKS {
            return bad(format!("at most {MAX_DISKS} disks are supported"));
        }
        if let Some(v) = &self.vsock {
            if v.cid < 3 || v.cid == u32::MAX {
                return bad(format!(
                    "vsock cid must be at least 3 and below 2^32-1, got {}",
                    v.cid
                ));
            }
            if v.uds_path.as_os_str().is_empty() {
                return bad("vsock uds_path is empty".into());
            }
            // sun_path holds 108 bytes including NUL; guest-initiated connections add `_PORT`.
            if v.uds_path.as_os_str().len() > 90 {
                return bad(format!("vsock uds_path is too long: {}", v.uds_path.display()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> &'static str {
        r#"{"kernel": "/k"}"#
    }

    #[test]
    fn defaults() {
        let c = VmConfig::from_json(minimal()).unwrap();
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.memory_mib, 128);
        assert_eq!(c.serial, SerialOutput::Stdout);
        assert!(c.disks.is_empty() && c.vsock.is_none() && c.initrd.is_none());
    }

    #[test]
    fn full_round_trip() {
        let text = r#"{"vcpus":2,"memory_mib":256,"kernel":"/k","initrd":"/i","cmdline":"console=ttyS0",
            "disks":[{"path":"/d","read_only":true}],"vsock":{"cid":3,"uds_path":"/tmp/v.sock"},
            "serial":"/tmp/serial.log"}"#;
        let c = VmConfig::from_json(text).unwrap();
        assert_eq!(c.serial, SerialOutput::File("/tmp/serial.log".into()));
        assert!(c.disks[0].read_only);
        let again = VmConfig::from_json(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn rejects_bad_values() {
        for text in [
            r#"{}"#,
            r#"not json"#,
            r#"{"kernel":"/k","vcpus":0}"#,
            r#"{"kernel":"/k","vcpus":200}"#,
            r#"{"kernel":"/k","memory_mib":1}"#,
            r#"{"kernel":"/k","memory_mib":99999999999}"#,
            r#"{"kernel":"/k","vsock":{"cid":2,"uds_path":"/x"}}"#,
            r#"{"kernel":"/k","unknown":1}"#,
            r#"{"kernel":"/k","serial":""}"#,
            r#"{"kernel":"/k","memory_mib":-5}"#,
        ] {
            assert!(VmConfig::from_json(text).is_err(), "accepted {text}");
        }
    }
}
