//! API keys on the HTTP API: who may call, how often, and what they used.
//!
//! [`protect`] wraps a router in the key check ([`middleware`]); per-key limits are kept in
//! memory ([`quota`]); each admitted request carries a [`UsageMeter`] that handlers feed with
//! token counts and that, when the request's response is finished (for streams: when the stream
//! ends), hands its totals to the [`UsageLog`], which writes them to the [`KeyStore`].
//!
//! Auth is enforced once any key exists in the store (checked per request until the first key
//! appears, then latched) or from the start with `require_auth`. `/health`, `/health/*` and
//! `/metrics` stay open, `/metrics` only unless `metrics_require_auth`.

pub mod meter;
pub mod middleware;
pub mod quota;
pub mod usage_log;

pub use meter::UsageMeter;
pub use quota::RateLimiter;
pub use usage_log::UsageLog;

use crate::metrics::Metrics;
use axum::Router;
use kiln_store::{KeyStore, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How auth behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthConfig {
    /// Demand a key even when the store holds none (then every protected request is refused).
    pub require_auth: bool,
    /// Protect `/metrics` too.
    pub metrics_require_auth: bool,
}

/// The key check, limits and usage recording shared by every request; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<AuthInner>,
}

struct AuthInner {
    store: KeyStore,
    config: AuthConfig,
    /// Latched to true once keys exist (or from the start with `require_auth`).
    enforced: AtomicBool,
    limiter: Arc<RateLimiter>,
    usage: UsageLog,
    /// Where refusals are counted, when set.
    metrics: Option<Arc<Metrics>>,
}

impl Auth {
    /// Sets up auth over `store`, counting refusals (401, 429) in `metrics` when given; starts
    /// the usage writer task, so call it inside a Tokio runtime.
    pub async fn new(
        store: KeyStore,
        config: AuthConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, StoreError> {
        let enforced = config.require_auth || store.has_keys().await?;
        Ok(Self {
            inner: Arc::new(AuthInner {
                usage: UsageLog::start(store.clone()),
                store,
                config,
                enforced: AtomicBool::new(enforced),
                limiter: Arc::new(RateLimiter::default()),
                metrics,
            }),
        })
    }

    /// The key store.
    pub fn store(&self) -> &KeyStore {
        &self.inner.store
    }

    /// Whether requests must carry a key, looking the store up again until keys first appear.
    pub async fn is_enforced(&self) -> Result<bool, StoreError> {
        if self.inner.enforced.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let has_keys = self.inner.store.has_keys().await?;
        if has_keys {
            self.inner.enforced.store(true, Ordering::Relaxed);
        }
        Ok(has_keys)
    }

    /// Waits until every usage record of the requests finished so far is in the database. Call
    /// it after the server has stopped (graceful shutdown) so that no usage is lost.
    pub async fn flush(&self) {
        self.inner.usage.flush().await;
    }
}

/// Wraps `router` so that every route but the open ones demands a valid key and keeps to its
/// key's limits.
pub fn protect(router: Router, auth: Auth) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        auth,
        middleware::authenticate,
    ))
}
