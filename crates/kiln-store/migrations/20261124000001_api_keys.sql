-- API keys and their usage. One migration folder for both backends: only the SQL that SQLite and
-- PostgreSQL read alike (TEXT, BIGINT, composite primary keys, ON CONFLICT upserts); times are
-- unix seconds and days are 'YYYY-MM-DD' text, because sqlx's `Any` driver carries no date types.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    requests_per_minute BIGINT,
    tokens_per_minute BIGINT,
    max_concurrent BIGINT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE api_key_usage (
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    day TEXT NOT NULL,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);
