//! The error of networks and port publishing.

/// Errors of networks and port publishing.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The database failed.
    #[error("network database: {0}")]
    Db(#[from] rusqlite::Error),
    /// No such network.
    #[error("network {0} not found")]
    NotFound(String),
    /// The name is taken.
    #[error("network with name {0} already exists")]
    Exists(String),
    /// Live pods use it.
    #[error("network {0} has active endpoints (containers {1})")]
    InUse(String, String),
    /// No address left.
    #[error("no free address left on network {0}")]
    Exhausted(String),
    /// A bad value from the user.
    #[error("{0}")]
    Invalid(String),
    /// Host plumbing failed.
    #[error("setting up the pod's network: {0}")]
    Plumb(String),
    /// A port could not be published.
    #[error("{0}")]
    Publish(String),
}
