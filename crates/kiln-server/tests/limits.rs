//! Request limits on a real chat model: prompt and completion caps, the request deadline
//! (non-streamed and mid-stream), and the shutdown timeout closing open streams.

mod common;

use common::real_chat_model;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kiln_core::ChatModel;
use kiln_engine::{GenerationConfig, GenerationEngine};
use kiln_server::metrics::Metrics;
use kiln_server::registry::Engine;
use kiln_server::{AppState, Limits, ModelRegistry};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn app(limits: Limits) -> (Router, AppState) {
    let chat = ChatModel::load(&real_chat_model()).unwrap();
    let mut registry = ModelRegistry::new();
    registry
        .add_generation(GenerationEngine::start(
            "chat",
            chat,
            GenerationConfig::default(),
        ))
        .unwrap();
    let state = AppState::new(registry, Arc::new(Metrics::new()), limits);
    (kiln_server::router(state.clone()), state)
}

fn request(uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn post(router: &Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let resp = router.clone().oneshot(request(uri, &body)).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

async fn metrics(router: &Router) -> String {
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn running(state: &AppState) -> usize {
    match state.models.find("chat") {
        Some(Engine::Generation(g)) => g.running_sequences(),
        _ => panic!("no chat model"),
    }
}

/// Waits up to 10 s for the engine to have no running sequence.
async fn wait_until_idle(state: &AppState) {
    let start = Instant::now();
    while running(state) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the cancelled request still holds its slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_error(body: &Value, code: &str, mentions: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{message}");
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn prompt_and_completion_caps_are_400_naming_the_limit() {
    let (router, _state) = app(Limits {
        max_prompt_tokens: 48,
        max_completion_tokens: 20,
        ..Limits::default()
    });
    let long = "one two three four five six seven eight nine ten eleven twelve ".repeat(6);
    let (s, e) = post(
        &router,
        "/v1/completions",
        json!({"model": "chat", "prompt": long, "max_tokens": 2}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&e, "invalid_request", "at most 48 prompt tokens");
    let (s, e) = post(
        &router,
        "/v1/chat/completions",
        json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 21}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&e, "invalid_request", "at most 20 tokens");
    assert_eq!(e["error"]["param"], "max_tokens");
    // Within both caps it answers; a chat request without max_tokens stops at the cap.
    let (s, c) = post(
        &router,
        "/v1/completions",
        json!({"model": "chat", "prompt": "Once upon", "max_tokens": 20, "temperature": 0}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (s, c) = post(
        &router,
        "/v1/chat/completions",
        json!({"model": "chat", "messages": [{"role": "user", "content": "Write a long story about a kiln."}],
               "temperature": 0}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert!(
        c["usage"]["completion_tokens"].as_u64().unwrap() <= 20,
        "{c}"
    );
}

#[tokio::test]
async fn a_request_past_its_deadline_is_408_and_frees_its_slot() {
    let (router, state) = app(Limits {
        request_timeout: Some(Duration::from_millis(300)),
        ..Limits::default()
    });
    let started = Instant::now();
    let (s, e) = post(
        &router,
        "/v1/completions",
        json!({"model": "chat", "prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0,
               "stop": ["never appears \u{1}"]}),
    )
    .await;
    assert_eq!(s, StatusCode::REQUEST_TIMEOUT, "{e}");
    assert_error(&e, "deadline_exceeded", "--request-timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until_idle(&state).await;
    let m = metrics(&router).await;
    assert!(
        m.contains(
            r#"kiln_refused_requests_total{route="/v1/completions",reason="deadline_exceeded"} 1"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn a_stream_past_its_deadline_ends_with_an_error_event_and_done() {
    let (router, state) = app(Limits {
        request_timeout: Some(Duration::from_millis(500)),
        ..Limits::default()
    });
    let body = json!({"model": "chat", "prompt": "Once upon a time", "max_tokens": 3000,
                      "temperature": 0, "stream": true});
    let resp = router
        .clone()
        .oneshot(request("/v1/completions", &body))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let events = sse_data(&String::from_utf8_lossy(&bytes));
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_error(&error, "deadline_exceeded", "deadline");
    wait_until_idle(&state).await;
}

#[tokio::test]
async fn the_shutdown_timeout_closes_open_streams_with_a_final_error_event() {
    let (router, state) = app(Limits::default());
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "Tell me a long story."}],
                      "max_tokens": 3000, "temperature": 0, "stream": true});
    let resp = router
        .clone()
        .oneshot(request("/v1/chat/completions", &body))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // Read past the role chunk to the first text, so the stream is mid-generation.
    let mut seen = String::new();
    while sse_data(&seen).len() < 2 {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    state.close_streams();
    let rest = body.collect().await.unwrap().to_bytes();
    seen.push_str(&String::from_utf8_lossy(&rest));
    let events = sse_data(&seen);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_error(&error, "shutting_down", "shutdown timeout");
    assert!(events.len() >= 4, "{events:?}");
    wait_until_idle(&state).await;
}
