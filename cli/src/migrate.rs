//! `hopper migrate`: applies the database migrations straight against
//! Postgres (`DATABASE_URL`, `HOPPER_DB_SCHEMA`) and prints the schema and
//! the migrations it applied (none when it was up to date).

use anyhow::Context;

use crate::output;

/// Runs `hopper migrate`.
pub async fn run(json: bool) -> anyhow::Result<()> {
    let config = hopper_shared::Config::from_env()?;
    let pool = hopper_shared::db::pool(&config, 1)?;
    let applied = hopper_shared::db::migrate(&pool, &config.db_schema)
        .await
        .with_context(|| {
            format!(
                "migrating {}",
                hopper_shared::config::redact_url(&config.database_url)
            )
        })?;
    let v = serde_json::json!({ "schema": config.db_schema, "applied": applied });
    output::print(json, &v, || {
        format!("schema {}: applied {:?}\n", config.db_schema, applied)
    })
}
