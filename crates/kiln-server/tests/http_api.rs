//! The HTTP API on a generated tiny model: schemas, status codes and error shapes.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use kiln_core::{EmbedderOptions, SentenceEmbedder};
use kiln_engine::{BatchReport, EmbeddingEngine, EngineConfig, EngineObserver};
use kiln_server::metrics::Metrics;
use kiln_server::{AppState, Limits, ModelRegistry};
use serde_json::{json, Value};
use std::sync::{mpsc, Arc, Mutex};
use tower::ServiceExt;

struct App {
    _dir: tempfile::TempDir,
    router: Router,
    state: AppState,
}

fn app_with(
    limits: Limits,
    config: EngineConfig,
    observer: Option<Arc<dyn EngineObserver>>,
) -> App {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(
        dir.path(),
        &TinyBertSpec {
            max_seq_length: 12,
            ..Default::default()
        },
    )
    .unwrap();
    let model = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let observer = observer.unwrap_or_else(|| metrics.clone());
    let mut registry = ModelRegistry::new();
    registry
        .add(EmbeddingEngine::start("tiny", model, config, observer))
        .unwrap();
    let state = AppState::new(registry, metrics, limits);
    App {
        _dir: dir,
        router: kiln_server::router(state.clone()),
        state,
    }
}

fn app() -> App {
    app_with(Limits::default(), EngineConfig::default(), None)
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value, headers)
}

async fn post(
    router: &Router,
    uri: &str,
    body: Value,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    call(router, "POST", uri, Some(&body.to_string())).await
}

fn vector(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_openai_error(body: &Value, code: &str) {
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "{body}");
}

