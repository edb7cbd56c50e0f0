//! API keys in `kiln serve`: opening the key database and wrapping the router.

use crate::args_keys::AuthArgs;
use anyhow::{Context, Result};
use kiln_server::auth::{self, Auth, AuthConfig};
use kiln_server::metrics::Metrics;
use kiln_store::{KeyStore, DEFAULT_DATABASE_URL};
use std::sync::Arc;

/// Opens the key database and sets up auth, or returns `None` when there can be no keys: no
/// `--database-url`, no `--require-auth`, and no default database file. Refusals are counted in
/// `metrics`. Call inside the runtime.
pub async fn open(args: &AuthArgs, metrics: Arc<Metrics>) -> Result<Option<Auth>> {
    let default_file = DEFAULT_DATABASE_URL.trim_start_matches("sqlite://");
    let url = match &args.database_url {
        Some(url) => url.as_str(),
        None if args.require_auth || std::path::Path::new(default_file).exists() => {
            DEFAULT_DATABASE_URL
        }
        None => {
            tracing::info!(
                "API keys off: no key database ({default_file}); `kiln keys create` makes one"
            );
            return Ok(None);
        }
    };
    let store = KeyStore::connect(url)
        .await
        .context("opening the key database")?;
    let config = AuthConfig {
        require_auth: args.require_auth,
        metrics_require_auth: args.metrics_require_auth,
    };
    let auth = Auth::new(store, config, Some(metrics)).await?;
    let enforced = auth.is_enforced().await?;
    tracing::info!(
        enforced,
        "API keys: {}",
        if enforced {
            "required"
        } else {
            "not required until a key is created"
        }
    );
    Ok(Some(auth))
}

/// `router` behind the key check when auth is set up.
pub fn wrap(router: axum::Router, auth: Option<&Auth>) -> axum::Router {
    match auth {
        Some(a) => auth::protect(router, a.clone()),
        None => router,
    }
}

/// Writes every pending usage record; call after the server has stopped.
pub async fn flush(auth: Option<&Auth>) {
    if let Some(a) = auth {
        a.flush().await;
    }
}
