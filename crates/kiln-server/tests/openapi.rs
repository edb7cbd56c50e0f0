//! `GET /openapi.json`: every API route is described, with the served models as examples, and
//! the description's schemas match what the handlers really answer.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use kiln_core::{EmbedderOptions, SentenceEmbedder};
use kiln_engine::{EmbeddingEngine, EngineConfig};
use kiln_server::metrics::Metrics;
use kiln_server::{AppState, Limits, ModelFiles, ModelRegistry};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use tower::ServiceExt;

async fn get(router: &axum::Router, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = match body {
        Some(b) => Request::post(uri)
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => Request::get(uri).body(Body::empty()),
    }
    .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The property names a component schema declares, and those it requires.
fn fields(doc: &Value, schema: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let s = &doc["components"]["schemas"][schema];
    let props = s["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {schema}"))
        .keys()
        .cloned()
        .collect();
    let required = s["required"]
        .as_array()
        .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (props, required)
}

/// Every field of `body` is declared by `schema`, and every required one is present.
fn conforms(doc: &Value, schema: &str, body: &Value) {
    let (props, required) = fields(doc, schema);
    let keys: BTreeSet<String> = body
        .as_object()
        .unwrap_or_else(|| panic!("{schema}: not an object: {body}"))
        .keys()
        .cloned()
        .collect();
    assert!(
        keys.is_subset(&props),
        "{schema}: {keys:?} not within {props:?}"
    );
    assert!(
        required.is_subset(&keys),
        "{schema}: {required:?} not within {keys:?}"
    );
}

#[tokio::test]
async fn openapi_describes_every_route_and_matches_real_answers() {
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
    assert!(registry.attach_files("tiny", ModelFiles::embedding_dir(dir.path())));
    let router = kiln_server::router(AppState::new(registry, metrics, Limits::default()));

    let (s, doc) = get(&router, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = BTreeSet::from([
        "/v1/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/embed",
        "/v1/models",
        "/v1/models/{id}/files",
        "/v1/models/{id}/files/{name}",
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
    ]);
    assert_eq!(paths, expected);
    // The served copy names this server's models, by the kind each route serves, and gives a
    // complete request example; the example is answered 200.
    for req in ["EmbeddingsRequest", "TeiEmbedRequest"] {
        let schema = &doc["components"]["schemas"][req];
        assert_eq!(
            schema["properties"]["model"]["enum"],
            json!(["tiny"]),
            "{req}"
        );
        assert_eq!(schema["examples"][0]["model"], "tiny", "{req}");
    }
    for req in ["ChatCompletionRequest", "CompletionRequest"] {
        let model = &doc["components"]["schemas"][req]["properties"]["model"];
        assert!(model["enum"].is_null(), "no chat model is loaded: {model}");
    }
    let example = doc["components"]["schemas"]["EmbeddingsRequest"]["examples"][0].clone();
    let (s, _) = get(&router, "/v1/embeddings", Some(example)).await;
    assert_eq!(s, StatusCode::OK);
    let example = doc["components"]["schemas"]["TeiEmbedRequest"]["examples"][0].clone();
    let (s, _) = get(&router, "/embed", Some(example)).await;
    assert_eq!(s, StatusCode::OK);
    // Validation ranges are described as the server enforces them.
    let temperature =
        &doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["temperature"];
    assert_eq!(
        (
            temperature["minimum"].as_f64(),
            temperature["maximum"].as_f64()
        ),
        (Some(0.0), Some(2.0))
    );
    // Unknown fields are refused by the server, so the description says so.
    assert_eq!(
        doc["components"]["schemas"]["EmbeddingsRequest"]["additionalProperties"],
        false
    );
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());

    // Real answers carry exactly the described fields.
    let (s, body) = get(
        &router,
        "/v1/embeddings",
        Some(json!({"model": "tiny", "input": ["a", "b"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    conforms(&doc, "EmbeddingsResponse", &body);
    conforms(&doc, "EmbeddingObject", &body["data"][0]);
    conforms(&doc, "Usage", &body["usage"]);
    let (_, body) = get(&router, "/v1/models", None).await;
    conforms(&doc, "ModelList", &body);
    conforms(&doc, "ModelCard", &body["data"][0]);
    let (_, body) = get(&router, "/v1/models/tiny/files", None).await;
    conforms(&doc, "ModelFileList", &body);
    conforms(&doc, "ModelFileEntry", &body["data"][0]);
    for path in ["/health", "/health/live", "/health/ready"] {
        let (_, body) = get(&router, path, None).await;
        conforms(&doc, "HealthStatus", &body);
    }
    let (s, body) = get(
        &router,
        "/v1/embeddings",
        Some(json!({"model": "nope", "input": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    conforms(&doc, "ErrorResponse", &body);
    conforms(&doc, "ErrorDetail", &body["error"]);
    // Each described error status is one the route can answer; 404 is among them.
    assert!(doc["paths"]["/v1/embeddings"]["post"]["responses"]["404"].is_object());
}
