//! Errors: the service's own (it could not start) and the API's (one request failed, sent
//! as Docker sends them: a status code and `{"message": …}`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The socket address is not `unix://PATH` (or a plain absolute path).
    #[error("the socket address {0:?} is not unix:///ABSOLUTE/PATH")]
    BadAddress(String),
    /// The socket is served by another process.
    #[error("{0} is in use by another process (is a service running already?)")]
    InUse(String),
    /// The group named for the socket does not exist.
    #[error("no group named {0:?}")]
    NoGroup(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl ServiceError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ServiceError::Io { what: what.into(), source }
    }
}

/// A request's failure, as the Docker API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Docker's `message`.
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// 404: no such object (the message names it as Docker does).
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into() }
    }

    /// 409: the object's state does not allow it.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::CONFLICT, message: message.into() }
    }

    /// 500: the host side failed.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ironpod_pods::PodError> for ApiError {
    /// A pod operation's failure: 409 when the container's state forbids it.
    fn from(e: ironpod_pods::PodError) -> Self {
        use ironpod_pods::PodError;
        match e {
            PodError::NotRunning(id) => {
                ApiError::conflict(format!("Container {id} is not running"))
            }
            PodError::State2(m) => ApiError::conflict(m),
            PodError::Start { message, .. } => ApiError::bad_request(message),
            PodError::Guest(g) => {
                use ironpod_protocol::ErrorKind;
                let status = match g.kind {
                    ErrorKind::NotFound => StatusCode::NOT_FOUND,
                    ErrorKind::BadRequest | ErrorKind::Unsupported => StatusCode::BAD_REQUEST,
                    ErrorKind::ReadOnly | ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
                    ErrorKind::AlreadyExists | ErrorKind::InvalidState => StatusCode::CONFLICT,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                ApiError { status, message: g.message }
            }
            e => ApiError::internal(e),
        }
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking store work (SQLite, files) off the async threads.
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("worker: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_are_docker_json() {
        let r = ApiError::not_found("No such container: x").into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["message"], "No such container: x");
    }

    #[tokio::test]
    async fn a_panicking_worker_is_an_error_not_a_crash() {
        let r: ApiResult<()> = blocking(|| panic!("boom")).await;
        assert_eq!(r.unwrap_err().status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
