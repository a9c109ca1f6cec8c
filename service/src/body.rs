//! Request bodies: JSON read with a bound and refused the way Docker refuses it (400 with a
//! `message`), an empty body standing for the type's default.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest JSON body a route reads (container configs are a few KiB).
pub const MAX_JSON: usize = 1 << 20;

/// A JSON body; an empty one is `T::default()`.
pub struct DockerJson<T>(pub T);

impl<S, T> FromRequest<S> for DockerJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let body = axum::body::to_bytes(req.into_body(), MAX_JSON).await.map_err(|e| {
            ApiError::bad_request(format!("request body: {e} (at most {MAX_JSON} bytes)"))
        })?;
        parse(&body).map(DockerJson)
    }
}

/// Parses a body (empty or whitespace: the default).
pub fn parse<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    struct T {
        #[serde(rename = "Name")]
        name: Option<String>,
    }

    #[test]
    fn bodies() {
        assert_eq!(parse::<T>(&Bytes::from_static(b"")).unwrap(), T::default());
        assert_eq!(parse::<T>(&Bytes::from_static(b" \n")).unwrap(), T::default());
        assert_eq!(
            parse::<T>(&Bytes::from_static(br#"{"Name":"x"}"#)).unwrap().name.as_deref(),
            Some("x")
        );
        let e = parse::<T>(&Bytes::from_static(br#"{"Name":1}"#)).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("invalid JSON"), "{e:?}");
        assert_eq!(parse::<T>(&Bytes::from_static(b"{")).unwrap_err().status, 400);
    }
}
