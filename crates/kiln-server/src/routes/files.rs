//! `GET /v1/models/{id}/files` and `GET /v1/models/{id}/files/{name}`: a served model's files.

use crate::error::ApiError;
use crate::error::ErrorResponse;
use crate::registry::ServedModel;
use crate::schema::{ModelFileEntry, ModelFileList};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

fn served<'a>(state: &'a AppState, id: &str) -> Result<&'a ServedModel, ApiError> {
    state
        .models
        .served(id)
        .ok_or_else(|| ApiError::model_not_found(id, &state.models.names()))
}

/// Lists the files of model `id` that can be downloaded, with their sizes.
#[utoipa::path(get, path = "/v1/models/{id}/files", tag = "models",
    params(("id" = String, Path, description = "A served model name")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The model's files", body = ModelFileList),
        (status = 401, description = "Missing or wrong API key", body = ErrorResponse),
        (status = 404, description = "No such model", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelFileList>, ApiError> {
    let model = served(&state, &id)?;
    let data = model
        .files
        .iter()
        .map(|f| ModelFileEntry {
            name: f.name.clone(),
            size: f.size,
        })
        .collect();
    Ok(Json(ModelFileList {
        object: "list",
        kind: model.engine.kind(),
        model: id,
        data,
    }))
}

/// The bytes of one listed file of model `id`; any other name is a 404.
#[utoipa::path(get, path = "/v1/models/{id}/files/{name}", tag = "models",
    params(("id" = String, Path, description = "A served model name"),
           ("name" = String, Path, description = "A file name from the model's file list")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "Missing or wrong API key", body = ErrorResponse),
        (status = 404, description = "No such model or file", body = ErrorResponse)))]
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
