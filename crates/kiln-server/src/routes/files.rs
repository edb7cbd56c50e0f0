//! `GET /v1/models/{id}/files` and `GET /v1/models/{id}/files/{name}`: a served model's files.

use crate::error::ApiError;
use crate::registry::ServedModel;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

fn served<'a>(state: &'a AppState, id: &str) -> Result<&'a ServedModel, ApiError> {
    state
        .models
        .served(id)
        .ok_or_else(|| ApiError::model_not_found(id, &state.models.names()))
}

/// Lists the files of model `id` that can be downloaded, with their sizes.
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = served(&state, &id)?;
    let data: Vec<Value> = model
        .files
        .iter()
        .map(|f| json!({"name": f.name, "size": f.size}))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "model": id,
        "kind": model.engine.kind(),
        "data": data,
    })))
}

/// The bytes of one listed file of model `id`; any other name is a 404.
pub async fn download(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let model = served(&state, &id)?;
    let file = model.files.get(&name).ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "model `{id}` has no downloadable file `{name}`; see /v1/models/{id}/files"
        ),
        param: None,
        code: "file_not_found",
    })?;
    let path = file.path.clone();
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(|e| ApiError::internal(format!("reading `{name}`: {e}")))?
        .map_err(|e| ApiError::internal(format!("reading `{name}`: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
