//! Hostile HTTP input against a real listening server (the tiny generated embedding model and
//! the real SmolLM2 chat model): invalid UTF-8, 10 MB strings, thousands of inputs, deep
//! nesting, wrong types, lying Content-Length, garbage on the socket. Each gets a clear 4xx
//! (or a clean close), and the server answers normally afterwards.

mod common;

use common::real_chat_model;

use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use kiln_core::{ChatModel, EmbedderOptions, SentenceEmbedder};
use kiln_engine::{EmbeddingEngine, EngineConfig, GenerationConfig, GenerationEngine};
use kiln_server::metrics::Metrics;
use kiln_server::{AppState, Limits, ModelRegistry};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TEN_MB: usize = 10 * 1024 * 1024;

struct Server {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

async fn serve(limits: Limits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    let embedder = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default()).unwrap();
    let chat = ChatModel::load(&real_chat_model()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut registry = ModelRegistry::new();
    registry
        .add(EmbeddingEngine::start(
            "tiny",
            embedder,
            EngineConfig::default(),
            metrics.clone(),
        ))
        .unwrap();
    registry
        .add_generation(GenerationEngine::start(
            "chat",
            chat,
            GenerationConfig::default(),
        ))
        .unwrap();
    let state = AppState::new(registry, metrics, limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, kiln_server::router(state))
            .await
            .unwrap();
    });
    Server { _dir: dir, addr }
}

/// Sends raw bytes and reads the whole answer (status and JSON body, if any) while still
/// sending, as a real client does: the server may answer before it has read everything. With
/// `half_close` the client then shuts its sending side, as one that gives up mid-request.
async fn send(addr: SocketAddr, bytes: &[u8], half_close: bool) -> (u16, Value) {
    let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        // A failed write is expected when the server answers early; the answer is what counts.
        let _ = wr.write_all(&bytes).await;
        if half_close {
            let _ = wr.shutdown().await;
        }
        wr
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut out)).await;
    drop(writer.await);
    parse(&out)
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, Value) {
    send(addr, bytes, false).await
}

