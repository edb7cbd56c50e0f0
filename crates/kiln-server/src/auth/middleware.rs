//! The axum middleware that checks the API key and the key's limits.

use super::{Auth, UsageMeter};
use crate::error::{ApiError, ErrorCode};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kiln_store::ApiKeySecret;
use std::time::Instant;

/// Routes that answer without a key: probes, the playground's static page and the code of its
/// in-browser mode (they hold no data; its API calls, model files included, need a key like
/// any other) and (unless configured) metrics.
fn is_open(path: &str, metrics_require_auth: bool) -> bool {
    path == "/health"
        || path.starts_with("/health/")
        || matches!(
            path,
            "/" | "/playground.js"
                | "/playground.css"
                | "/playground-worker.js"
                | "/wasm/kiln_wasm.js"
                | "/wasm/kiln_wasm_bg.wasm"
        )
        || (path == "/metrics" && !metrics_require_auth)
}

/// The key from `Authorization: Bearer KEY` or `x-api-key: KEY`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, key) = v.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn unauthorized(message: &str) -> Response {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_string(),
        param: None,
        code: "invalid_api_key",
    }
    .into_response()
}

fn store_failure(e: kiln_store::StoreError) -> Response {
    tracing::error!(error = %e, "key store unavailable");
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the API key database is unavailable; retry later".to_string(),
        param: None,
        code: "auth_unavailable",
    }
    .into_response()
}

/// Checks the request's key and limits, then runs the route with a [`UsageMeter`] in its
/// extensions. 401 for a missing, unknown or revoked key; 429 with `Retry-After` over a limit.
/// Refusals are counted in the request metrics like any other answer.
pub async fn authenticate(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    match admit(&auth, req.uri().path(), req.headers()).await {
        Ok(None) => next.run(req).await,
        Ok(Some(meter)) => {
            req.extensions_mut().insert(meter);
            next.run(req).await
        }
        Err(refusal) => {
            if let Some(metrics) = &auth.inner.metrics {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", MatchedPath::as_str);
                metrics.observe_request(
                    route,
                    refusal.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                );
                if let Some(ErrorCode(code)) = refusal.extensions().get::<ErrorCode>() {
                    metrics.observe_refusal(route, code);
                }
            }
            refusal
        }
    }
}

/// The request's meter when it is admitted with a key, `None` when it needs none, or the
/// refusal to answer.
async fn admit(
    auth: &Auth,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<UsageMeter>, Response> {
    if is_open(path, auth.inner.config.metrics_require_auth) {
        return Ok(None);
    }
    if !auth.is_enforced().await.map_err(store_failure)? {
        return Ok(None);
    }
    let Some(key) = presented_key(headers) else {
        return Err(unauthorized(
            "missing API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY` \
             (keys are made with `kiln keys create`)",
        ));
    };
    let record = auth
        .store()
        .verify(&ApiKeySecret::from_presented(key))
        .await
        .map_err(store_failure)?
        .ok_or_else(|| unauthorized("invalid API key: it is unknown, mistyped or revoked"))?;
    let admission = auth
        .inner
        .limiter
        .admit(&record, Instant::now())
        .map_err(|refusal| {
            let mut resp = ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "API key `{}` reached its limit of {} {}; retry in {} s",
                    record.id, refusal.value, refusal.limit, refusal.retry_after_secs
                ),
                param: None,
                code: "rate_limit_exceeded",
            }
            .into_response();
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(refusal.retry_after_secs),
            );
            resp
        })?;
    Ok(Some(UsageMeter::new(
        record.id,
        auth.inner.limiter.clone(),
        auth.inner.usage.clone(),
        admission.permit,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  k2 "),
        );
        assert_eq!(presented_key(&h), Some("k2"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), None);
    }

    #[test]
    fn only_probes_and_metrics_are_open() {
        assert!(is_open("/health", false));
        assert!(is_open("/health/ready", false));
        assert!(is_open("/metrics", false));
        assert!(!is_open("/metrics", true));
        assert!(!is_open("/healthz", false));
        assert!(is_open("/", false) && is_open("/playground.js", false));
        assert!(is_open("/wasm/kiln_wasm_bg.wasm", false));
        assert!(!is_open("/wasm/other", false));
        assert!(!is_open("/v1/models/m/files", false));
        assert!(!is_open("/v1/embeddings", false));
    }
}
