//! kiln-core: model files, tokenization, model architectures and pooling.
//!
//! Pure computation: no threads of its own, no async, no HTTP. Everything here must also
//! build for `wasm32-unknown-unknown`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chat_model;
pub mod chat_template;
pub mod embedder;
pub mod error;
pub mod gguf_tokenizer;
pub mod models;
pub mod pooling;
pub mod sampling;
pub mod spm_tokenizer;
pub mod st_layout;
pub mod testing;
pub mod text_stream;
pub mod tokenize;
pub mod weights;

pub use chat_model::ChatModel;
pub use embedder::{EmbedderOptions, SentenceEmbedder};
pub use error::{Error, Result};
pub use pooling::PoolingMode;
