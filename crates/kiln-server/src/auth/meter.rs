//! [`UsageMeter`]: the tokens one request used, recorded when the request is finished.

use super::quota::RateLimiter;
use super::usage_log::UsageLog;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use kiln_store::UsageDelta;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;

/// Counts one request's tokens for its API key. Handlers take it as an extractor and call
/// [`UsageMeter::add`]; a stream keeps a clone until it ends. When the last clone is dropped
/// the request is finished: its tokens count toward the key's per-minute budget and its usage
/// row is written. Without auth it is a no-op.
#[derive(Clone, Default)]
pub struct UsageMeter(Option<Arc<MeterInner>>);

struct MeterInner {
    key_id: String,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    limiter: Arc<RateLimiter>,
    log: UsageLog,
    /// Holds the key's concurrency slot until the request is finished.
    _permit: Option<OwnedSemaphorePermit>,
}

impl UsageMeter {
    /// A meter for one admitted request of key `key_id`.
    pub(crate) fn new(
        key_id: String,
        limiter: Arc<RateLimiter>,
        log: UsageLog,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self(Some(Arc::new(MeterInner {
            key_id,
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            limiter,
            log,
            _permit: permit,
        })))
    }

    /// Adds tokens the request used.
    pub fn add(&self, prompt_tokens: usize, completion_tokens: usize) {
        if let Some(m) = &self.0 {
            m.prompt_tokens
                .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
            m.completion_tokens
                .fetch_add(completion_tokens as u64, Ordering::Relaxed);
        }
    }
}

impl Drop for MeterInner {
    fn drop(&mut self) {
        let delta = UsageDelta {
            requests: 1,
            prompt_tokens: *self.prompt_tokens.get_mut(),
            completion_tokens: *self.completion_tokens.get_mut(),
        };
        self.limiter.add_tokens(
            &self.key_id,
            delta.prompt_tokens + delta.completion_tokens,
            Instant::now(),
        );
        self.log.record(std::mem::take(&mut self.key_id), delta);
    }
}

impl<S: Send + Sync> FromRequestParts<S> for UsageMeter {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(parts.extensions.get::<Self>().cloned().unwrap_or_default())
    }
}
