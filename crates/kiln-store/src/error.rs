//! Errors of the key store.

/// What went wrong talking to the database or reading a key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names no supported backend.
    #[error(
        "unsupported database URL `{0}`: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB"
    )]
    UnsupportedUrl(String),
    /// Connecting to the database failed.
    #[error("cannot open database `{url}`: {source}")]
    Connect {
        /// The URL, with any password removed.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// No key has this id.
    #[error("no API key has the id `{0}`")]
    UnknownKey(String),
    /// A key was given an empty name.
    #[error("a key needs a non-empty name (say who or what it is for)")]
    EmptyName,
    /// A limit was zero or negative.
    #[error("{name} must be at least 1 (leave it out for no limit)")]
    InvalidLimit {
        /// Which limit.
        name: &'static str,
    },
    /// The operating system's random number generator failed.
    #[error("cannot draw random bytes for a key: {0}")]
    Random(String),
}
