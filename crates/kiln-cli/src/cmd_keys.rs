//! `kiln keys`: create, list, revoke API keys and show their usage.

use crate::args_keys::{KeysArgs, KeysCommand};
use anyhow::{Context, Result};
use kiln_store::{KeyLimits, KeyRecord, KeyStore, DEFAULT_DATABASE_URL};
use serde_json::json;

/// Runs `kiln keys`.
pub fn run(args: KeysArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let url = args.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL);
        let store = KeyStore::connect(url).await?;
        let result = run_command(&store, args.command).await;
        store.close().await;
        result
    })
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn status(k: &KeyRecord) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else {
        "active"
    }
}

async fn run_command(store: &KeyStore, command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Create {
            name,
            rpm,
            tpm,
            max_concurrent,
            json,
        } => {
            let limits = KeyLimits {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                max_concurrent,
            };
            let key = store.create_key(&name, limits).await?;
            if json {
                let mut v = serde_json::to_value(&key.record)?;
                v["key"] = json!(key.secret.expose());
                println!("{v}");
            } else {
                println!("{}", key.secret.expose());
                eprintln!(
                    "created key {} ({name}); store it now: kiln keeps only its hash and cannot show it again",
                    key.record.id
                );
            }
        }
        KeysCommand::List { json } => {
            let keys = store.list_keys().await?;
            if json {
                println!("{}", serde_json::to_string(&keys)?);
            } else {
                println!(
                    "{:<12}  {:<8}  {:>8}  {:>10}  {:>10}  name",
                    "id", "status", "rpm", "tpm", "concurrent"
                );
                for k in &keys {
                    println!(
                        "{:<12}  {:<8}  {:>8}  {:>10}  {:>10}  {}",
                        k.id,
                        status(k),
                        limit(k.limits.requests_per_minute),
                        limit(k.limits.tokens_per_minute),
                        limit(k.limits.max_concurrent),
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let key = store
                .revoke_key(&id)
                .await
                .with_context(|| format!("revoking key `{id}`"))?;
            println!("revoked key {} ({})", key.id, key.name);
        }
        KeysCommand::Usage { key, json } => {
            let rows = store.usage(key.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<10}  {:<12}  {:>9}  {:>13}  {:>17}  name",
                    "day", "key", "requests", "prompt_tokens", "completion_tokens"
                );
                for r in &rows {
                    println!(
                        "{:<10}  {:<12}  {:>9}  {:>13}  {:>17}  {}",
                        r.day, r.key_id, r.requests, r.prompt_tokens, r.completion_tokens, r.name
                    );
                }
            }
        }
    }
    Ok(())
}
