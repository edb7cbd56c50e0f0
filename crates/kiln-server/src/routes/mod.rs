//! The HTTP routes and the middleware around them.

mod chat;
mod embeddings;
mod files;
mod health;
mod models;
mod openapi;
mod playground;
mod tei;
mod wasm_pkg;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use openapi::description as openapi_description;

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
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(health::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            enforce_deadline,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn(crate::request_id::assign))
        .with_state(state)
}

/// Cancels a request whose response has not begun by `--request-timeout` with a 408 (dropping
/// the handler drops its engine receiver, which frees the work). Streams carry the same
/// deadline into their body (see `chat::stream`).
async fn enforce_deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(limit) = state.limits.request_timeout else {
        return next.run(req).await;
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::deadline_exceeded(limit).into_response(),
    }
}

/// The most bytes of an oversize body read and thrown away so that its client, still sending,
/// receives the 413 instead of a connection reset.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Answers 413 from the `Content-Length` header alone when it declares more than
/// `--max-body-bytes`. A client that sent `Expect: 100-continue` never sends the body; any other
/// has its body (up to [`DRAIN_MAX_BYTES`], for at most 10 s) read and dropped first, because
/// closing a socket with unread input resets the connection and the client would lose the
/// answer. Bodies without a length are cut at the limit by the JSON extractor.
async fn refuse_declared_oversize(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.limits.max_body_bytes as u64;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > limit) else {
        return next.run(req).await;
    };
    if !req.headers().contains_key(header::EXPECT) && declared <= DRAIN_MAX_BYTES {
        let mut body = req.into_body().into_data_stream();
        let drain = async { while let Some(Ok(_)) = body.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    }
    let mut resp = ApiError::too_large(format!(
        "the request body is {declared} bytes; this server accepts at most {limit} (see --max-body-bytes)"
    ))
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
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
    if let Some(ErrorCode(code)) = resp.extensions().get::<ErrorCode>() {
        state.metrics.observe_refusal(&route, code);
    }
    resp
}