fn parse(resp: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(resp);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn post_bytes(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: kiln\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, Value) {
    raw(addr, &post_bytes(path, body)).await
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no OpenAI error>")
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

/// The server still answers a normal embedding and a normal chat request.
async fn assert_still_serving(addr: SocketAddr) {
    let (s, v) = post(
        addr,
        "/v1/embeddings",
        json!({"model": "tiny", "input": "still here"})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 32);
    let (s, v) = post(
        addr,
        "/v1/chat/completions",
        json!({"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn invalid_utf8_wrong_types_and_deep_nesting_are_400() {
    let srv = serve(Limits::default()).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("/v1/embeddings", b"{\"model\": \"tiny\", \"input\": \"\xff\xfe\"}".to_vec()),
        (
            "/v1/chat/completions",
            b"{\"model\": \"chat\", \"messages\": [{\"role\": \"user\", \"content\": \"\xc3\x28\"}]}"
                .to_vec(),
        ),
        ("/v1/completions", b"{\"model\": \"chat\", \"prompt\": \"\xed\xa0\x80\"}".to_vec()),
        // A lone surrogate escape is valid JSON syntax but not a Unicode scalar.
        ("/v1/embeddings", br#"{"model": "tiny", "input": "\ud800"}"#.to_vec()),
        ("/v1/embeddings", br#"{"model": "tiny", "input": {"a": 1}}"#.to_vec()),
        ("/v1/embeddings", br#"{"model": 12, "input": "x"}"#.to_vec()),
        ("/v1/embeddings", br#"{"model": "tiny", "input": [1, 2, 3]}"#.to_vec()),
        ("/v1/embeddings", br#"{"model": "tiny", "input": "x", "dimensions": -1}"#.to_vec()),
        (
            "/v1/chat/completions",
            br#"{"model": "chat", "messages": "hello"}"#.to_vec(),
        ),
        (
            "/v1/chat/completions",
            br#"{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e309}"#
                .to_vec(),
        ),
        (
            "/v1/chat/completions",
            br#"{"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#
                .to_vec(),
        ),
        (
            "/v1/completions",
            br#"{"model": "chat", "prompt": "x", "max_tokens": 18446744073709551616}"#.to_vec(),
        ),
        // 100,000 levels of nesting: serde_json's recursion limit, not a stack overflow.
        ("/v1/embeddings", {
            let mut b = br#"{"model": "tiny", "input": "#.to_vec();
            b.extend(std::iter::repeat_n(b'[', 100_000));
            b.extend(std::iter::repeat_n(b']', 100_000));
            b.push(b'}');
            b
        }),
        ("/v1/embeddings", b"\x00\x01\x02garbage".to_vec()),
    ];
    for (path, body) in &cases {
        let (s, v) = post(srv.addr, path, body).await;
        assert_eq!(
            s,
            400,
            "{path} {:?} -> {v}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert_eq!(error_code(&v), "invalid_request", "{v}");
        assert!(!message(&v).is_empty(), "{v}");
    }
    assert_still_serving(srv.addr).await;
}

#[tokio::test]
async fn ten_megabyte_strings_are_413_under_the_default_limit_and_served_above_it() {
    let srv = serve(Limits::default()).await;
    let big = "kiln ".repeat(TEN_MB / 5);
    for (path, body) in [
        ("/v1/embeddings", json!({"model": "tiny", "input": big})),
        (
            "/v1/chat/completions",
            json!({"model": "chat", "messages": [{"role": "user", "content": big}]}),
        ),
    ] {
        let (s, v) = post(srv.addr, path, body.to_string().as_bytes()).await;
        assert_eq!(s, 413, "{path} -> {v}");
        assert_eq!(error_code(&v), "request_too_large");
        assert!(message(&v).contains("--max-body-bytes"), "{v}");
    }
    assert_still_serving(srv.addr).await;

    // With the body limit raised, a 10 MB input is truncated to the model's length (the
    // default, as sentence-transformers does) and a 10 MB prompt is refused by its token cap.
    let srv = serve(Limits {
        max_body_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    })
    .await;
    let (s, v) = post(
        srv.addr,
        "/v1/embeddings",
        json!({"model": "tiny", "input": big})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let (s, v) = post(
        srv.addr,
        "/v1/completions",
        json!({"model": "chat", "prompt": big})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(message(&v).contains("--max-prompt-tokens"), "{v}");
    assert_still_serving(srv.addr).await;
}

#[tokio::test]
async fn thousands_of_inputs_are_413_beyond_the_limit_and_served_within_it() {
    let srv = serve(Limits::default()).await;
    let many: Vec<String> = (0..5000).map(|i| format!("sentence {i}")).collect();
    let (s, v) = post(
        srv.addr,
        "/v1/embeddings",
        json!({"model": "tiny", "input": many})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert!(message(&v).contains("512"), "{v}");

    let srv = serve(Limits {
        max_inputs: 10_000,
        ..Limits::default()
    })
    .await;
    let (s, v) = post(
        srv.addr,
        "/v1/embeddings",
        json!({"model": "tiny", "input": many})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(s, 200);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 5000);
    assert!(data.iter().enumerate().all(|(i, d)| d["index"] == i));
    assert_still_serving(srv.addr).await;
}

#[tokio::test]
async fn broken_http_framing_never_takes_the_server_down() {
    let srv = serve(Limits::default()).await;
    // Content-Length promises more than is sent, then the client gives up.
    let mut req = post_bytes("/v1/embeddings", br#"{"model": "tiny", "input": "x"}"#);
    req.truncate(req.len() - 10);
    let (s, v) = send(srv.addr, &req, true).await;
    assert!(s == 0 || s == 400, "{s} {v}");
    // A declared body far over the limit: refused from the header, without reading it (the
    // client waits for `100 Continue`, which never comes).
    let (s, v) = send(
        srv.addr,
        b"POST /v1/embeddings HTTP/1.1\r\nhost: kiln\r\ncontent-length: 99999999999\r\nexpect: 100-continue\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert!(message(&v).contains("99999999999 bytes"), "{v}");
    // Not HTTP at all, a header line without a colon, a huge header.
    for junk in [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"GET /health HTTP/1.1\r\nthis is not a header\r\n\r\n".to_vec(),
        format!(
            "GET /health HTTP/1.1\r\nhost: kiln\r\nx-big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes(),
    ] {
        let (s, _) = raw(srv.addr, &junk).await;
        assert!(s == 0 || (400..500).contains(&s), "status {s}");
    }
    // Connections opened and dropped without a byte.
    for _ in 0..50 {
        drop(TcpStream::connect(srv.addr).await.unwrap());
    }
    assert_still_serving(srv.addr).await;
}
