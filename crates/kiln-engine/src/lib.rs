//! kiln-engine.
