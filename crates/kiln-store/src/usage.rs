//! Usage records: requests and tokens per key per UTC day.

use serde::Serialize;

/// What one or more finished requests add to a key's usage for a day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageDelta {
    /// Requests answered.
    pub requests: u64,
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (generated) tokens.
    pub completion_tokens: u64,
}

/// One row of `kiln keys usage`: a key's totals for one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// The key's public id.
    pub key_id: String,
    /// The key's name.
    pub name: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Requests answered.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// Today's UTC day as `YYYY-MM-DD`.
pub fn utc_day() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