#[tokio::test]
async fn openai_embeddings_in_input_order_with_usage() {
    let a = app();
    let (s, body, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": ["hello world", "the cat"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "tiny");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    // "hello world" and "the cat" are 2 + 2 word pieces, plus [CLS] and [SEP] each.
    assert_eq!(body["usage"]["prompt_tokens"], 8);
    let first = vector(&data[0]["embedding"]);
    assert_eq!(first.len(), 32);
    let (_, single, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": "hello world"}),
    )
    .await;
    let alone = vector(&single["data"][0]["embedding"]);
    assert!(first.iter().zip(&alone).all(|(x, y)| (x - y).abs() < 1e-6));
    assert!((first.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
}

#[tokio::test]
async fn base64_and_dimensions() {
    let a = app();
    let (_, f, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": "kiln"}),
    )
    .await;
    let floats = vector(&f["data"][0]["embedding"]);
    let (s, b, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": "kiln", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, floats);

    let (s, d, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": "kiln", "dimensions": 8}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let short = vector(&d["data"][0]["embedding"]);
    assert_eq!(short.len(), 8);
    assert!(
        (short.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5,
        "re-normalized"
    );
    let n: f32 = floats[..8].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(short
        .iter()
        .zip(&floats[..8])
        .all(|(s, f)| (s - f / n).abs() < 1e-5));

    for bad in [0, 33] {
        let (s, e, _) = post(
            &a.router,
            "/v1/embeddings",
            json!({"model": "tiny", "input": "kiln", "dimensions": bad}),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(e["error"]["param"], "dimensions");
    }
}

#[tokio::test]
async fn malformed_and_invalid_requests_are_400_in_openai_shape() {
    let a = app();
    let cases = [
        "{not json",
        "",
        "[]",
        r#"{"model": "tiny"}"#,
        r#"{"model": "tiny", "input": 5}"#,
        r#"{"model": "tiny", "input": []}"#,
        r#"{"model": "tiny", "input": ["ok", ""]}"#,
        r#"{"model": "tiny", "input": "   "}"#,
        r#"{"model": "tiny", "input": "x", "encoding_format": "int8"}"#,
        r#"{"model": "tiny", "input": "x", "temperature": 1}"#,
    ];
    for body in cases {
        let (s, e, _) = call(&a.router, "POST", "/v1/embeddings", Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body:?} -> {e}");
        assert_openai_error(&e, "invalid_request");
    }
    // Invalid UTF-8 in the body.
    let req = Request::post("/v1/embeddings")
        .body(Body::from(vec![b'{', 0xff, 0xfe, b'}']))
        .unwrap();
    assert_eq!(
        a.router.clone().oneshot(req).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn unknown_model_is_404_and_names_the_loaded_ones() {
    let a = app();
    let (s, e, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "gpt-9", "input": "x"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_openai_error(&e, "model_not_found");
    assert!(e["error"]["message"].as_str().unwrap().contains("tiny"));
    let (s, _, _) = post(
        &a.router,
        "/embed",
        json!({"model": "gpt-9", "inputs": "x"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn size_limits_are_413() {
    let a = app_with(
        Limits {
            max_body_bytes: 4096,
            max_inputs: 3,
            ..Limits::default()
        },
        EngineConfig::default(),
        None,
    );
    let (s, e, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": ["a", "b", "c", "d"]}),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_openai_error(&e, "request_too_large");
    let big = "word ".repeat(2000);
    let (s, e, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": big}),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    assert_openai_error(&e, "request_too_large");
}

#[tokio::test]
async fn over_long_inputs_truncate_or_422() {
    let a = app();
    let long = "the cat sat on the mat and the dog sat on the kiln";
    // TEI semantics: truncate defaults to false.
    let (s, e, _) = post(&a.router, "/embed", json!({"inputs": long})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_openai_error(&e, "context_length_exceeded");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("17 tokens"),
        "{e}"
    );
    let (s, _, _) = post(
        &a.router,
        "/embed",
        json!({"inputs": long, "truncate": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // OpenAI route: truncates by default, as sentence-transformers does; can be refused.
    let (s, ok, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": long}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ok["usage"]["prompt_tokens"], 12);
    let (s, _, _) = post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": long, "truncate": false}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn tei_embed_returns_arrays_and_honours_normalize() {
    let a = app();
    let (s, body, _) = post(
        &a.router,
        "/embed",
        json!({"inputs": ["hello", "world"], "normalize": false}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let n: f32 = vector(&rows[0]).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() > 1e-3);
    let (_, body, _) = post(&a.router, "/embed", json!({"inputs": "hello"})).await;
    let n: f32 = vector(&body[0]).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() < 1e-5);
}

#[tokio::test]
async fn models_health_metrics_and_unknown_routes() {
    let a = app();
    let (s, m, _) = call(&a.router, "GET", "/v1/models", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(m["data"][0]["id"], "tiny");
    assert_eq!(m["data"][0]["object"], "model");
    let (s, h, _) = call(&a.router, "GET", "/health", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["status"], "ok");
    post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "tiny", "input": "x"}),
    )
    .await;
    post(
        &a.router,
        "/v1/embeddings",
        json!({"model": "nope", "input": "x"}),
    )
    .await;
    let (s, text, _) = call(&a.router, "GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap();
    for needle in [
        r#"kiln_http_requests_total{route="/v1/embeddings",status="200"} 1"#,
        r#"kiln_http_requests_total{route="/v1/embeddings",status="404"} 1"#,
        r#"kiln_http_request_duration_seconds_count{route="/v1/embeddings"} 2"#,
        r#"kiln_batch_sequences_count{model="tiny"} 1"#,
        r#"kiln_queue_depth{model="tiny"}"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let (s, e, _) = call(&a.router, "GET", "/v2/whatever", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_openai_error(&e, "not_found");
}

/// Holds the compute thread in its first batch until released.
struct Gate {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl EngineObserver for Gate {
    fn batch_done(&self, _m: &str, _r: BatchReport) {
        if let Some(tx) = self.entered.lock().unwrap().take() {
            tx.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_429_with_retry_after() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(release_rx),
    });
    let a = app_with(
        Limits::default(),
        EngineConfig {
            max_queue: 1,
            ..Default::default()
        },
        Some(gate),
    );
    let body = json!({"model": "tiny", "input": "hello"});
    let busy = tokio::spawn({
        let r = a.router.clone();
        let b = body.clone();
        async move { post(&r, "/v1/embeddings", b).await.0 }
    });
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    let queued = tokio::spawn({
        let r = a.router.clone();
        let b = body.clone();
        async move { post(&r, "/v1/embeddings", b).await.0 }
    });
    // Wait until the second request sits in the queue; the next one cannot fit.
    let engine = a.state.models.get("tiny").unwrap().clone();
    for _ in 0..1000 {
        if engine.queue_depth() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(engine.queue_depth(), 1, "the second request never queued");
    let (s, e, h) = post(&a.router, "/v1/embeddings", body.clone()).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{e}");
    assert_openai_error(&e, "overloaded");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert_eq!(h.get("retry-after").unwrap(), "1");
    release_tx.send(()).unwrap();
    assert_eq!(busy.await.unwrap(), StatusCode::OK);
    assert_eq!(queued.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn health_probes_follow_readiness() {
    let a = app();
    let (status, body, _) = call(&a.router, "GET", "/health/live", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("live"))
    );
    let (status, _, _) = call(&a.router, "GET", "/health/ready", None).await;
    assert_eq!(status, StatusCode::OK);
    // Shutdown begins: readiness drops, liveness stays.
    a.state
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let (status, body, _) = call(&a.router, "GET", "/health/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _, _) = call(&a.router, "GET", "/health/live", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn request_ids_are_echoed_or_assigned() {
    let a = app();
    let send = |id: Option<&str>| {
        let mut req = Request::builder().method("GET").uri("/v1/models");
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        a.router.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    let resp = send(Some("client-id-42")).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-id-42");
    let first = send(None).await.unwrap().headers()["x-request-id"].clone();
    let second = send(None).await.unwrap().headers()["x-request-id"].clone();
    assert_eq!(first.len(), 16);
    assert_ne!(first, second);
    // An unusable id is replaced, not echoed.
    let resp = send(Some("bad id with spaces")).await.unwrap();
    assert_ne!(resp.headers()["x-request-id"], "bad id with spaces");
    // Errors carry it too.
    let (_, _, headers) = call(&a.router, "GET", "/nowhere", None).await;
    assert!(headers.contains_key("x-request-id"));
}
