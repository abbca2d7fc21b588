//! `hopper keys create|list|revoke`: API keys, straight against Postgres
//! (`DATABASE_URL`, `HOPPER_DB_SCHEMA`), for operators and for the first
//! admin key.
//!
//! Every subcommand applies the migrations first. `create` prints the new
//! key once (only its hash is stored); `list` prints keys without secrets;
//! `revoke` fails unless a live key has the id or prefix given.

use anyhow::bail;
use clap::Subcommand;
use hopper_shared::keys;

use crate::output;

/// The `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and never stored.
    Create {
        /// The tenant whose data the key reaches.
        #[arg(long)]
        tenant: String,
        /// Comma-separated: submit, read, admin, work.
        #[arg(long, alias = "scope", default_value = "submit,read")]
        scopes: String,
        /// Comma-separated queue names a `work` key may serve (any when left out).
        #[arg(long)]
        queues: Option<String>,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (without secrets).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id or prefix.
    Revoke {
        /// The key's id or prefix.
        key: String,
    },
}

/// Runs one `keys` subcommand.
pub async fn run(json: bool, command: KeysCommand) -> anyhow::Result<()> {
    let config = hopper_shared::Config::from_env()?;
    let pool = hopper_shared::db::pool(&config, 1)?;
    hopper_shared::db::migrate(&pool, &config.db_schema).await?;
    match command {
        KeysCommand::Create {
            tenant,
            scopes,
            queues,
            name,
        } => {
            let scopes = keys::parse_scopes(&scopes).map_err(anyhow::Error::msg)?;
            let queues = queues
                .as_deref()
                .map(keys::parse_queues)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let (info, key) =
                keys::create_limited(&pool, &tenant, &name, &scopes, queues.as_deref()).await?;
            let v = serde_json::json!({ "key": key, "info": info });
            output::print(json, &v, || {
                format!(
                    "{key}\n(tenant {}, scopes {}; shown once: store it now)\n",
                    info.tenant,
                    scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
        }
        KeysCommand::List { tenant } => {
            let list = keys::list(&pool, tenant.as_deref()).await?;
            let v = serde_json::json!({ "keys": list });
            output::print(json, &v, || output::keys(&v))
        }
        KeysCommand::Revoke { key } => {
            if keys::revoke(&pool, &key, None).await?.is_none() {
                bail!("no live key `{key}`");
            }
            output::print(json, &serde_json::json!({ "revoked": key }), || {
                format!("revoked {key}\n")
            })
        }
    }
}
