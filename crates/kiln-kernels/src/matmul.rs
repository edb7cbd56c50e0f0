//! Matrix multiply.

/// Placeholder.
pub fn noop() {}
