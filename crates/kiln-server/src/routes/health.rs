//! Health, metrics and the fallback for unknown routes.

use crate::error::ApiError;
use crate::metrics::GenerationSnapshot;
use crate::registry::Engine;
use crate::schema::HealthStatus;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;

fn status(status: &'static str) -> Json<HealthStatus> {
    Json(HealthStatus {
        status,
        models: None,
    })
}

/// `GET /health`: 200 once the models are loaded (the server only listens after that).
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The server is up; the loaded models", body = HealthStatus)))]
pub async fn health(State(state): State<AppState>) -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "ok",
        models: Some(state.models.names()),
    })
}

/// `GET /health/live`: 200 while the process serves HTTP at all.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process serves HTTP", body = HealthStatus)))]
pub async fn live() -> Json<HealthStatus> {
    status("live")
}

/// `GET /health/ready`: 200 when the models are loaded and no shutdown has begun, else 503
/// (load balancers stop sending work).
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "Models loaded, accepting work", body = HealthStatus),
    (status = 503, description = "Shutting down", body = HealthStatus)))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, status("ready"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, status("shutting down"))
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health", security((), ("api_key" = [])), responses(
    (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
    (status = 401, description = "`--metrics-require-auth` is set and the key is missing or wrong", body = crate::error::ErrorResponse)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    for m in state.models.iter() {
        if let Engine::Generation(g) = &m.engine {
            state.metrics.observe_generation_engine(
                g.name(),
                &GenerationSnapshot {
                    running: g.running_sequences(),
                    queued: g.queue_depth(),
                    reused_total: g.reused_prompt_tokens() as u64,
                    kv_reserved: g.reserved_kv_tokens(),
                    kv_capacity: g.kv_capacity(),
                    prefix_cached: g.prefix_cache_tokens(),
                },
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
            "no route {}; see /v1/embeddings, /v1/chat/completions, /v1/completions, /embed, /v1/models, /health, /health/live, /health/ready, /metrics, /openapi.json",
            uri.path()
        ),
        param: None,
        code: "not_found",
    }
}
