//! `GET /v1/models`.

use crate::schema::{ModelCard, ModelList};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;

/// Lists every served model.
#[utoipa::path(get, path = "/v1/models", tag = "models", security((), ("api_key" = [])), responses(
    (status = 200, description = "The loaded models", body = ModelList),
    (status = 401, description = "Missing or wrong API key", body = crate::error::ErrorResponse)))]
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: state
            .models
            .iter()
            .map(|m| ModelCard {
                id: m.name().to_string(),
                object: "model",
                created: m.created,
                owned_by: "kiln",
            })
            .collect(),
    })
}
