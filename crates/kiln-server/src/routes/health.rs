//! Health, metrics and the fallback for unknown routes.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

/// `GET /health`: 200 once the models are loaded (the server only listens after that).
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({"status": "ok", "models": state.models.names()}))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Any other path: 404 in the API's error shape.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no route {}; see /v1/embeddings, /v1/chat/completions, /v1/completions, /embed, /v1/models, /health, /metrics",
            uri.path()
        ),
        param: None,
        code: "not_found",
    }
}
