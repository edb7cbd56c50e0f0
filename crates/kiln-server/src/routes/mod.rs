//! The HTTP routes and the middleware around them.

mod chat;
mod embeddings;
mod files;
mod health;
mod models;
mod playground;
mod tei;
mod wasm_pkg;

use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::path::PathBuf;
use std::time::Instant;

/// Choices about the routes beyond the shared state.
#[derive(Debug, Clone, Default)]
pub struct RouterOptions {
    /// Folders searched, in order, for the WebAssembly package served at `/wasm/` (the
    /// output of `scripts/build-wasm.sh`); empty: `/wasm/` always answers 404.
    pub wasm_dirs: Vec<PathBuf>,
}

/// The full router: API routes, body limit, request metrics and request ids.
pub fn router(state: AppState) -> Router {
    router_with(state, RouterOptions::default())
}

/// [`router`] with `options`.
pub fn router_with(state: AppState, options: RouterOptions) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(chat::completions))
        .route("/embed", post(tei::embed))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}/files", get(files::list))
        .route("/v1/models/{id}/files/{*name}", get(files::download))
        .merge(playground::routes())
        .merge(wasm_pkg::routes(options.wasm_dirs))
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(health::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn(crate::request_id::assign))
        .with_state(state)
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let resp = next.run(req).await;
    state.metrics.observe_request(
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}
