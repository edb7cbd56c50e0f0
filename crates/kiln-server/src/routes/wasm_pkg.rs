//! `GET /wasm/{file}`: the WebAssembly build of kiln (crates/kiln-wasm, built by
//! `scripts/build-wasm.sh`) for the playground's in-browser mode.
//!
//! The folder is looked up on every request, so a build made after the server started is
//! picked up. Only the files wasm-bindgen writes are served, by exact name.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;

/// The files of the package and their content types.
const FILES: &[(&str, &str)] = &[
    ("kiln_wasm.js", "text/javascript; charset=utf-8"),
    ("kiln_wasm_bg.wasm", "application/wasm"),
];

/// Routes serving the package from the first of `dirs` that holds the requested file.
pub fn routes<S: Clone + Send + Sync + 'static>(dirs: Vec<PathBuf>) -> Router<S> {
    let dirs = Arc::new(dirs);
    Router::new().route(
        "/wasm/{file}",
        get(move |Path(file): Path<String>| serve(dirs.clone(), file)),
    )
}

async fn serve(dirs: Arc<Vec<PathBuf>>, file: String) -> Response {
    let Some(&(name, content_type)) = FILES.iter().find(|(n, _)| *n == file) else {
        return not_found(format!(
            "no such file in kiln's WebAssembly package: `{file}` (it has {})",
            FILES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ));
    };
    let candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join(name)).collect();
    let read = tokio::task::spawn_blocking(move || {
        candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or(candidates)
    })
    .await;
    match read {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(tried)) => not_found(format!(
            "the WebAssembly build of kiln is not there (looked for {}); build it with \
             scripts/build-wasm.sh, or point `kiln serve --wasm-dir` at its output",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the WebAssembly package: {e}"),
        )
            .into_response(),
    }
}

fn not_found(message: String) -> Response {
    let body = serde_json::json!({
        "error": {"message": message, "type": "not_found_error", "code": "wasm_not_built"}
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}
