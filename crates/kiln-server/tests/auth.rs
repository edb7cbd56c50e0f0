//! API keys on the HTTP API, on every database backend (SQLite always; PostgreSQL when
//! `KILN_TEST_POSTGRES_URL` is set, required in CI): 401s, open routes, limits (429 with
//! `Retry-After`), and usage rows that match the requests made.

mod common;

use common::real_chat_model;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use kiln_core::{ChatModel, EmbedderOptions, SentenceEmbedder};
use kiln_engine::{EmbeddingEngine, EngineConfig, GenerationConfig, GenerationEngine};
use kiln_server::auth::{self, Auth, AuthConfig};
use kiln_server::metrics::Metrics;
use kiln_server::{AppState, Limits, ModelRegistry};
use kiln_store::testing::TestDatabase;
use kiln_store::{KeyLimits, KeyStore, NewKey};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

struct App {
    router: Router,
    auth: Auth,
    store: KeyStore,
    _model_dir: tempfile::TempDir,
}

async fn app(db: &TestDatabase, config: AuthConfig, with_chat: bool) -> App {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
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
    if with_chat {
        let chat = ChatModel::load(&real_chat_model()).unwrap();
        registry
            .add_generation(GenerationEngine::start(
                "chat",
                chat,
                GenerationConfig::default(),
            ))
            .unwrap();
    }
    let state = AppState::new(registry, metrics.clone(), Limits::default());
    let store = KeyStore::connect(&db.url).await.unwrap();
    let auth = Auth::new(store.clone(), config, Some(metrics))
        .await
        .unwrap();
    App {
        router: auth::protect(kiln_server::router(state), auth.clone()),
        auth,
        store,
        _model_dir: dir,
    }
}

/// Sends a request with optional headers; returns status, JSON (or text) body and headers.
async fn call(
    app: &App,
    method: &str,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, HeaderMap) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value, headers)
}

fn bearer(key: &NewKey) -> String {
    format!("Bearer {}", key.secret.expose())
}

async fn embed(
    app: &App,
    auth_header: Option<&str>,
    input: &str,
) -> (StatusCode, Value, HeaderMap) {
    let headers: Vec<(&str, &str)> = auth_header
        .map(|h| ("authorization", h))
        .into_iter()
        .collect();
    call(
        app,
        "POST",
        "/v1/embeddings",
        Some(json!({"model": "tiny", "input": input})),
        &headers,
    )
    .await
}

fn assert_invalid_key(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key"));
    assert!(body["error"].get("param").is_some());
}

#[tokio::test]
async fn keys_are_required_once_one_exists_and_probes_stay_open() {
    for db in TestDatabase::all().await {
        eprintln!("backend: {}", db.backend);
        let app = app(&db, AuthConfig::default(), false).await;
        // No key exists yet: the API is open.
        assert_eq!(embed(&app, None, "hello").await.0, StatusCode::OK);

        let key = app
            .store
            .create_key("alice", KeyLimits::default())
            .await
            .unwrap();
        let (s, b, _) = embed(&app, None, "hello").await;
        assert_invalid_key(s, &b);
        assert!(b["error"]["message"].as_str().unwrap().contains("missing"));
        let (s, b, _) = embed(&app, Some("Bearer kiln-0123456789ab-nope"), "hello").await;
        assert_invalid_key(s, &b);
        let forged = format!("Bearer kiln-{}-{}", key.record.id, "f".repeat(64));
        let (s, b, _) = embed(&app, Some(&forged), "hello").await;
        assert_invalid_key(s, &b);

        let (s, b, _) = embed(&app, Some(&bearer(&key)), "hello").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["object"], "list");
        let (s, _, _) = call(
            &app,
            "GET",
            "/v1/models",
            None,
            &[("x-api-key", key.secret.expose())],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, b, _) = call(&app, "GET", "/v1/models", None, &[]).await;
        assert_invalid_key(s, &b);
        let (s, b, _) = call(&app, "POST", "/embed", Some(json!({"inputs": "x"})), &[]).await;
        assert_invalid_key(s, &b);

        for open in ["/health", "/metrics"] {
            let (s, _, _) = call(&app, "GET", open, None, &[]).await;
            assert_eq!(s, StatusCode::OK, "{open}");
        }
        // Refusals are counted in the request metrics by route and status.
        let (_, metrics, _) = call(&app, "GET", "/metrics", None, &[]).await;
        let refused = metrics
            .as_str()
            .unwrap()
            .lines()
            .find(|l| {
                l.contains("route=\"/v1/embeddings\"")
                    && l.contains("status=\"401\"")
                    && !l.starts_with('#')
            })
            .unwrap_or_else(|| panic!("no 401 line in {metrics}"))
            .to_string();
        assert!(refused.ends_with(" 3"), "{refused}");
        // The /health/* probes stay open without a key.
        let (s, _, _) = call(&app, "GET", "/health/ready", None, &[]).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, _) = call(&app, "GET", "/health/live", None, &[]).await;
        assert_eq!(s, StatusCode::OK);

        app.store.revoke_key(&key.record.id).await.unwrap();
        let (s, b, _) = embed(&app, Some(&bearer(&key)), "hello").await;
        assert_invalid_key(s, &b);
        // Every key revoked: auth stays on.
        let (s, b, _) = embed(&app, None, "hello").await;
        assert_invalid_key(s, &b);
    }
}

