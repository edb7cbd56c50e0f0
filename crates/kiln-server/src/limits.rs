//! Request limits the server enforces before (and while) work runs.

use std::time::Duration;

/// Limits on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most inputs in one embeddings request (413 beyond).
    pub max_inputs: usize,
    /// Most prompt tokens in one chat or completion request (400 beyond); the model's context
    /// bounds it too.
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` a chat or completion request may ask for (400 beyond); also the
    /// default when a chat request names none.
    pub max_completion_tokens: usize,
    /// How long one request may run: past it the request is cancelled, its compute freed, and
    /// the client gets a 408 (or, mid-stream, a final error event). `None`: no deadline.
    pub request_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_inputs: 512,
            max_prompt_tokens: 32_768,
            max_completion_tokens: 4096,
            request_timeout: Some(Duration::from_secs(600)),
        }
    }
}
