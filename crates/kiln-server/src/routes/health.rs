//! Health, metrics and the fallback for unknown routes.

use crate::error::ApiError;
use crate::registry::Engine;
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

/// `GET /health/live`: 200 while the process serves HTTP at all.
pub async fn live() -> impl IntoResponse {
    Json(json!({"status": "live"}))
}

/// `GET /health/ready`: 200 when the models are loaded and no shutdown has begun, else 503
/// (load balancers stop sending work).
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    for m in state.models.iter() {
        if let Engine::Generation(g) = &m.engine {
            state.metrics.observe_generation_engine(
                g.name(),
                g.running_sequences(),
                g.queue_depth(),
                g.reused_prompt_tokens() as u64,
            );
        }
    }
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
            "no route {}; see /v1/embeddings, /v1/chat/completions, /v1/completions, /embed, /v1/models, /health, /health/live, /health/ready, /metrics",
            uri.path()
        ),
        param: None,
        code: "not_found",
    }
}
