//! The playground page at `/` and the model-file download routes, on a generated tiny model.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use kiln_core::{EmbedderOptions, SentenceEmbedder};
use kiln_engine::{EmbeddingEngine, EngineConfig};
use kiln_server::metrics::Metrics;
use kiln_server::{AppState, Limits, ModelFiles, ModelRegistry};
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

struct App {
    dir: tempfile::TempDir,
    router: Router,
}

fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    // A file next to the model that must never be served.
    std::fs::write(dir.path().join("secret.txt"), "private").unwrap();
    let model = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut registry = ModelRegistry::new();
    registry
        .add(EmbeddingEngine::start(
            "tiny",
            model,
            EngineConfig::default(),
            metrics.clone(),
        ))
        .unwrap();
    assert!(registry.attach_files("tiny", ModelFiles::embedding_dir(dir.path())));
    assert!(!registry.attach_files("absent", ModelFiles::default()));
    let state = AppState::new(registry, metrics, Limits::default());
    App {
        dir,
        router: kiln_server::router(state),
    }
}

async fn get(router: &Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map_or(String::new(), |v| v.to_str().unwrap().to_string());
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, content_type, bytes)
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn assert_not_found(status: StatusCode, bytes: &[u8], code: &str) {
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body = json(bytes);
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn lists_the_files_the_model_was_loaded_from() {
    let a = app();
    let (s, _, bytes) = get(&a.router, "/v1/models/tiny/files").await;
    assert_eq!(s, StatusCode::OK);
    let body = json(&bytes);
    assert_eq!(body["kind"], "embedding");
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for expected in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling/config.json",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    assert!(!names.contains(&"secret.txt"));
    let weights = &body["data"].as_array().unwrap()[names
        .iter()
        .position(|n| *n == "model.safetensors")
        .unwrap()];
    let on_disk = std::fs::metadata(a.dir.path().join("model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(weights["size"], on_disk);
}

#[tokio::test]
async fn downloads_exact_bytes_including_nested_names() {
    let a = app();
    for name in ["model.safetensors", "1_Pooling/config.json"] {
        let (s, content_type, bytes) =
            get(&a.router, &format!("/v1/models/tiny/files/{name}")).await;
        assert_eq!(s, StatusCode::OK, "{name}");
        assert_eq!(content_type, "application/octet-stream");
        assert_eq!(
            bytes,
            std::fs::read(a.dir.path().join(name)).unwrap(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn refuses_unlisted_files_paths_and_models() {
    let a = app();
    for uri in [
        "/v1/models/tiny/files/secret.txt",
        "/v1/models/tiny/files/../tiny/secret.txt",
        "/v1/models/tiny/files/..%2Fsecret.txt",
        "/v1/models/tiny/files/%2Fetc%2Fpasswd",
        "/v1/models/tiny/files/1_Pooling/../config.json",
    ] {
        let (s, _, bytes) = get(&a.router, uri).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
        assert_ne!(bytes, b"private", "{uri}");
    }
    let (s, _, bytes) = get(&a.router, "/v1/models/tiny/files/secret.txt").await;
    assert_not_found(s, &bytes, "file_not_found");
    let (s, _, bytes) = get(&a.router, "/v1/models/nope/files").await;
    assert_not_found(s, &bytes, "model_not_found");
    let (s, _, bytes) = get(&a.router, "/v1/models/nope/files/config.json").await;
    assert_not_found(s, &bytes, "model_not_found");
}

#[tokio::test]
async fn serves_the_playground_page_and_its_assets() {
    let a = app();
    let (s, content_type, bytes) = get(&a.router, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = String::from_utf8(bytes).unwrap();
    assert!(html.contains(r#"<script src="/playground.js">"#));
    assert!(html.contains(r#"id="stop""#));
    let (s, content_type, js) = get(&a.router, "/playground.js").await;
    assert_eq!(s, StatusCode::OK);
    assert!(content_type.starts_with("text/javascript"));
    let js = String::from_utf8(js).unwrap();
    assert!(js.contains("/v1/chat/completions") && js.contains("/v1/embeddings"));
    let (s, content_type, _) = get(&a.router, "/playground.css").await;
    assert_eq!(s, StatusCode::OK);
    assert!(content_type.starts_with("text/css"));
}

fn app_with_wasm(dirs: Vec<std::path::PathBuf>) -> Router {
    let state = AppState::new(
        ModelRegistry::new(),
        Arc::new(Metrics::new()),
        Limits::default(),
    );
    kiln_server::router_with(state, kiln_server::RouterOptions { wasm_dirs: dirs })
}

#[tokio::test]
async fn serves_the_wasm_package_with_its_content_types() {
    let empty = tempfile::tempdir().unwrap();
    let pkg = tempfile::tempdir().unwrap();
    std::fs::write(pkg.path().join("kiln_wasm.js"), "export default 1;").unwrap();
    std::fs::write(pkg.path().join("kiln_wasm_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(pkg.path().join("other.txt"), "not served").unwrap();
    // The first folder lacks the files, the second has them.
    let router = app_with_wasm(vec![empty.path().to_path_buf(), pkg.path().to_path_buf()]);
    let (s, ct, bytes) = get(&router, "/wasm/kiln_wasm_bg.wasm").await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/wasm"));
    assert_eq!(bytes, b"\0asm\x01\0\0\0");
    let (s, ct, _) = get(&router, "/wasm/kiln_wasm.js").await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/javascript"), "{ct}");
    for uri in ["/wasm/other.txt", "/wasm/..%2Fkiln_wasm.js"] {
        let (s, _, bytes) = get(&router, uri).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
        assert!(!String::from_utf8_lossy(&bytes).contains("not served"));
    }
    let (s, ct, _) = get(&router, "/playground-worker.js").await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/javascript"), "{ct}");
}

#[tokio::test]
async fn a_missing_wasm_build_is_a_clear_404() {
    let empty = tempfile::tempdir().unwrap();
    for router in [
        app_with_wasm(vec![empty.path().to_path_buf()]),
        app_with_wasm(Vec::new()),
    ] {
        let (s, _, bytes) = get(&router, "/wasm/kiln_wasm_bg.wasm").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let body = json(&bytes);
        assert_eq!(body["error"]["code"], "wasm_not_built", "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scripts/build-wasm.sh"));
    }
}
