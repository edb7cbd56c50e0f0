//! Request limits the server enforces before any work is queued.

/// Limits on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most inputs in one embeddings request (413 beyond).
    pub max_inputs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_inputs: 512,
        }
    }
}
