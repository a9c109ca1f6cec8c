//! The error of managing pods.

use ironpod_state::StateError;

use crate::spec;

/// Errors managing containers.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Image store.
    #[error(transparent)]
    Image(#[from] ironpod_images::ImageError),
    /// Container database.
    #[error(transparent)]
    State(#[from] StateError),
    /// Spec.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// A file operation.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The operation does not fit the container's state.
    #[error("{0}")]
    State2(String),
    /// The pod monitor failed.
    #[error("{0}")]
    Monitor(String),
    /// The container does not run (what was asked needs it running).
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The guest's agent could not be reached or refused.
    #[error("agent: {0}")]
    Agent(String),
    /// The guest's agent refused a request about a container's files (its kind says why:
    /// not found, not allowed, bad input).
    #[error("{}", .0.message)]
    Guest(ironpod_protocol::AgentError),
    /// The program could not be started (Docker's exit code: 126 or 127).
    #[error("{message}")]
    Start {
        /// Exit code.
        code: i32,
        /// Why.
        message: String,
    },
}

/// Maps an I/O error to [`PodError::Io`] with what was being done.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PodError {
    let what = what.into();
    move |source| PodError::Io { what, source }
}
