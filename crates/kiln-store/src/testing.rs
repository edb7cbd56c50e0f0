//! Fresh databases for tests, on every backend: a SQLite file in a temporary directory, and a new
//! PostgreSQL database on the server named by `KILN_TEST_POSTGRES_URL` (`.ci/run` starts one).
//!
//! Without that variable, PostgreSQL tests fail when `CI` is set (so that CI cannot pass without
//! running them) and are skipped with a printed message otherwise.

use sqlx::Connection;

/// The variable naming the PostgreSQL server used by tests.
pub const POSTGRES_URL_VAR: &str = "KILN_TEST_POSTGRES_URL";

/// An empty database for one test.
pub struct TestDatabase {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The URL to connect to.
    pub url: String,
    /// Keeps the SQLite file's directory alive.
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A SQLite database file that does not exist yet, in a new temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("kiln.db").display());
        Self {
            backend: "sqlite",
            url,
            _dir: Some(dir),
        }
    }

    /// The SQLite file's path, when this is SQLite.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self.url.strip_prefix("sqlite://").map(Into::into)
    }

    /// A new, empty PostgreSQL database; `None` (with a message) when no server is configured
    /// and `CI` is not set.
    ///
    /// # Panics
    /// When `CI` is set and `KILN_TEST_POSTGRES_URL` is not, or the server cannot be reached.
    pub async fn postgres() -> Option<Self> {
        let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{POSTGRES_URL_VAR} is not set but CI is: the PostgreSQL tests must run in CI \
                     (scripts/test.sh starts a server and sets it when PostgreSQL is installed; .ci/run installs it)"
                );
            }
            eprintln!(
                "SKIPPED: PostgreSQL half of this test ({POSTGRES_URL_VAR} is not set; \
                 `source scripts/postgres-test-server.sh` starts a server and sets it)"
            );
            return None;
        };
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_VAR}: {e}"));
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).expect("random database name");
        let name = format!("kiln_test_{}", hex::encode(name));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        conn.close().await.ok();
        Some(Self {
            backend: "postgres",
            url: replace_database(&base, &name),
            _dir: None,
        })
    }

    /// SQLite, then PostgreSQL when available: the backends every store test runs against.
    pub async fn all() -> Vec<Self> {
        let mut out = vec![Self::sqlite()];
        out.extend(Self::postgres().await);
        out
    }
}

/// `postgres://u:p@h:5432/old?x=y` with `old` replaced by `name`.
fn replace_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[authority_start..]
        .find('/')
        .map_or(head.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &head[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replaces_the_database_name_only() {
        assert_eq!(
            replace_database("postgres://u:p@h:5432/postgres?sslmode=disable", "t"),
            "postgres://u:p@h:5432/t?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://h", "t"), "postgres://h/t");
    }
}
