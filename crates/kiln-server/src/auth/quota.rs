//! Per-key limits kept in memory: requests and tokens per minute, and requests in flight.
//!
//! Each key has a fixed one-minute window that starts with its first request; counts reset when
//! the window ends. Tokens are added when a request finishes (its `usage`), so the tokens-per-minute
//! check refuses a request when the key has already used its budget in the current window; one
//! request may overshoot it. The counts live in this process only: several kiln processes behind
//! a load balancer each allow the full limit.

use kiln_store::KeyRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Length of a rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Why a request was refused, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that was reached, in words.
    pub limit: &'static str,
    /// The limit's value.
    pub value: u64,
    /// Whole seconds until a retry can succeed.
    pub retry_after_secs: u64,
}

/// What an admitted request holds until it finishes.
#[derive(Debug, Default)]
pub struct Admission {
    /// The key's concurrency slot, when it has a concurrency limit.
    pub permit: Option<OwnedSemaphorePermit>,
}

struct KeyWindow {
    started: Instant,
    requests: u64,
    tokens: u64,
    in_flight: Option<Arc<Semaphore>>,
}

/// The in-memory limits of every key.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, KeyWindow>>,
}

impl RateLimiter {
    /// Admits one request of `key` at `now`, or says which limit it hit.
    pub fn admit(&self, key: &KeyRecord, now: Instant) -> Result<Admission, Refusal> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.entry(key.id.clone()).or_insert_with(|| KeyWindow {
            started: now,
            requests: 0,
            tokens: 0,
            in_flight: None,
        });
        if now.duration_since(w.started) >= WINDOW {
            w.started = now;
            w.requests = 0;
            w.tokens = 0;
        }
        let left = WINDOW.saturating_sub(now.duration_since(w.started));
        let retry_after_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let limits = key.limits;
        if let Some(rpm) = limits.requests_per_minute.filter(|&r| w.requests >= r) {
            return Err(Refusal {
                limit: "requests per minute",
                value: rpm,
                retry_after_secs,
            });
        }
        if let Some(tpm) = limits.tokens_per_minute.filter(|&t| w.tokens >= t) {
            return Err(Refusal {
                limit: "tokens per minute",
                value: tpm,
                retry_after_secs,
            });
        }
        let permit = match limits.max_concurrent {
            Some(max) => {
                let sem = w.in_flight.get_or_insert_with(|| {
                    Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX)))
                });
                Some(sem.clone().try_acquire_owned().map_err(|_| Refusal {
                    limit: "concurrent requests",
                    value: max,
                    retry_after_secs: 1,
                })?)
            }
            None => None,
        };
        w.requests += 1;
        Ok(Admission { permit })
    }

    /// Counts `tokens` used by a finished request of key `key_id` at `now`.
    pub fn add_tokens(&self, key_id: &str, tokens: u64, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = windows.get_mut(key_id) {
            if now.duration_since(w.started) >= WINDOW {
                w.started = now;
                w.requests = 0;
                w.tokens = 0;
            }
            w.tokens = w.tokens.saturating_add(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_store::KeyLimits;

    fn key(limits: KeyLimits) -> KeyRecord {
        KeyRecord {
            id: "0123456789ab".into(),
            name: "t".into(),
            limits,
            created_at: 0,
            revoked_at: None,
        }
    }

    #[test]
    fn requests_per_minute_refuse_until_the_window_ends() {
        let l = RateLimiter::default();
        let k = key(KeyLimits {
            requests_per_minute: Some(2),
            ..KeyLimits::default()
        });
        let t0 = Instant::now();
        l.admit(&k, t0).unwrap();
        l.admit(&k, t0 + Duration::from_secs(10)).unwrap();
        let r = l.admit(&k, t0 + Duration::from_millis(20_500)).unwrap_err();
        assert_eq!(r.limit, "requests per minute");
        assert_eq!(r.retry_after_secs, 40);
        l.admit(&k, t0 + WINDOW).unwrap();
    }

    #[test]
    fn tokens_per_minute_refuse_once_the_budget_is_used() {
        let l = RateLimiter::default();
        let k = key(KeyLimits {
            tokens_per_minute: Some(100),
            ..KeyLimits::default()
        });
        let t0 = Instant::now();
        l.admit(&k, t0).unwrap();
        l.add_tokens(&k.id, 60, t0);
        l.admit(&k, t0).unwrap();
        l.add_tokens(&k.id, 60, t0);
        assert_eq!(l.admit(&k, t0).unwrap_err().limit, "tokens per minute");
        l.admit(&k, t0 + WINDOW).unwrap();
    }

    #[test]
    fn concurrency_slots_free_when_the_admission_drops() {
        let l = RateLimiter::default();
        let k = key(KeyLimits {
            max_concurrent: Some(1),
            ..KeyLimits::default()
        });
        let t0 = Instant::now();
        let first = l.admit(&k, t0).unwrap();
        assert_eq!(l.admit(&k, t0).unwrap_err().limit, "concurrent requests");
        drop(first);
        l.admit(&k, t0).unwrap();
    }
}
