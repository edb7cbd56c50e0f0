//! What every request handler can reach.

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::registry::ModelRegistry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

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
    /// Set when the shutdown timeout is reached: open streams end with a final error event.
    closing: Arc<watch::Sender<bool>>,
}

impl AppState {
    /// State over loaded models, ready to serve.
    pub fn new(models: ModelRegistry, metrics: Arc<Metrics>, limits: Limits) -> Self {
        Self {
            models: Arc::new(models),
            metrics,
            limits: Arc::new(limits),
            ready: Arc::new(AtomicBool::new(true)),
            closing: Arc::new(watch::channel(false).0),
        }
    }

    /// Whether the server takes new work: models are loaded and no shutdown has begun.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Ends every open stream with a final error event (the shutdown timeout was reached).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`AppState::close_streams`] has been called.
    pub fn streams_closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}
