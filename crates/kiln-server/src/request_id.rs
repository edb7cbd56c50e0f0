//! Request ids: every request gets one (the client's `x-request-id` when it is a sane token,
//! otherwise a fresh random one), runs inside a `tracing` span carrying it, and has it echoed
//! in the response's `x-request-id` header, so a client's report can be matched to the logs.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument;

/// The header carrying the id.
pub const HEADER: &str = "x-request-id";

/// The id of a request, in its extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Whether a client-sent id is kept: 1 to 128 characters of `[A-Za-z0-9._:-]`.
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// A new id: 64 bits mixed from the clock, a counter and the process id (unique per process
/// and unpredictable enough for correlation; it is not a secret).
fn fresh() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = t ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((std::process::id() as u64) << 40);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("{:016x}", z ^ (z >> 31))
}

/// Middleware: assigns the id, runs the request in a span with it, echoes it.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map_or_else(fresh, str::to_string);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "answered"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sane_and_fresh_ones_differ() {
        assert!(sane("abc-123_x.y:z"));
        assert!(!sane(""));
        assert!(!sane("has space"));
        assert!(!sane("new\nline"));
        assert!(!sane(&"a".repeat(129)));
        let (a, b) = (fresh(), fresh());
        assert_ne!(a, b);
        assert!(sane(&a) && a.len() == 16);
    }
}
