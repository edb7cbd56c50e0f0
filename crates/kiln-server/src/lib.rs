//! kiln-server: the HTTP layer.
//!
//! OpenAI-compatible (`/v1/embeddings`, `/v1/chat/completions`, `/v1/completions`, `/v1/models`) and text-embeddings-inference-compatible
//! (`/embed`) routes over the engines of [`kiln_engine`], with request validation, errors in
//! OpenAI's shape, and Prometheus metrics. No model computation happens on the async runtime.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod model_files;
pub mod registry;
pub mod request_id;
pub mod routes;
pub mod schema;
pub mod schema_chat;
pub mod state;

pub use limits::Limits;
pub use model_files::ModelFiles;
pub use registry::ModelRegistry;
pub use routes::{router, router_with, RouterOptions};
pub use state::AppState;
