//! The embedding models Hopper has vectors of, each with its own dimension.
//!
//! A worker that serves models registers them when it starts and renews
//! them while it runs ([`register`]): one row of `embedding_models` per
//! `name@version`, with its dimension and a partial HNSW index of its own
//! on `chunk_vectors` (see `migrations/V12__model_vectors.sql`). The API
//! reads which models are served ([`served`]) to refuse a name no worker
//! serves, and every vector write or search finds its model's id and
//! dimension here ([`lookup`]), which never change once registered.
//!
//! The SQL of a search names the model's id and dimension as literals
//! ([`EmbeddingModel::distance_sql`]): the planner can only use a partial
//! expression index when the query's expression and predicate are the
//! index's own.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::Result;

/// How often a worker renews its models' `seen_at`.
pub const RENEW_EVERY: Duration = Duration::from_secs(60);

/// A model is served while some worker renewed it this recently (three
/// renewals missed).
pub const SERVED_WITHIN: Duration = Duration::from_secs(180);

/// The advisory lock under which models are registered and their indexes
/// made, so two workers starting together do not race on `CREATE INDEX`
/// (`scripts/bench/search` holds it while it builds an index itself).
pub const REGISTER_LOCK: i64 = 0x4850_4d4f_4445_4c53; // "HPMODELS"

/// One registered model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingModel {
    /// Its row id: the `model_id` of its vectors and its index's name.
    pub id: i32,
    /// `name@version`.
    pub model: String,
    /// The name requests use.
    pub name: String,
    /// Floats per vector.
    pub dim: i32,
}

impl EmbeddingModel {
    /// The cosine distance between a chunk vector (`v.embedding`, alias
    /// `v`) and the query (`$param`), as this model's HNSW index computes
    /// it.
    pub fn distance_sql(&self, param: &str) -> String {
        format!(
            "v.embedding::vector({dim}) <=> {param}::vector({dim})",
            dim = self.dim
        )
    }

    /// The predicate that picks this model's vectors (and its index).
    pub fn predicate_sql(&self) -> String {
        format!("v.model_id = {}", self.id)
    }
}

/// What a worker serves: `name@version`, its name and dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    /// `name@version`.
    pub model: String,
    /// The name requests use.
    pub name: String,
    /// Floats per vector.
    pub dim: i32,
}

/// Registers (or renews) the models a worker serves: a row each, and its
/// HNSW index when it is new. A model registered before with another
/// dimension is refused ([`crate::Error::Invalid`]): its version names its
/// weights, which fix the dimension.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres register", otel.kind = "client", db.system = "postgresql"))]
pub async fn register(pool: &Pool, models: &[ServedModel]) -> Result<Vec<EmbeddingModel>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REGISTER_LOCK])
        .await?;
    let mut out = Vec::with_capacity(models.len());
    for m in models {
        let row = tx
            .query_one(
                "INSERT INTO embedding_models (model, name, dim) VALUES ($1, $2, $3) \
                 ON CONFLICT (model) DO UPDATE SET seen_at = now() \
                 RETURNING id, dim",
                &[&m.model, &m.name, &m.dim],
            )
            .await?;
        let (id, dim): (i32, i32) = (row.get(0), row.get(1));
        if dim != m.dim {
            return Err(crate::Error::Invalid(format!(
                "model {} was registered with {dim} dimensions, not {}",
                m.model, m.dim
            )));
        }
        // Integers only in this statement: nothing to quote.
        tx.batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS chunk_vectors_m{id}_hnsw ON chunk_vectors \
             USING hnsw ((embedding::vector({dim})) vector_cosine_ops) WHERE model_id = {id}"
        ))
        .await?;
        out.push(EmbeddingModel {
            id,
            model: m.model.clone(),
            name: m.name.clone(),
            dim,
        });
    }
    tx.commit().await?;
    Ok(out)
}

/// The registered model `name@version`, if any. (Not cached across calls:
/// one process may hold pools of several schemas, tests do, whose ids
/// differ; the read is one primary-key lookup.)
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres lookup", otel.kind = "client", db.system = "postgresql"))]
pub async fn lookup(pool: &Pool, model: &str) -> Result<Option<EmbeddingModel>> {
    let client = pool.get().await?;
    let Some(row) = client
        .query_opt(
            "SELECT id, model, name, dim FROM embedding_models WHERE model = $1",
            &[&model],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(EmbeddingModel {
        id: row.get(0),
        model: row.get(1),
        name: row.get(2),
        dim: row.get(3),
    }))
}

/// The models some worker serves now (renewed within
/// [`SERVED_WITHIN`]), by `name@version`.
pub async fn served(pool: &Pool) -> Result<Vec<ServedModel>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT model, name, dim FROM embedding_models \
             WHERE seen_at > now() - make_interval(secs => $1) ORDER BY name, model",
            &[&SERVED_WITHIN.as_secs_f64()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ServedModel {
            model: r.get(0),
            name: r.get(1),
            dim: r.get(2),
        })
        .collect())
}

/// The served model a request's `name` or `name@version` means, if one is
/// served.
pub fn find<'a>(served: &'a [ServedModel], wanted: &str) -> Option<&'a ServedModel> {
    served
        .iter()
        .find(|m| m.model == wanted)
        .or_else(|| served.iter().find(|m| m.name == wanted))
}

/// The served models, listed for an error message: `a@v1 (384-d), b@v2
/// (768-d)`, or `none (no worker serving models has started)`.
pub fn describe(served: &[ServedModel]) -> String {
    if served.is_empty() {
        return "none (no embedding worker has registered a model)".to_owned();
    }
    served
        .iter()
        .map(|m| format!("{} ({}-d)", m.model, m.dim))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(model: &str, dim: i32) -> ServedModel {
        ServedModel {
            model: model.into(),
            name: model.split('@').next().unwrap().into(),
            dim,
        }
    }

    #[test]
    fn a_name_or_a_full_version_finds_its_model() {
        let all = [served("mini@aaa", 384), served("bert@bbb", 768)];
        assert_eq!(find(&all, "bert").unwrap().dim, 768);
        assert_eq!(find(&all, "mini@aaa").unwrap().dim, 384);
        assert!(find(&all, "mini@zzz").is_none());
        assert!(find(&all, "nope").is_none());
        assert_eq!(describe(&all), "mini@aaa (384-d), bert@bbb (768-d)");
        assert!(describe(&[]).starts_with("none"));
    }

    #[test]
    fn search_sql_names_the_index_expression() {
        let m = EmbeddingModel {
            id: 7,
            model: "bert@bbb".into(),
            name: "bert".into(),
            dim: 768,
        };
        assert_eq!(
            m.distance_sql("$1"),
            "v.embedding::vector(768) <=> $1::vector(768)"
        );
        assert_eq!(m.predicate_sql(), "v.model_id = 7");
    }
}
