//! kiln-engine: the scheduler between the HTTP layer and the models.
//!
//! Callers submit tokenized work and await a channel; a dedicated compute thread per model
//! owns the queue, forms batches under a token budget, skips work whose caller has gone, and
//! answers each caller on its own channel. A full queue is refused at once (backpressure),
//! never grown.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod embedding;
pub mod generation;
pub mod idle;
pub mod observer;
pub mod prefix_cache;
pub mod queue;

pub use embedding::{EmbeddingEngine, EngineConfig, EngineError, PendingEmbeddings};
pub use generation::{
    FinishReason, GenerationConfig, GenerationEngine, GenerationEvent, GenerationRequest,
};
pub use observer::{BatchReport, EngineObserver, NoopObserver};
