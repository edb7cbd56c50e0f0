//! kiln-store: kiln's database.
//!
//! API keys (only their SHA-256 hash is stored), each key's optional limits (requests and tokens
//! per minute, concurrent requests), and usage per key per day. One [`KeyStore`] speaks to an
//! embedded SQLite file (the default, created on first use) or to PostgreSQL, through sqlx's
//! `Any` driver with runtime queries; the same migrations (`migrations/`) are applied on connect.
//! This crate knows nothing of HTTP or models; the server and the CLI both use it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod secret;
pub mod store;
pub mod testing;
pub mod usage;

pub use error::StoreError;
pub use secret::{ApiKeySecret, KeyId};
pub use store::{KeyLimits, KeyRecord, KeyStore, NewKey, DEFAULT_DATABASE_URL};
pub use usage::{utc_day, UsageDelta, UsageRow};
