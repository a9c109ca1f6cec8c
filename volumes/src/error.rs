//! The error of volumes and shares.

use std::path::PathBuf;

/// Errors of volumes and the pod's share.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A bad `-v` value or volume name.
    #[error("{0}")]
    Invalid(String),
    /// No such named volume.
    #[error("no such volume: {0}")]
    NotFound(String),
    /// The volume is used by containers.
    #[error("volume {name} is in use by container(s) {users}")]
    InUse {
        /// The volume.
        name: String,
        /// Ids of the containers.
        users: String,
    },
    /// A host operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// virtiofsd is missing.
    #[error("virtiofsd not found at {path}: {hint}")]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
    let what = what.into();
    move |source| VolumeError::Io { what, source }
}
