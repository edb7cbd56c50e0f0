//! The browser playground served at `/`: plain HTML, CSS and JS embedded in the binary.

use crate::state::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("playground/index.html");
const PLAYGROUND_JS: &str = include_str!("playground/playground.js");
const PLAYGROUND_CSS: &str = include_str!("playground/playground.css");
const WORKER_JS: &str = include_str!("playground/playground-worker.js");

/// `/`, `/playground.js`, `/playground.css` and `/playground-worker.js` (the in-browser mode's
/// Web Worker; the WebAssembly package it imports is served at `/wasm/`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/playground.js", get(script))
        .route("/playground.css", get(style))
        .route("/playground-worker.js", get(worker))
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PLAYGROUND_JS,
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PLAYGROUND_CSS,
    )
}

async fn worker() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        WORKER_JS,
    )
}
