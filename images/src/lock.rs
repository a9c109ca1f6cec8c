//! The store-wide lock: shared for writers, exclusive for garbage collection.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::ImageError;

/// Held until dropped.
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Waits for the lock.
    pub fn acquire(path: &Path, exclusive: bool) -> Result<Self, ImageError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| ImageError::io(path, e))?;
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
            return Err(ImageError::io(path, std::io::Error::last_os_error()));
        }
        Ok(StoreLock { _file: f })
    }
}
