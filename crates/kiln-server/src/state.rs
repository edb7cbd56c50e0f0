//! What every request handler can reach.

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::registry::ModelRegistry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared server state.
#[derive(Clone)]
pub struct AppState {
    /// The served models.
    pub models: Arc<ModelRegistry>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Request limits.
    pub limits: Arc<Limits>,
    /// Cleared when the server starts shutting down (`/health/ready` answers 503 then).
    pub ready: Arc<AtomicBool>,
}

impl AppState {
    /// Whether the server takes new work: models are loaded and no shutdown has begun.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
