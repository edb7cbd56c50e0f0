//! `POST /embed` in text-embeddings-inference's shape.

use super::embeddings::embed_texts;
use crate::auth::UsageMeter;
use crate::error::{ApiError, ErrorResponse, Refusals};
use crate::json::JsonBody;
use crate::schema::TeiEmbedRequest;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;

/// Handles `POST /embed`: returns a JSON array of vectors.
#[utoipa::path(post, path = "/embed", tag = "embeddings", request_body = TeiEmbedRequest,
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "One vector per input", body = Vec<Vec<f32>>),
        (status = 422, description = "An input is longer than the model accepts and truncation is off", body = ErrorResponse),
        Refusals))]
pub async fn embed(
    State(state): State<AppState>,
    meter: UsageMeter,
    JsonBody(req): JsonBody<TeiEmbedRequest>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    let engine = match &req.model {
        Some(name) => state.models.get(name),
        None => state.models.default_model(),
    }
    .ok_or_else(|| {
        ApiError::model_not_found(req.model.as_deref().unwrap_or(""), &state.models.names())
    })?
    .clone();
    let out = embed_texts(
        &state,
        &engine,
        req.inputs.into_vec(),
        req.truncate,
        req.normalize,
    )
    .await?;
    meter.add(out.tokens, 0);
    Ok(Json(out.vectors))
}
