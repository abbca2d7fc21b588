//! The models this worker serves, registered in Postgres
//! (`hopper_shared::models`): at start-up, then renewed every
//! [`models::RENEW_EVERY`] while the worker runs, so the API can name the
//! models that are served and every vector stored finds its model's row
//! and HNSW index.

use std::sync::Arc;

use deadpool_postgres::Pool;
use hopper_shared::models::{self, EmbeddingModel, ServedModel};

use crate::embed::{Embedder, ModelRegistry};

/// What the registry of `embedder` says of it.
fn served(embedder: &Embedder) -> ServedModel {
    ServedModel {
        model: embedder.version().to_owned(),
        name: embedder.name().to_owned(),
        dim: embedder.dim() as i32,
    }
}

/// Registers every model of `registry`, then renews them in the background
/// until the process ends; their rows. A failure to renew is logged, not
/// fatal: the worker goes on embedding, and the API may call a model
/// unserved until the next renewal succeeds.
pub async fn register_and_renew(
    pool: Pool,
    registry: Arc<ModelRegistry>,
) -> anyhow::Result<Vec<EmbeddingModel>> {
    let all: Vec<ServedModel> = registry.models().iter().map(served).collect();
    let rows = models::register(&pool, &all).await?;
    tokio::spawn(async move {
        let mut every = tokio::time::interval(models::RENEW_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(e) = models::register(&pool, &all).await {
                tracing::warn!("could not renew the served models: {e}");
            }
        }
    });
    Ok(rows)
}

/// The registered row of `embedder`'s model: one of `known` (this worker's
/// own, registered at start-up — a row's id and dimension never change),
/// else read, else registered (a model this worker did not register).
pub async fn registered(
    pool: &Pool,
    known: &[EmbeddingModel],
    embedder: &Embedder,
) -> Result<EmbeddingModel, hopper_shared::Error> {
    if let Some(m) = known.iter().find(|m| m.model == embedder.version()) {
        return Ok(m.clone());
    }
    let mine = served(embedder);
    if let Some(m) = models::lookup(pool, &mine.model).await? {
        return Ok(m);
    }
    let mut made = models::register(pool, std::slice::from_ref(&mine)).await?;
    Ok(made.remove(0))
}
