//! [`KeyStore`]: API keys and usage in SQLite or PostgreSQL.

use crate::secret::ApiKeySecret;
use crate::usage::{unix_now, UsageDelta, UsageRow};
use crate::StoreError;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

/// Where kiln keeps its database when no `--database-url` is given: `kiln.db` in the working
/// directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://kiln.db";

/// The optional limits of one key; `None` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeyLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Prompt plus completion tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u64>,
}

/// A key as stored: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    /// Public id.
    pub id: String,
    /// Name given at creation.
    pub name: String,
    /// Limits.
    pub limits: KeyLimits,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Revocation time, unix seconds; revoked keys never verify.
    pub revoked_at: Option<i64>,
}

/// A freshly created key: its record and the secret, which is shown once and never stored.
#[derive(Debug)]
pub struct NewKey {
    /// The stored record.
    pub record: KeyRecord,
    /// The key to hand to the client.
    pub secret: ApiKeySecret,
}

/// The database of keys and usage; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct KeyStore {
    pool: AnyPool,
}

const KEY_COLUMNS: &str =
    "id, name, requests_per_minute, tokens_per_minute, max_concurrent, created_at, revoked_at";

fn opt_limit(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

fn key_from_row(row: &AnyRow) -> Result<KeyRecord, sqlx::Error> {
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        limits: KeyLimits {
            requests_per_minute: opt_limit(row.try_get("requests_per_minute")?),
            tokens_per_minute: opt_limit(row.try_get("tokens_per_minute")?),
            max_concurrent: opt_limit(row.try_get("max_concurrent")?),
        },
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn check_limit(name: &'static str, v: Option<u64>) -> Result<Option<i64>, StoreError> {
    match v {
        Some(0) => Err(StoreError::InvalidLimit { name }),
        other => Ok(other.map(to_db)),
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Asks SQLite to create the file when missing (`mode=rwc`) unless the URL sets a mode.
fn with_sqlite_create(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

impl KeyStore {
    /// Opens the database at `url` (`sqlite://PATH`, `postgres://...`), creating a SQLite file
    /// when it does not exist, and applies the migrations it has not seen yet.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let mut options = AnyPoolOptions::new().max_connections(4);
        let url = if url.starts_with("sqlite:") {
            // WAL lets key checks read while usage is written, and synchronous=NORMAL syncs at
            // checkpoints instead of on every commit (a crash may lose the last usage
            // writes, never corrupt the file); without them every usage write stalls reads.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
                        .await
                        .map(|_| ())
                })
            });
            with_sqlite_create(url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_string()
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        let pool = options
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(&url),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Creates a key named `name` with `limits`; the returned secret is not stored anywhere.
    pub async fn create_key(&self, name: &str, limits: KeyLimits) -> Result<NewKey, StoreError> {
        if name.trim().is_empty() {
            return Err(StoreError::EmptyName);
        }
        let rpm = check_limit("requests per minute", limits.requests_per_minute)?;
        let tpm = check_limit("tokens per minute", limits.tokens_per_minute)?;
        let conc = check_limit("concurrent requests", limits.max_concurrent)?;
        let secret = ApiKeySecret::generate()?;
        let id = secret
            .id()
            .expect("generated keys are well formed")
            .to_string();
        let created_at = unix_now();
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, requests_per_minute, tokens_per_minute, max_concurrent, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(&id)
        .bind(name)
        .bind(secret.hash())
        .bind(rpm)
        .bind(tpm)
        .bind(conc)
        .bind(created_at)
        .execute(&self.pool)
        .await?;
        Ok(NewKey {
            record: KeyRecord {
                id,
                name: name.to_string(),
                limits,
                created_at,
                revoked_at: None,
            },
            secret,
        })
    }

    /// Every key, oldest first, revoked ones included.
    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
    }

    /// Revokes the key `id`; revoking twice keeps the first revocation time.
    pub async fn revoke_key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(unix_now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.find_key(id)
            .await?
            .ok_or_else(|| StoreError::UnknownKey(id.to_string()))
    }

    async fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(key_from_row).transpose()?)
    }

    /// The key record for a presented key, if the key exists, matches and is not revoked.
    pub async fn verify(&self, presented: &ApiKeySecret) -> Result<Option<KeyRecord>, StoreError> {
        let Some(id) = presented.id() else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, key_hash FROM api_keys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored_hash: String = row.try_get("key_hash")?;
        let record = key_from_row(&row)?;
        Ok((presented.matches(&stored_hash) && record.revoked_at.is_none()).then_some(record))
    }

    /// Whether any key was ever created (revoked ones count: revoking every key must not
    /// silently open the server).
    pub async fn has_keys(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n > 0)
    }

    /// Adds `delta` to the usage of key `key_id` on `day` (`YYYY-MM-DD`), in one statement.
    pub async fn record_usage(
        &self,
        key_id: &str,
        day: &str,
        delta: UsageDelta,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_key_usage (key_id, day, requests, prompt_tokens, completion_tokens) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key_id, day) DO UPDATE SET \
             requests = api_key_usage.requests + excluded.requests, \
             prompt_tokens = api_key_usage.prompt_tokens + excluded.prompt_tokens, \
             completion_tokens = api_key_usage.completion_tokens + excluded.completion_tokens",
        )
        .bind(key_id)
        .bind(day)
        .bind(to_db(delta.requests))
        .bind(to_db(delta.prompt_tokens))
        .bind(to_db(delta.completion_tokens))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Usage rows, by day then key; only key `key_id`'s when given.
    pub async fn usage(&self, key_id: Option<&str>) -> Result<Vec<UsageRow>, StoreError> {
        let sql =
            "SELECT u.key_id AS key_id, k.name AS name, u.day AS day, u.requests AS requests, \
                   u.prompt_tokens AS prompt_tokens, u.completion_tokens AS completion_tokens \
                   FROM api_key_usage u JOIN api_keys k ON k.id = u.key_id";
        let rows = match key_id {
            Some(id) => {
                sqlx::query(&format!(
                    "{sql} WHERE u.key_id = $1 ORDER BY u.day, u.key_id"
                ))
                .bind(id)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("{sql} ORDER BY u.day, u.key_id"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let count = |row: &AnyRow, col: &str| -> Result<u64, sqlx::Error> {
            Ok(u64::try_from(row.try_get::<i64, _>(col)?).unwrap_or(0))
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(UsageRow {
                key_id: row.try_get("key_id")?,
                name: row.try_get("name")?,
                day: row.try_get("day")?,
                requests: count(row, "requests")?,
                prompt_tokens: count(row, "prompt_tokens")?,
                completion_tokens: count(row, "completion_tokens")?,
            });
        }
        Ok(out)
    }

    /// The stored hash of key `id`, for tests that check what the database holds.
    pub async fn stored_hash(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT key_hash FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("key_hash")).transpose()?)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
