//! API errors, rendered in OpenAI's error shape with the matching HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_engine::EngineError;
use serde::Serialize;
use utoipa::ToSchema;

/// The `code` of an error response, kept in the response's extensions so the metrics can count
/// refusals by reason.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable explanation of what was wrong and what to do.
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<&'static str>,
    /// A stable machine-readable code.
    pub code: &'static str,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code,
        }
    }

    /// 400: the request is malformed or asks for something invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// 400: the model exists but is of the other kind (embedding vs chat).
    pub fn wrong_model_kind(name: &str, kind: &str, route: &str) -> Self {
        Self::invalid(format!(
            "model `{name}` is a {kind} model and cannot serve {route}"
        ))
        .with_param("model")
    }

    /// 404: no model of this name is loaded.
    pub fn model_not_found(name: &str, loaded: &[String]) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "the model `{name}` does not exist on this server; loaded models: {}",
                loaded.join(", ")
            ),
        )
        .with_param("model")
    }

    /// 413: the request is larger than the server accepts.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", message)
    }

    /// 422: an input is longer than the model's maximum and truncation is off.
    pub fn input_too_long(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "context_length_exceeded",
            message,
        )
        .with_param("input")
    }

    /// 408: the request ran past the server's deadline and was cancelled.
    pub fn deadline_exceeded(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "deadline_exceeded",
            format!(
                "the request ran past the server's deadline of {:.1} s (--request-timeout) and was cancelled",
                limit.as_secs_f64()
            ),
        )
    }

    /// 500: a failure of the server itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    fn error_type(&self) -> &'static str {
        match self.status.as_u16() {
            408 => "timeout_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Overloaded { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!("{e}; retry after a second"),
            ),
            EngineError::Stopped(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            EngineError::Failed(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ErrorDetail {
                r#type: self.error_type(),
                message: self.message,
                param: self.param,
                code: self.code,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(ErrorCode(self.code));
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// The body of every error response (OpenAI's shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The details of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A sentence for people, naming the limit or field at fault.
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`, `timeout_error` or `server_error`.
    #[serde(rename = "type")]
    pub r#type: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<&'static str>,
    /// A stable machine-readable code (`model_not_found`, `request_too_large`, ...).
    pub code: &'static str,
}

/// The refusals every model route can answer, declared once for the OpenAPI description
/// (`responses(..., Refusals)` in each route's `#[utoipa::path]`); never constructed.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// Malformed JSON, a wrong type, an unknown field, or a value out of range
    #[response(status = 400)]
    BadRequest(ErrorResponse),
    /// Missing or wrong API key (when keys are enforced)
    #[response(status = 401)]
    Unauthorized(ErrorResponse),
    /// No model of this name
    #[response(status = 404)]
    NotFound(ErrorResponse),
    /// Past `--request-timeout`; the work was cancelled
    #[response(status = 408)]
    Timeout(ErrorResponse),
    /// Body or input count over the server's limits
    #[response(status = 413)]
    TooLarge(ErrorResponse),
    /// Over a key's rate limit or the server's queue; see Retry-After
    #[response(status = 429)]
    TooMany(ErrorResponse),
    /// Shutting down
    #[response(status = 503)]
    Unavailable(ErrorResponse),
}
