//! Arguments of `kiln keys` and of API-key auth in `kiln serve`.

use clap::{Args, Subcommand};

/// Where the key database is: shared by `kiln keys` and `kiln serve`.
const DATABASE_URL_HELP: &str = "Key database: sqlite://PATH (created on first use) or \
postgres://USER:PASSWORD@HOST/DB [default: sqlite://kiln.db, in the working directory]";

/// API-key options of `kiln serve`.
#[derive(Args, Clone)]
pub struct AuthArgs {
    /// The key database's URL.
    #[arg(long, env = "KILN_DATABASE_URL", help = DATABASE_URL_HELP)]
    pub database_url: Option<String>,
    /// Demand an API key even when no key exists yet (auth is on anyway once a key exists).
    #[arg(long)]
    pub require_auth: bool,
    /// Demand an API key for /metrics too (it is open by default, like /health).
    #[arg(long)]
    pub metrics_require_auth: bool,
}

/// `kiln keys`.
#[derive(Args)]
pub struct KeysArgs {
    /// The key database's URL.
    #[arg(long, env = "KILN_DATABASE_URL", global = true, help = DATABASE_URL_HELP)]
    pub database_url: Option<String>,
    /// What to do with keys.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// `kiln keys` subcommands.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        /// A name for whom or what the key is for.
        #[arg(long)]
        name: String,
        /// Requests per minute allowed (no limit when left out).
        #[arg(long)]
        rpm: Option<u64>,
        /// Prompt plus completion tokens per minute allowed (no limit when left out).
        #[arg(long)]
        tpm: Option<u64>,
        /// Requests in flight at once allowed (no limit when left out).
        #[arg(long)]
        max_concurrent: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the keys (ids, names, limits, revocation), never the secrets.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke the key with this id; requests with it get 401 from then on.
    Revoke {
        /// The key's id, as `kiln keys list` shows it.
        id: String,
    },
    /// Show requests and tokens per key per UTC day.
    Usage {
        /// Only this key's usage.
        #[arg(long)]
        key: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
