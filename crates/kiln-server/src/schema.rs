//! Request and response bodies of the public API (OpenAI and text-embeddings-inference shapes).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One text or a list of texts (also the shape of `stop` and `prompt`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TextInput {
    /// A single text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
}

impl TextInput {
    /// The texts as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            TextInput::One(s) => vec![s],
            TextInput::Many(v) => v,
        }
    }
}

/// How embeddings are encoded in the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian `f32` bytes.
    Base64,
}

/// `POST /v1/embeddings` request (OpenAI), plus kiln's `truncate` extension.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// The texts to embed.
    pub input: TextInput,
    /// The served model name.
    pub model: String,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Keep only the first `dimensions` values (then re-normalize if the model normalizes).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// An end-user identifier (accepted and ignored).
    #[serde(default)]
    pub user: Option<String>,
    /// Cut inputs longer than the model's maximum (default, as sentence-transformers does); `false` makes them a 422.
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// One embedding of an OpenAI response.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingObject {
    /// Always `"embedding"`.
    pub object: &'static str,
    /// Position of the input in the request.
    pub index: usize,
    /// The vector, as numbers or as a base64 string.
    pub embedding: EmbeddingValue,
}

/// An embedding as numbers or base64.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    /// JSON numbers.
    Float(Vec<f32>),
    /// Base64 of little-endian `f32`s.
    Base64(String),
}

/// Token counts of a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Tokens in the inputs, special tokens included.
    pub prompt_tokens: usize,
    /// Same as `prompt_tokens` for embeddings.
    pub total_tokens: usize,
}

/// `POST /v1/embeddings` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `"list"`.
    pub object: &'static str,
    /// One entry per input, in input order.
    pub data: Vec<EmbeddingObject>,
    /// The model that computed them.
    pub model: String,
    /// Token counts.
    pub usage: Usage,
}

/// `POST /embed` request (text-embeddings-inference).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TeiEmbedRequest {
    /// The texts to embed.
    pub inputs: TextInput,
    /// L2-normalize the vectors (default true).
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Cut inputs longer than the model's maximum (default false: they are a 422).
    #[serde(default)]
    pub truncate: bool,
    /// The served model name; the first model if absent (a kiln extension).
    #[serde(default)]
    pub model: Option<String>,
}

fn yes() -> bool {
    true
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCard {
    /// The served model name.
    pub id: String,
    /// Always `"model"`.
    pub object: &'static str,
    /// Unix time the model was loaded.
    pub created: u64,
    /// Always `"kiln"`.
    pub owned_by: &'static str,
}

/// `GET /v1/models` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: &'static str,
    /// The loaded models.
    pub data: Vec<ModelCard>,
}

/// `GET /health`, `/health/live` and `/health/ready` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok`, `live`, `ready` or `shutting down`.
    pub status: &'static str,
    /// The loaded models (`GET /health` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// One downloadable file of a served model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelFileEntry {
    /// The file name, as used in `/v1/models/{id}/files/{name}`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// `GET /v1/models/{id}/files` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelFileList {
    /// Always `"list"`.
    pub object: &'static str,
    /// The served model name.
    pub model: String,
    /// `embedding` or `chat`.
    pub kind: &'static str,
    /// The files.
    pub data: Vec<ModelFileEntry>,
}