#[tokio::test]
async fn require_auth_refuses_without_keys_and_metrics_can_be_protected() {
    for db in TestDatabase::all().await {
        let config = AuthConfig {
            require_auth: true,
            metrics_require_auth: true,
        };
        let app = app(&db, config, false).await;
        let (s, b, _) = embed(&app, None, "hello").await;
        assert_invalid_key(s, &b);
        let (s, b, _) = call(&app, "GET", "/metrics", None, &[]).await;
        assert_invalid_key(s, &b);
        assert_eq!(
            call(&app, "GET", "/health", None, &[]).await.0,
            StatusCode::OK
        );
        let key = app
            .store
            .create_key("ops", KeyLimits::default())
            .await
            .unwrap();
        let (s, b, _) = call(
            &app,
            "GET",
            "/metrics",
            None,
            &[("authorization", &bearer(&key))],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert!(b.as_str().unwrap().contains("# TYPE"));
    }
}

#[tokio::test]
async fn requests_per_minute_over_the_limit_get_429_with_retry_after() {
    for db in TestDatabase::all().await {
        let app = app(&db, AuthConfig::default(), false).await;
        let limited = KeyLimits {
            requests_per_minute: Some(2),
            ..KeyLimits::default()
        };
        let key = app.store.create_key("limited", limited).await.unwrap();
        let other = app
            .store
            .create_key("other", KeyLimits::default())
            .await
            .unwrap();
        for _ in 0..2 {
            assert_eq!(
                embed(&app, Some(&bearer(&key)), "a").await.0,
                StatusCode::OK
            );
        }
        let (s, b, h) = embed(&app, Some(&bearer(&key)), "a").await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
        assert_eq!(b["error"]["type"], "rate_limit_error");
        assert_eq!(b["error"]["code"], "rate_limit_exceeded");
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests per minute"));
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        // Another key has its own budget.
        assert_eq!(
            embed(&app, Some(&bearer(&other)), "a").await.0,
            StatusCode::OK
        );
        // The refused request is not usage.
        app.auth.flush().await;
        let rows = app.store.usage(Some(&key.record.id)).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].requests, 2);
    }
}

#[tokio::test]
async fn tokens_per_minute_over_the_budget_get_429() {
    for db in TestDatabase::all().await {
        let app = app(&db, AuthConfig::default(), false).await;
        let limits = KeyLimits {
            tokens_per_minute: Some(5),
            ..KeyLimits::default()
        };
        let key = app.store.create_key("tpm", limits).await.unwrap();
        // The first request is within budget when it starts, and uses more than all of it.
        let (s, b, _) = embed(
            &app,
            Some(&bearer(&key)),
            "hello world hello world hello world",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert!(b["usage"]["prompt_tokens"].as_u64().unwrap() >= 5, "{b}");
        let (s, b, h) = embed(&app, Some(&bearer(&key)), "hi").await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("5 tokens per minute"));
        assert!(h.contains_key("retry-after"));
    }
}

