//! A JSON body extractor whose failures are OpenAI-shaped errors.
//!
//! It accepts any content type (`curl -d` sends form encoding by default) and reports the
//! exact parse error, with line and column, as a 400.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// A request body parsed as JSON into `T`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(
                    "the request body is larger than this server accepts (see --max-body-bytes)",
                )
            } else {
                ApiError::invalid(format!("could not read the request body: {e}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::invalid(
                "the request body is empty; send a JSON object",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}
