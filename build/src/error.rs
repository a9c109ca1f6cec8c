//! What can go wrong in a build.

use crate::dockerfile::DockerfileError;
use crate::ignore::IgnoreError;

/// A build that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile cannot be read or built.
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// The context's `.dockerignore` cannot be read.
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    /// A step failed: the line and why (Docker's wording where it has one).
    #[error("Dockerfile:{line}: {message}")]
    Step {
        /// The step's line.
        line: usize,
        /// What went wrong.
        message: String,
    },
    /// A RUN step's command ended with a non-zero code.
    #[error("Dockerfile:{line}: The command '{command}' returned a non-zero code: {code}")]
    Run {
        /// The step's line.
        line: usize,
        /// The command as run.
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// The image store.
    #[error(transparent)]
    Image(#[from] ironpod_images::ImageError),
    /// An image's layer could not be read into its file map.
    #[error(transparent)]
    Layer(#[from] crate::imagefs::LayerError),
    /// A RUN step's pod (its VM, its container, its changes).
    #[error("RUN: {0}")]
    Pod(#[from] ironpod_pods::error::PodError),
    /// A host file operation.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

impl BuildError {
    /// A failed step at `line`.
    pub fn step(line: usize, message: impl Into<String>) -> Self {
        BuildError::Step { line, message: message.into() }
    }

    /// A failed host file operation.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| BuildError::Io { what, source }
    }
}
