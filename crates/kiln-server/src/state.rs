//! What every request handler can reach.

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::registry::ModelRegistry;
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
}
