//! Hooks through which the engine reports what it does (the server turns them into metrics).

use std::time::Duration;

/// What one executed batch looked like.
#[derive(Debug, Clone, Copy)]
pub struct BatchReport {
    /// Requests in the batch.
    pub requests: usize,
    /// Sequences (inputs) in the batch.
    pub sequences: usize,
    /// Tokens in the batch.
    pub tokens: usize,
    /// Time spent in the model.
    pub compute: Duration,
}

/// Receives engine events; implementations must be cheap and must not block.
pub trait EngineObserver: Send + Sync + 'static {
    /// A batch finished computing.
    fn batch_done(&self, _model: &str, _report: BatchReport) {}
    /// A queued request was dropped because its caller went away before it ran.
    fn request_cancelled(&self, _model: &str) {}
    /// The number of queued requests changed.
    fn queue_depth(&self, _model: &str, _depth: usize) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl EngineObserver for NoopObserver {}