#[tokio::test]
async fn usage_rows_match_the_requests_made() {
    for db in TestDatabase::all().await {
        eprintln!("backend: {}", db.backend);
        let app = app(&db, AuthConfig::default(), true).await;
        let a = app
            .store
            .create_key("a", KeyLimits::default())
            .await
            .unwrap();
        let b = app
            .store
            .create_key("b", KeyLimits::default())
            .await
            .unwrap();
        let mut prompt_a = 0;
        let mut completion_a = 0;
        for text in ["one", "two words", "three more words"] {
            let (s, body, _) = embed(&app, Some(&bearer(&a)), text).await;
            assert_eq!(s, StatusCode::OK);
            prompt_a += body["usage"]["prompt_tokens"].as_u64().unwrap();
        }
        // A refused request (bad model) counts as a request with no tokens.
        let (s, _, _) = call(
            &app,
            "POST",
            "/v1/embeddings",
            Some(json!({"model": "nope", "input": "x"})),
            &[("authorization", &bearer(&a))],
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // A chat answer, and a streamed one whose usage arrives in its last chunk.
        let chat = json!({"model": "chat", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 5, "temperature": 0});
        let (s, body, _) = call(
            &app,
            "POST",
            "/v1/chat/completions",
            Some(chat.clone()),
            &[("authorization", &bearer(&a))],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        prompt_a += body["usage"]["prompt_tokens"].as_u64().unwrap();
        completion_a += body["usage"]["completion_tokens"].as_u64().unwrap();
        let mut streamed = chat.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let (s, body, _) = call(
            &app,
            "POST",
            "/v1/chat/completions",
            Some(streamed),
            &[("authorization", &bearer(&a))],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let sse = body.as_str().unwrap();
        let usage: Value = sse
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
            .expect("a usage chunk");
        prompt_a += usage["prompt_tokens"].as_u64().unwrap();
        completion_a += usage["completion_tokens"].as_u64().unwrap();
        assert!(completion_a > 0);

        let (s, body, _) = embed(&app, Some(&bearer(&b)), "bee").await;
        assert_eq!(s, StatusCode::OK);
        let prompt_b = body["usage"]["prompt_tokens"].as_u64().unwrap();

        app.auth.flush().await;
        let rows = app.store.usage(Some(&a.record.id)).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].day, kiln_store::utc_day());
        assert_eq!(
            (
                rows[0].requests,
                rows[0].prompt_tokens,
                rows[0].completion_tokens
            ),
            (6, prompt_a, completion_a)
        );
        let rows = app.store.usage(Some(&b.record.id)).await.unwrap();
        assert_eq!(
            (
                rows[0].requests,
                rows[0].prompt_tokens,
                rows[0].completion_tokens
            ),
            (1, prompt_b, 0)
        );
    }
}

#[tokio::test]
async fn concurrent_requests_per_key_are_limited_until_a_stream_ends() {
    for db in TestDatabase::all().await {
        let app = app(&db, AuthConfig::default(), true).await;
        let limits = KeyLimits {
            max_concurrent: Some(1),
            ..KeyLimits::default()
        };
        let key = app.store.create_key("one-at-a-time", limits).await.unwrap();
        let req = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("authorization", bearer(&key))
            .body(Body::from(
                json!({"model": "chat", "messages": [{"role": "user", "content": "Count to ten"}], "max_tokens": 8, "stream": true})
                    .to_string(),
            ))
            .unwrap();
        // The stream's response has started but its body is not read: the request is in flight.
        let open_stream = app.router.clone().oneshot(req).await.unwrap();
        assert_eq!(open_stream.status(), StatusCode::OK);
        let (s, b, h) = embed(&app, Some(&bearer(&key)), "meanwhile").await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent"));
        assert_eq!(h["retry-after"], "1");
        // Reading the stream to its end finishes the request and frees the slot.
        open_stream.into_body().collect().await.unwrap();
        assert_eq!(
            embed(&app, Some(&bearer(&key)), "after").await.0,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_stream_left_early_still_counts_its_request_and_prompt() {
    for db in TestDatabase::all().await {
        let app = app(&db, AuthConfig::default(), true).await;
        let key = app
            .store
            .create_key("leaver", KeyLimits::default())
            .await
            .unwrap();
        let body = json!({"model": "chat", "messages": [{"role": "user", "content": "Tell a long story"}], "max_tokens": 64, "stream": true});
        let req = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("x-api-key", key.secret.expose())
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = app.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut stream = resp.into_body();
        // Read the first chunk, then leave.
        stream.frame().await.unwrap().unwrap();
        drop(stream);
        app.auth.flush().await;
        let rows = app.store.usage(Some(&key.record.id)).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].requests, 1);
        assert!(rows[0].prompt_tokens > 5, "{rows:?}");
        assert_eq!(
            rows[0].completion_tokens, 0,
            "the answer was never finished"
        );
    }
}
