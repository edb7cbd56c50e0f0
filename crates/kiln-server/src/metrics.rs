//! Prometheus metrics: HTTP requests by route and status, latency, queue depth, batches.

use kiln_engine::{BatchReport, EngineObserver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

/// Labels of HTTP request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route, e.g. `/v1/embeddings`.
    pub route: String,
    /// The HTTP status code.
    pub status: u16,
}

/// Labels of refused requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The matched route.
    pub route: String,
    /// Why: the error `code` answered (`overloaded`, `rate_limited`, `invalid_api_key`,
    /// `request_too_large`, `deadline_exceeded`, `invalid_request`, ...).
    pub reason: String,
}

/// Labels of per-route latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route.
    pub route: String,
}

/// Labels of per-model metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The served model name.
    pub model: String,
}

/// A chat model's state at one moment, for the gauges.
#[derive(Debug, Clone, Copy)]
pub struct GenerationSnapshot {
    /// Sequences prefilling or decoding.
    pub running: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Prompt tokens reused from the prefix cache since the start.
    pub reused_total: u64,
    /// KV-cache positions reserved by running sequences.
    pub kv_reserved: usize,
    /// KV-cache positions that may be reserved in all.
    pub kv_capacity: usize,
    /// KV-cache positions kept by the prefix cache.
    pub prefix_cached: usize,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// All metrics of one server process.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<RouteLabels>,
    queue_depth: Family<ModelLabels, Gauge>,
    batch_sequences: HistogramFamily<ModelLabels>,
    batch_tokens: HistogramFamily<ModelLabels>,
    batch_seconds: HistogramFamily<ModelLabels>,
    cancelled: Family<ModelLabels, Counter>,
    embedded_tokens: Family<ModelLabels, Counter>,
    first_token_seconds: HistogramFamily<ModelLabels>,
    generated_tokens: Family<ModelLabels, Counter>,
    running_sequences: Family<ModelLabels, Gauge>,
    prefix_reused_tokens: Family<ModelLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    kv_reserved: Family<ModelLabels, Gauge>,
    kv_capacity: Family<ModelLabels, Gauge>,
    prefix_cached: Family<ModelLabels, Gauge>,
}

fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn size_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("kiln");
        let m = Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_buckets),
            queue_depth: Family::default(),
            batch_sequences: Family::new_with_constructor(size_buckets),
            batch_tokens: Family::new_with_constructor(size_buckets),
            batch_seconds: Family::new_with_constructor(latency_buckets),
            cancelled: Family::default(),
            embedded_tokens: Family::default(),
            first_token_seconds: Family::new_with_constructor(latency_buckets),
            generated_tokens: Family::default(),
            running_sequences: Family::default(),
            prefix_reused_tokens: Family::default(),
            refused: Family::default(),
            kv_reserved: Family::default(),
            kv_capacity: Family::default(),
            prefix_cached: Family::default(),
            registry: Mutex::new(Registry::default()),
        };
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.request_seconds.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting for compute",
            m.queue_depth.clone(),
        );
        r.register(
            "batch_sequences",
            "Inputs per executed batch",
            m.batch_sequences.clone(),
        );
        r.register(
            "batch_tokens",
            "Tokens per executed batch",
            m.batch_tokens.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "Model compute time per batch",
            m.batch_seconds.clone(),
        );
        r.register(
            "cancelled_requests",
            "Queued requests dropped because the client went away",
            m.cancelled.clone(),
        );
        r.register(
            "embedded_tokens",
            "Tokens embedded",
            m.embedded_tokens.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "Time from accepting a generation request to its first text",
            m.first_token_seconds.clone(),
        );
        r.register(
            "generated_tokens",
            "Tokens generated by chat models (a rate of it is tokens/s)",
            m.generated_tokens.clone(),
        );
        r.register(
            "running_sequences",
            "Sequences a chat model is prefilling or decoding",
            m.running_sequences.clone(),
        );
        r.register(
            "prefix_cache_reused_tokens",
            "Prompt tokens taken from the prefix cache instead of being prefilled",
            m.prefix_reused_tokens.clone(),
        );
        r.register(
            "refused_requests",
            "Requests answered with an error, by route and reason (the error code)",
            m.refused.clone(),
        );
        r.register(
            "kv_cache_reserved_tokens",
            "KV-cache positions reserved by a chat model's running sequences",
            m.kv_reserved.clone(),
        );
        r.register(
            "kv_cache_capacity_tokens",
            "KV-cache positions a chat model may reserve in all (--max-kv-tokens)",
            m.kv_capacity.clone(),
        );
        r.register(
            "prefix_cache_tokens",
            "KV-cache positions a chat model keeps from finished sequences for prompt-prefix reuse",
            m.prefix_cached.clone(),
        );
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = r;
        m
    }

    /// Records one finished HTTP request.
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Counts a request answered with an error, by its error code.
    pub fn observe_refusal(&self, route: &str, reason: &str) {
        self.refused
            .get_or_create(&RefusalLabels {
                route: route.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records the time from submission to the first text of a generation.
    pub fn observe_first_token(&self, model_name: &str, seconds: f64) {
        self.first_token_seconds
            .get_or_create(&model(model_name))
            .observe(seconds);
    }

    /// Counts tokens generated by a chat model.
    pub fn observe_generated(&self, model_name: &str, tokens: u64) {
        self.generated_tokens
            .get_or_create(&model(model_name))
            .inc_by(tokens);
    }

    /// Publishes a chat model's current state.
    pub fn observe_generation_engine(&self, model_name: &str, s: &GenerationSnapshot) {
        let l = model(model_name);
        self.running_sequences
            .get_or_create(&l)
            .set(s.running as i64);
        self.queue_depth.get_or_create(&l).set(s.queued as i64);
        let c = self.prefix_reused_tokens.get_or_create(&l);
        c.inc_by(s.reused_total.saturating_sub(c.get()));
        self.kv_reserved.get_or_create(&l).set(s.kv_reserved as i64);
        self.kv_capacity.get_or_create(&l).set(s.kv_capacity as i64);
        self.prefix_cached
            .get_or_create(&l)
            .set(s.prefix_cached as i64);
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn model(name: &str) -> ModelLabels {
    ModelLabels {
        model: name.to_string(),
    }
}

impl EngineObserver for Metrics {
    fn batch_done(&self, name: &str, r: BatchReport) {
        let l = model(name);
        self.batch_sequences
            .get_or_create(&l)
            .observe(r.sequences as f64);
        self.batch_tokens.get_or_create(&l).observe(r.tokens as f64);
        self.batch_seconds
            .get_or_create(&l)
            .observe(r.compute.as_secs_f64());
        self.embedded_tokens
            .get_or_create(&l)
            .inc_by(r.tokens as u64);
    }

    fn request_cancelled(&self, name: &str) {
        self.cancelled.get_or_create(&model(name)).inc();
    }

    fn queue_depth(&self, name: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&model(name))
            .set(depth as i64);
    }
}
