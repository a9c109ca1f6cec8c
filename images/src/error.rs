//! Errors of the image store.

use std::path::Path;

/// Everything that can go wrong with images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("image database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Content did not match its digest or size.
    #[error("content verification failed: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was promised.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// A digest string is malformed.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// An image name is malformed.
    #[error("invalid image name {0}")]
    InvalidName(String),
    /// No such image.
    #[error("no such image: {0}")]
    NotFound(String),
    /// An id prefix matches several images.
    #[error("{0} matches more than one image")]
    Ambiguous(String),
    /// The image is in use and removing it was not forced.
    #[error("unable to remove {image} (must force): in use by {holders}")]
    InUse {
        /// The image.
        image: String,
        /// Who uses it.
        holders: String,
    },
    /// A blob is missing from the store.
    #[error("blob {0} is missing from the store")]
    MissingBlob(String),
    /// Stored data does not parse.
    #[error("corrupt image data: {0}")]
    Corrupt(String),
    /// A registry refused or failed a request, or sent something unusable.
    #[error("registry: {0}")]
    Registry(String),
    /// Stored credentials are unreadable.
    #[error("credentials: {0}")]
    Credentials(String),
    /// A `--change` instruction is malformed or unsupported.
    #[error("invalid change: {0}")]
    InvalidChange(String),
    /// A tarball is unsafe or unreadable.
    #[error("bad tar archive: {0}")]
    BadTar(String),
}

impl ImageError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ImageError::Io { path: path.display().to_string(), source }
    }
}
