//! `GET /openapi.json`: the OpenAPI 3.1 description of every route, generated from the Rust
//! types the handlers use (so it cannot drift from what they accept and answer).

use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::sync::LazyLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiln",
        description = "kiln's HTTP API: OpenAI-compatible embeddings, chat and text completions, text-embeddings-inference's /embed, model files, health and metrics."
    ),
    paths(
        super::embeddings::create,
        super::tei::embed,
        super::chat::chat_completions,
        super::chat::completions,
        super::models::list,
        super::files::list,
        super::files::download,
        super::health::health,
        super::health::live,
        super::health::ready,
        super::health::metrics,
        openapi_json,
    ),
    modifiers(&BearerKeys),
    tags(
        (name = "embeddings", description = "Vectors for texts"),
        (name = "generation", description = "Chat and text completions, streamed or not"),
        (name = "models", description = "What is served"),
        (name = "health", description = "Liveness, readiness, metrics and this description"),
    )
)]
struct ApiDoc;

/// Declares the API-key scheme: `Authorization: Bearer KEY` (keys made by `kiln keys create`).
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The description as JSON, without anything about this server's models.
pub fn description() -> Value {
    // Generated once; each request gets a copy to fill in with this server's models.
    static DOC: LazyLock<Value> = LazyLock::new(|| {
        serde_json::to_value(ApiDoc::openapi()).expect("an OpenAPI document always serializes")
    });
    DOC.clone()
}

/// Serves the description of this server: each request's `model` field lists the loaded models
/// of the kind the route serves (any other name is answered 404 or 400, as described), and each
/// request schema carries a complete example that this server answers.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn openapi_json(State(state): State<AppState>) -> Json<Value> {
    let mut doc = description();
    let names = |kind: &str| -> Vec<Value> {
        state
            .models
            .iter()
            .filter(|m| m.engine.kind() == kind)
            .map(|m| Value::from(m.name()))
            .collect()
    };
    let (embedders, chatters) = (names("embedding"), names("chat"));
    let requests = [
        (
            "EmbeddingsRequest",
            &embedders,
            json!({"input": ["kiln fires models"]}),
        ),
        (
            "TeiEmbedRequest",
            &embedders,
            json!({"inputs": "kiln fires models"}),
        ),
        (
            "ChatCompletionRequest",
            &chatters,
            json!({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}),
        ),
        (
            "CompletionRequest",
            &chatters,
            json!({"prompt": "Once upon a time", "max_tokens": 4}),
        ),
    ];
    for (schema, models, mut example) in requests {
        let Some(first) = models.first() else {
            continue;
        };
        let Some(s) = doc.pointer_mut(&format!("/components/schemas/{schema}")) else {
            continue;
        };
        s["properties"]["model"]["enum"] = Value::Array(models.clone());
        example["model"] = first.clone();
        s["examples"] = json!([example]);
    }
    Json(doc)
}
