//! `POST /v1/embeddings` (OpenAI) and the embedding path shared with `/embed`.

use crate::auth::UsageMeter;
use crate::error::{ApiError, ErrorResponse, Refusals};
use crate::json::JsonBody;
use crate::registry::Engine;
use crate::schema::{
    EmbeddingObject, EmbeddingValue, EmbeddingsRequest, EmbeddingsResponse, EncodingFormat, Usage,
};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use kiln_engine::EmbeddingEngine;
use std::sync::Arc;

/// Inputs larger than this (in bytes, all texts together) are tokenized off the async runtime.
const INLINE_TOKENIZE_BYTES: usize = 16 * 1024;

/// Vectors for a request, and the tokens they took.
pub(super) struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

/// Validates, tokenizes and embeds `texts` on `engine`.
pub(super) async fn embed_texts(
    state: &AppState,
    engine: &Arc<EmbeddingEngine>,
    texts: Vec<String>,
    truncate: bool,
    normalize: bool,
) -> Result<Embedded, ApiError> {
    if texts.is_empty() {
        return Err(ApiError::invalid("`input` must not be empty").with_param("input"));
    }
    if texts.len() > state.limits.max_inputs {
        return Err(ApiError::too_large(format!(
            "{} inputs in one request; this server accepts at most {} (see --max-inputs)",
            texts.len(),
            state.limits.max_inputs
        ))
        .with_param("input"));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid(format!("input {i} is empty")).with_param("input"));
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    let tokenize = {
        let engine = engine.clone();
        move || tokenize_all(&engine, &texts, truncate)
    };
    let ids = if bytes <= INLINE_TOKENIZE_BYTES {
        tokenize()?
    } else {
        tokio::task::spawn_blocking(tokenize)
            .await
            .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??
    };
    let tokens = ids.iter().map(Vec::len).sum();
    let vectors = engine.submit(ids, normalize)?.await?;
    Ok(Embedded { vectors, tokens })
}

fn tokenize_all(
    engine: &EmbeddingEngine,
    texts: &[String],
    truncate: bool,
) -> Result<Vec<Vec<u32>>, ApiError> {
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            engine
                .model()
                .tokenize(text, truncate)
                .map(|t| t.ids)
                .map_err(|e| match e {
                    kiln_core::Error::InputTooLong { tokens, max, .. } => {
                        ApiError::input_too_long(format!(
                    "input {index} has {tokens} tokens, more than the model's maximum of {max}; \
                     shorten it or allow truncation"
                ))
                    }
                    other => {
                        ApiError::invalid(format!("input {index}: {other}")).with_param("input")
                    }
                })
        })
        .collect()
}

/// Handles `POST /v1/embeddings`.
#[utoipa::path(post, path = "/v1/embeddings", tag = "embeddings", request_body = EmbeddingsRequest,
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "One embedding per input, in input order", body = EmbeddingsResponse),
        (status = 422, description = "An input is longer than the model accepts and truncation is off", body = ErrorResponse),
        Refusals))]
pub async fn create(
    State(state): State<AppState>,
    meter: UsageMeter,
    JsonBody(req): JsonBody<EmbeddingsRequest>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let engine = match state.models.find(&req.model) {
        Some(Engine::Embedding(e)) => e.clone(),
        Some(other) => {
            return Err(ApiError::wrong_model_kind(
                &req.model,
                other.kind(),
                "/v1/embeddings",
            ))
        }
        None => return Err(ApiError::model_not_found(&req.model, &state.models.names())),
    };
    let dim = engine.model().dimension();
    let keep = match req.dimensions {
        None => dim,
        Some(d) if (1..=dim).contains(&d) => d,
        Some(d) => {
            return Err(ApiError::invalid(format!(
                "`dimensions` is {d}; model `{}` returns 1 to {dim} dimensions",
                req.model
            ))
            .with_param("dimensions"))
        }
    };
    let normalize = engine.model().normalizes();
    let out = embed_texts(
        &state,
        &engine,
        req.input.into_vec(),
        req.truncate.unwrap_or(true),
        normalize,
    )
    .await?;
    meter.add(out.tokens, 0);
    let data = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, mut v)| {
            if keep < v.len() {
                v.truncate(keep);
                if normalize {
                    kiln_core::pooling::l2_normalize(&mut v);
                }
            }
            let embedding = match req.encoding_format {
                EncodingFormat::Float => EmbeddingValue::Float(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            EmbeddingObject {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: engine.name().to_string(),
        usage: Usage {
            prompt_tokens: out.tokens,
            total_tokens: out.tokens,
        },
    }))
}
