//! Document sets and their model: which model a set's vectors come from,
//! and switching a set to another model with zero downtime (a re-embed).
//!
//! A set is born with its first upload ([`join`]) and names one model: the
//! upload's `options.model` or, when none was asked for, the worker's
//! default, pinned to `name@version` by the first batch of vectors stored
//! for it ([`pin_model`]). Every embed batch of a set's documents embeds
//! with the set's model ([`embed_model`]) and stores only while the set
//! still has that model ([`check_model`], under a share lock on the set's
//! row), so no vector of another model slips in.
//!
//! A re-embed ([`start_reembed`]) writes a second vector for every chunk of
//! the set with the new model, as `embed` jobs of batches of chunks, while
//! search keeps reading the old vectors. Its last batch
//! ([`store_reembed_batch`] says when) runs [`finish_reembed`], which
//! either finds chunks that arrived meanwhile (uploads during the re-embed)
//! and queues batches for them, or flips the set to the new model in one
//! transaction, under the set row's exclusive lock. The old vectors stay
//! `grace_s` seconds more (search may still name the old model), then
//! [`drop_expired_vectors`] removes them. A cancelled re-embed drops what
//! it wrote ([`cancel_reembed`]).

use deadpool_postgres::{Pool, Transaction};
use pgvector::Vector;
use serde::Serialize;
use uuid::Uuid;

use crate::{Result, models::EmbeddingModel};

/// Chunks per re-embed batch (an `embed` job).
pub const REEMBED_BATCH: i64 = 64;

/// The model name of `name@version` (or of a bare name).
pub fn model_name(model: &str) -> &str {
    model.split('@').next().unwrap_or(model)
}

/// A set's model, as a listing shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetView {
    /// The set's name.
    pub name: String,
    /// The model its vectors (and search's query vector) come from:
    /// `name@version`, or the name asked for until the first vectors are
    /// stored; null until then when none was asked for (the worker's
    /// default).
    pub model: Option<String>,
    /// The model it had before its last re-embed, whose vectors are kept
    /// until `previous_until` (search may name it meanwhile).
    pub previous_model: Option<String>,
    /// When the previous model's vectors are dropped (Unix ms).
    pub previous_until_ms: Option<i64>,
    /// Documents in the set.
    pub documents: i64,
    /// Chunks of their current versions.
    pub chunks: i64,
    /// Its latest re-embed, running or not.
    pub reembed: Option<ReembedView>,
}

/// A re-embed's progress.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReembedView {
    /// Its id.
    pub id: Uuid,
    /// The model being switched to.
    pub model: String,
    /// The model being switched from.
    pub from_model: Option<String>,
    /// `running`, `done` or `cancelled`.
    pub state: String,
    /// Batches (embed jobs) queued, and done.
    pub batches: i32,
    /// Batches done.
    pub batches_done: i32,
    /// Chunks to embed, and embedded.
    pub chunks_total: i32,
    /// Chunks embedded.
    pub chunks_done: i32,
    /// When it started (Unix ms).
    pub created_at_ms: i64,
    /// When it flipped the set or was cancelled (Unix ms).
    pub finished_at_ms: Option<i64>,
}

const REEMBED_COLUMNS: &str = "r.id, r.model, r.from_model, r.state, r.batches, r.batches_done, \
    r.chunks_total, r.chunks_done, (extract(epoch FROM r.created_at) * 1000)::int8, \
    (extract(epoch FROM r.finished_at) * 1000)::int8";

fn reembed_view(r: &tokio_postgres::Row, at: usize) -> ReembedView {
    ReembedView {
        id: r.get(at),
        model: r.get(at + 1),
        from_model: r.get(at + 2),
        state: r.get(at + 3),
        batches: r.get(at + 4),
        batches_done: r.get(at + 5),
        chunks_total: r.get(at + 6),
        chunks_done: r.get(at + 7),
        created_at_ms: r.get(at + 8),
        finished_at_ms: r.get(at + 9),
    }
}

/// Adds an upload to its set, inside the upload's transaction: makes the
/// set when it is new (its model: `own_model`, the upload's
/// `options.model`), and refuses a model other than the set's
/// ([`crate::Error::InvalidField`] on `options.model`: a set holds one
/// model; a re-embed switches it).
pub async fn join(
    tx: &Transaction<'_>,
    tenant: &str,
    set: &str,
    own_model: Option<&str>,
) -> Result<()> {
    let row = tx
        .query_one(
            "WITH made AS ( \
                 INSERT INTO document_sets (tenant, name, model) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant, name) DO NOTHING RETURNING model) \
             SELECT model FROM made UNION ALL \
             SELECT model FROM document_sets WHERE tenant = $1 AND name = $2 LIMIT 1",
            &[&tenant, &set, &own_model],
        )
        .await?;
    let theirs: Option<String> = row.get(0);
    match (theirs, own_model) {
        (Some(theirs), Some(own)) if !same_model(&theirs, own) => Err(crate::Error::InvalidField {
            field: "options.model".into(),
            message: format!(
                "document set {set:?} uses model {theirs}, not {own} (a set holds one model; \
                 POST /v1/document-sets/{set}/reembed switches it)"
            ),
        }),
        (None, Some(own)) => {
            tx.execute(
                "UPDATE document_sets SET model = $3, updated_at = now() \
                 WHERE tenant = $1 AND name = $2 AND model IS NULL",
                &[&tenant, &set, &own],
            )
            .await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether `a` and `b` name one model: the same name, and the same version
/// where both give one.
fn same_model(a: &str, b: &str) -> bool {
    match (a.split_once('@'), b.split_once('@')) {
        (Some(_), Some(_)) => a == b,
        _ => model_name(a) == model_name(b),
    }
}

/// The model a document's chunks are embedded with: its set's (when it is
/// in a set that names one), else its own `options.model` (`None`: the
/// worker's default). `None` also when the tenant has no such document.
pub async fn embed_model(pool: &Pool, tenant: &str, document: Uuid) -> Result<Option<String>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT coalesce(s.model, d.options->>'model') FROM documents d \
             LEFT JOIN document_sets s ON s.tenant = d.tenant AND s.name = d.document_set \
             WHERE d.id = $1 AND d.tenant = $2",
            &[&document, &tenant],
        )
        .await?;
    Ok(row.and_then(|r| r.get(0)))
}

/// Pins a document's set to `model` (`name@version`) when the set names no
/// version yet: no model (the worker's default) or the bare name. Runs
/// before the first vectors are stored; a no-op otherwise.
pub async fn pin_model(pool: &Pool, tenant: &str, document: Uuid, model: &str) -> Result<()> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE document_sets s SET model = $3, updated_at = now() FROM documents d \
             WHERE d.id = $1 AND d.tenant = $2 AND s.tenant = d.tenant \
               AND s.name = d.document_set \
               AND (s.model IS NULL OR s.model = split_part($3, '@', 1))",
            &[&document, &tenant, &model],
        )
        .await?;
    Ok(())
}

/// Inside a transaction storing a document's vectors of `model`: takes a
/// share lock on its set's row (so a re-embed cannot flip the set until it
/// commits) and checks the set still uses `model`. Err
/// [`crate::Error::Invalid`] when it switched meanwhile (the job retries
/// and embeds with the new model). Documents outside sets always pass.
pub async fn check_model(
    tx: &Transaction<'_>,
    tenant: &str,
    document: Uuid,
    model: &str,
) -> Result<()> {
    let row = tx
        .query_opt(
            "SELECT s.model FROM documents d \
             JOIN document_sets s ON s.tenant = d.tenant AND s.name = d.document_set \
             WHERE d.id = $1 AND d.tenant = $2 FOR SHARE OF s",
            &[&document, &tenant],
        )
        .await?;
    match row.map(|r| r.get::<_, Option<String>>(0)) {
        Some(Some(set_model)) if set_model != model => Err(crate::Error::Invalid(format!(
            "document {document}: its set switched to model {set_model} while these vectors \
             of {model} were computed; the batch is embedded again"
        ))),
        _ => Ok(()),
    }
}

/// A tenant's sets, by name, with their models and latest re-embeds.
pub async fn list(pool: &Pool, tenant: &str) -> Result<Vec<SetView>> {
    sets(pool, tenant, None).await
}

/// One set of a tenant.
pub async fn get(pool: &Pool, tenant: &str, set: &str) -> Result<Option<SetView>> {
    Ok(sets(pool, tenant, Some(set)).await?.into_iter().next())
}

async fn sets(pool: &Pool, tenant: &str, only: Option<&str>) -> Result<Vec<SetView>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT s.name, s.model, s.previous_model, \
                     (extract(epoch FROM s.previous_until) * 1000)::int8, \
                     (SELECT count(*) FROM documents d \
                      WHERE d.tenant = s.tenant AND d.document_set = s.name), \
                     (SELECT count(*) FROM documents d JOIN chunks c \
                        ON c.document_id = d.id AND c.version = d.version \
                      WHERE d.tenant = s.tenant AND d.document_set = s.name), \
                     {REEMBED_COLUMNS} \
                 FROM document_sets s \
                 LEFT JOIN LATERAL (SELECT * FROM reembeds r \
                     WHERE r.tenant = s.tenant AND r.document_set = s.name \
                     ORDER BY r.created_at DESC LIMIT 1) r ON true \
                 WHERE s.tenant = $1 AND ($2::text IS NULL OR s.name = $2) ORDER BY s.name"
            ),
            &[&tenant, &only],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| SetView {
            name: r.get(0),
            model: r.get(1),
            previous_model: r.get(2),
            previous_until_ms: r.get(3),
            documents: r.get(4),
            chunks: r.get(5),
            reembed: r.get::<_, Option<Uuid>>(6).map(|_| reembed_view(r, 6)),
        })
        .collect())
}

/// The models whose vectors a search of a set may read: the set's, its
/// previous one while kept, and a running re-embed's target (partly
/// written). `None` when the tenant has no such set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetModels {
    /// The set's model (`None`: none pinned yet).
    pub model: Option<String>,
    /// Its previous model, while its vectors are kept.
    pub previous: Option<String>,
    /// A running re-embed's target.
    pub reembedding_to: Option<String>,
}

impl SetModels {
    /// Every model named, for an error message.
    pub fn names(&self) -> Vec<String> {
        [&self.model, &self.previous, &self.reembedding_to]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The stored model a search's `model` means, if the set has vectors
    /// of it.
    pub fn find(&self, wanted: &str) -> Option<String> {
        self.names()
            .into_iter()
            .find(|m| m.contains('@') && same_model(m, wanted))
    }
}

/// The models of a tenant's set ([`SetModels`]).
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres models_of", otel.kind = "client", db.system = "postgresql"))]
pub async fn models_of(pool: &Pool, tenant: &str, set: &str) -> Result<Option<SetModels>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT s.model, \
                 CASE WHEN s.previous_until > now() THEN s.previous_model END, \
                 (SELECT r.model FROM reembeds r WHERE r.tenant = s.tenant \
                    AND r.document_set = s.name AND r.state = 'running') \
             FROM document_sets s WHERE s.tenant = $1 AND s.name = $2",
            &[&tenant, &set],
        )
        .await?;
    Ok(row.map(|r| SetModels {
        model: r.get(0),
        previous: r.get(1),
        reembedding_to: r.get(2),
    }))
}

/// What asking for a re-embed found.
#[derive(Debug)]
pub enum ReembedStart {
    /// Started (or, for a set with no chunks, done at once): its progress.
    Started(ReembedView),
    /// One is running already: its id.
    AlreadyRunning(Uuid),
    /// The tenant has no such set.
    NoSuchSet,
    /// The set uses that model already.
    SameModel(String),
}

/// The arguments of the `embed` jobs of a re-embed's batches. Their ids
/// are fresh: a planning transaction that rolls back after queueing them
/// leaves jobs that find no batch and skip, and its re-run queues new ones.
pub fn batch_jobs(id: Uuid, model: &str, batches: &[i32]) -> Vec<serde_json::Value> {
    batches
        .iter()
        .map(|&batch_no| {
            let args = crate::jobs::EmbedArgs {
                texts: Vec::new(),
                batch: None,
                model: Some(model.to_owned()),
                reembed: Some(crate::jobs::ReembedBatch {
                    reembed_id: id,
                    batch_no,
                }),
            };
            serde_json::to_value(args).unwrap_or_default()
        })
        .collect()
}

/// The key of the advisory lock a re-embed's starting transaction holds
/// until it commits, so a batch job that runs before the commit waits.
fn reembed_lock(id: Uuid) -> i64 {
    crate::documents::upload_lock(id)
}

/// Starts re-embedding a tenant's set with `target`: one batch of
/// [`REEMBED_BATCH`] chunks per `embed` job, written to `reembed_batches`,
/// then `then(id, batch numbers)` queues their jobs inside the same
/// transaction (nothing is stored when it fails). `grace_s`: how long the
/// old vectors are kept after the flip.
pub async fn start_reembed<F, Fut, E>(
    pool: &Pool,
    tenant: &str,
    set: &str,
    target: &EmbeddingModel,
    grace_s: i32,
    then: F,
) -> Result<ReembedStart, E>
where
    F: FnOnce(Uuid, Vec<i32>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<crate::Error>,
{
    let id = Uuid::now_v7();
    let mut client = pool.get().await.map_err(crate::Error::from)?;
    let tx = client.transaction().await.map_err(crate::Error::from)?;
    let planned = async {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&reembed_lock(id)])
            .await?;
        let Some(row) = tx
            .query_opt(
                "SELECT model FROM document_sets WHERE tenant = $1 AND name = $2 FOR UPDATE",
                &[&tenant, &set],
            )
            .await?
        else {
            return Ok(Err(ReembedStart::NoSuchSet));
        };
        let from: Option<String> = row.get(0);
        if from.as_deref() == Some(target.model.as_str()) {
            return Ok(Err(ReembedStart::SameModel(target.model.clone())));
        }
        if let Some(running) = tx
            .query_opt(
                "SELECT id FROM reembeds WHERE tenant = $1 AND document_set = $2 \
                 AND state = 'running'",
                &[&tenant, &set],
            )
            .await?
        {
            return Ok(Err(ReembedStart::AlreadyRunning(running.get(0))));
        }
        tx.execute(
            "INSERT INTO reembeds (id, tenant, document_set, model, from_model, grace_s) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &tenant, &set, &target.model, &from, &grace_s],
        )
        .await?;
        let batches = plan_batches(&tx, id, tenant, set, target.id, 0).await?;
        Ok::<_, crate::Error>(Ok(batches))
    };
    let batches = match planned.await? {
        Ok(batches) => batches,
        Err(refused) => return Ok(refused),
    };
    if batches.is_empty() {
        flip(&tx, tenant, set, id).await?;
    }
    then(id, batches).await?;
    let view = tx
        .query_one(
            &format!("SELECT {REEMBED_COLUMNS} FROM reembeds r WHERE r.id = $1"),
            &[&id],
        )
        .await
        .map_err(crate::Error::from)?;
    tx.commit().await.map_err(crate::Error::from)?;
    Ok(ReembedStart::Started(reembed_view(&view, 0)))
}

/// Writes batches (numbered from `first`) of the set's current chunks that
/// lack a vector of model `model_id`, adds them to the re-embed's counts,
/// and returns their numbers.
async fn plan_batches(
    tx: &Transaction<'_>,
    id: Uuid,
    tenant: &str,
    set: &str,
    model_id: i32,
    first: i32,
) -> Result<Vec<i32>> {
    let rows = tx
        .query(
            "WITH todo AS ( \
                 SELECT c.id, row_number() OVER (ORDER BY c.id) - 1 AS n \
                 FROM documents d JOIN chunks c ON c.document_id = d.id AND c.version = d.version \
                 WHERE d.tenant = $2 AND d.document_set = $3 \
                   AND NOT EXISTS (SELECT 1 FROM chunk_vectors v \
                                   WHERE v.chunk_id = c.id AND v.model_id = $4)), \
             made AS ( \
                 INSERT INTO reembed_batches (reembed_id, batch_no, chunk_ids) \
                 SELECT $1, $5 + (n / $6)::int4, array_agg(id ORDER BY id) FROM todo \
                 GROUP BY n / $6 \
                 RETURNING batch_no, cardinality(chunk_ids) AS chunks) \
             SELECT batch_no, chunks FROM made ORDER BY batch_no",
            &[&id, &tenant, &set, &model_id, &first, &REEMBED_BATCH],
        )
        .await?;
    let batches: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let chunks: i32 = rows.iter().map(|r| r.get::<_, i32>(1)).sum();
    tx.execute(
        "UPDATE reembeds SET batches = batches + $2, chunks_total = chunks_total + $3 \
         WHERE id = $1",
        &[&id, &(batches.len() as i32), &chunks],
    )
    .await?;
    Ok(batches)
}

/// Flips a set to its running re-embed's model: the set's model becomes
/// the target, its documents' too, the old model's vectors are kept
/// `grace_s` more, and the re-embed is done. The caller holds the set
/// row's exclusive lock.
async fn flip(tx: &Transaction<'_>, tenant: &str, set: &str, id: Uuid) -> Result<()> {
    tx.execute(
        "UPDATE document_sets s SET previous_model = s.model, model = r.model, \
             previous_until = now() + make_interval(secs => r.grace_s), updated_at = now() \
         FROM reembeds r WHERE r.id = $3 AND s.tenant = $1 AND s.name = $2",
        &[&tenant, &set, &id],
    )
    .await?;
    tx.execute(
        "UPDATE documents d SET model = r.model, updated_at = now() FROM reembeds r \
         WHERE r.id = $3 AND d.tenant = $1 AND d.document_set = $2 AND d.model IS NOT NULL",
        &[&tenant, &set, &id],
    )
    .await?;
    tx.execute(
        "UPDATE reembeds SET state = 'done', finished_at = now() WHERE id = $1",
        &[&id],
    )
    .await?;
    Ok(())
}

/// One re-embed batch's work, as its job reads it.
#[derive(Debug)]
pub enum ReembedBatch {
    /// Embed these chunks (id, text) with `model`.
    Embed {
        /// The target model, `name@version`.
        model: String,
        /// The chunks still there.
        chunks: Vec<(Uuid, String)>,
    },
    /// Stored by an earlier run (which may have stopped before finishing
    /// the re-embed); the target model.
    Done {
        /// The target model, `name@version`.
        model: String,
    },
    /// Nothing to do: the re-embed is over (done or cancelled).
    Over(String),
}

/// The chunks of one re-embed batch of a tenant (`None`: no such re-embed
/// or batch). Waits for the transaction that started the re-embed.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres reembed_batch", otel.kind = "client", db.system = "postgresql"))]
pub async fn reembed_batch(
    pool: &Pool,
    tenant: &str,
    id: Uuid,
    batch_no: i32,
) -> Result<Option<ReembedBatch>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&reembed_lock(id)])
        .await?;
    let Some(r) = tx
        .query_opt(
            "SELECT r.state, r.model, b.done FROM reembeds r \
             JOIN reembed_batches b ON b.reembed_id = r.id AND b.batch_no = $3 \
             WHERE r.id = $1 AND r.tenant = $2",
            &[&id, &tenant, &batch_no],
        )
        .await?
    else {
        return Ok(None);
    };
    let (state, model, done): (String, String, bool) = (r.get(0), r.get(1), r.get(2));
    if state != "running" {
        return Ok(Some(ReembedBatch::Over(format!(
            "re-embed {id} is {state}"
        ))));
    }
    if done {
        return Ok(Some(ReembedBatch::Done { model }));
    }
    let rows = tx
        .query(
            "SELECT c.id, c.text FROM reembed_batches b \
             CROSS JOIN LATERAL unnest(b.chunk_ids) WITH ORDINALITY AS u(id, n) \
             JOIN chunks c ON c.id = u.id \
             WHERE b.reembed_id = $1 AND b.batch_no = $2 ORDER BY u.n",
            &[&id, &batch_no],
        )
        .await?;
    tx.commit().await?;
    Ok(Some(ReembedBatch::Embed {
        model,
        chunks: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
    }))
}

/// What storing a re-embed batch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReembedStored {
    /// Stored and counted.
    Stored,
    /// Not stored: done by an earlier run, or the re-embed is over.
    Skipped,
}

/// Stores one re-embed batch's vectors (of `model`, the target) and counts
/// the batch, once, unless the re-embed is no longer running (it holds a
/// share lock on the re-embed's row, so a cancel waits for it or it sees
/// the cancel).
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres store_reembed_batch", otel.kind = "client", db.system = "postgresql"))]
pub async fn store_reembed_batch(
    pool: &Pool,
    id: Uuid,
    batch_no: i32,
    model: &EmbeddingModel,
    vectors: &[(Uuid, Vec<f32>)],
) -> Result<ReembedStored> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let running = tx
        .query_opt(
            "SELECT 1 FROM reembeds WHERE id = $1 AND state = 'running' AND model = $2 FOR SHARE",
            &[&id, &model.model],
        )
        .await?;
    if running.is_none() {
        return Ok(ReembedStored::Skipped);
    }
    let flipped = tx
        .execute(
            "UPDATE reembed_batches SET done = true \
             WHERE reembed_id = $1 AND batch_no = $2 AND NOT done",
            &[&id, &batch_no],
        )
        .await?;
    if flipped == 0 {
        return Ok(ReembedStored::Skipped);
    }
    let stored = insert_vectors(&tx, model, vectors, None).await?;
    tx.execute(
        "UPDATE reembeds SET batches_done = batches_done + 1, chunks_done = chunks_done + $2 \
         WHERE id = $1",
        &[&id, &(stored as i32)],
    )
    .await?;
    tx.commit().await?;
    Ok(ReembedStored::Stored)
}

/// Writes `vectors` of `model` (replacing any the chunks had of it) for the
/// chunks that still exist — and, with `of_version` (document, version),
/// belong to that document version; their number. A vector of another
/// dimension is refused.
pub(crate) async fn insert_vectors(
    tx: &Transaction<'_>,
    model: &EmbeddingModel,
    vectors: &[(Uuid, Vec<f32>)],
    of_version: Option<(Uuid, i32)>,
) -> Result<u64> {
    if let Some((chunk, v)) = vectors.iter().find(|(_, v)| v.len() != model.dim as usize) {
        return Err(crate::Error::Invalid(format!(
            "chunk {chunk}: a vector of {} floats for model {} ({}-d)",
            v.len(),
            model.model,
            model.dim
        )));
    }
    let ids: Vec<Uuid> = vectors.iter().map(|(id, _)| *id).collect();
    let vecs: Vec<Vector> = vectors
        .iter()
        .map(|(_, v)| Vector::from(v.clone()))
        .collect();
    Ok(tx
        .execute(
            "INSERT INTO chunk_vectors (chunk_id, model_id, embedding) \
             SELECT u.id, $3, u.v FROM unnest($1::uuid[], $2::vector[]) AS u(id, v) \
             JOIN chunks c ON c.id = u.id \
               AND ($4::uuid IS NULL OR (c.document_id = $4 AND c.version = $5)) \
             ON CONFLICT (chunk_id, model_id) DO UPDATE SET embedding = excluded.embedding",
            &[
                &ids,
                &vecs,
                &model.id,
                &of_version.map(|(d, _)| d),
                &of_version.map(|(_, v)| v),
            ],
        )
        .await?)
}

/// What the last batch of a re-embed found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReembedFinish {
    /// The set uses the new model now.
    Flipped,
    /// Chunks arrived meanwhile: these batches were added; their jobs
    /// must be queued (the last of them finishes the re-embed).
    More(Vec<i32>),
    /// Not running any more, or not every batch is done.
    NotYet,
}

/// Finishes a re-embed whose batches are all done: under the set row's
/// exclusive lock, either plans batches for the set's chunks still without
/// a vector of the target (uploads during the re-embed) and runs `then` to
/// queue them, or flips the set ([`flip`]). A transaction storing a
/// document's vectors holds the set row's share lock ([`check_model`]), so
/// no chunk is embedded with the old model after the flip unseen.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres finish_reembed", otel.kind = "client", db.system = "postgresql"))]
pub async fn finish_reembed<F, Fut, E>(
    pool: &Pool,
    id: Uuid,
    target: &EmbeddingModel,
    then: F,
) -> Result<ReembedFinish, E>
where
    F: FnOnce(Vec<i32>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<crate::Error>,
{
    let mut client = pool.get().await.map_err(crate::Error::from)?;
    let tx = client.transaction().await.map_err(crate::Error::from)?;
    let found = async {
        let Some(r) = tx
            .query_opt(
                "SELECT tenant, document_set, batches FROM reembeds \
                 WHERE id = $1 AND state = 'running' AND batches_done >= batches",
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let (tenant, set, batches): (String, String, i32) = (r.get(0), r.get(1), r.get(2));
        tx.execute(
            "SELECT 1 FROM document_sets WHERE tenant = $1 AND name = $2 FOR UPDATE",
            &[&tenant, &set],
        )
        .await?;
        // Re-read under the lock: a concurrent finisher may have flipped it.
        let still = tx
            .query_opt(
                "SELECT 1 FROM reembeds WHERE id = $1 AND state = 'running' FOR UPDATE",
                &[&id],
            )
            .await?;
        if still.is_none() {
            return Ok(None);
        }
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&reembed_lock(id)])
            .await?;
        let more = plan_batches(&tx, id, &tenant, &set, target.id, batches).await?;
        if more.is_empty() {
            flip(&tx, &tenant, &set, id).await?;
        }
        Ok::<_, crate::Error>(Some(more))
    };
    let outcome = match found.await? {
        None => ReembedFinish::NotYet,
        Some(more) if more.is_empty() => ReembedFinish::Flipped,
        Some(more) => {
            then(more.clone()).await?;
            ReembedFinish::More(more)
        }
    };
    tx.commit().await.map_err(crate::Error::from)?;
    Ok(outcome)
}

/// Cancels a tenant's running re-embed of `set`: it ends `cancelled`,
/// its queued batches then do nothing, and the vectors it wrote are
/// dropped (unless the set uses or keeps that model). Its id, or `None`
/// when none was running.
pub async fn cancel_reembed(pool: &Pool, tenant: &str, set: &str) -> Result<Option<Uuid>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "UPDATE reembeds SET state = 'cancelled', finished_at = now() \
             WHERE tenant = $1 AND document_set = $2 AND state = 'running' \
             RETURNING id, model",
            &[&tenant, &set],
        )
        .await?
    else {
        return Ok(None);
    };
    let (id, model): (Uuid, String) = (row.get(0), row.get(1));
    delete_set_vectors(&tx, tenant, set, &model).await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// Deletes the vectors of `model` of a set's chunks, unless the set uses
/// or still keeps that model.
async fn delete_set_vectors(
    tx: &Transaction<'_>,
    tenant: &str,
    set: &str,
    model: &str,
) -> Result<u64> {
    Ok(tx
        .execute(
            "DELETE FROM chunk_vectors v USING chunks c, documents d, embedding_models m, \
                 document_sets s \
             WHERE v.chunk_id = c.id AND c.document_id = d.id AND d.tenant = $1 \
               AND d.document_set = $2 AND v.model_id = m.id AND m.model = $3 \
               AND s.tenant = d.tenant AND s.name = d.document_set \
               AND s.model IS DISTINCT FROM $3 \
               AND (s.previous_model IS DISTINCT FROM $3 OR s.previous_until <= now())",
            &[&tenant, &set, &model],
        )
        .await?)
}

/// Drops the previous model's vectors of every set whose grace period is
/// over; the number of sets cleared. Run by the API's retention loop.
pub async fn drop_expired_vectors(pool: &Pool) -> Result<u64> {
    let mut client = pool.get().await?;
    let expired = client
        .query(
            "SELECT tenant, name, previous_model FROM document_sets \
             WHERE previous_until <= now() AND previous_model IS NOT NULL",
            &[],
        )
        .await?;
    let mut cleared = 0;
    for row in expired {
        let (tenant, set, model): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let tx = client.transaction().await?;
        let dropped = delete_set_vectors(&tx, &tenant, &set, &model).await?;
        tx.execute(
            "UPDATE document_sets SET previous_model = NULL, previous_until = NULL \
             WHERE tenant = $1 AND name = $2 AND previous_model = $3 AND previous_until <= now()",
            &[&tenant, &set, &model],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(%tenant, %set, %model, dropped, "previous model's vectors dropped");
        cleared += 1;
    }
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_match_by_name_or_by_full_version() {
        assert!(same_model("mini@aaa", "mini"));
        assert!(same_model("mini", "mini@aaa"));
        assert!(same_model("mini@aaa", "mini@aaa"));
        assert!(!same_model("mini@aaa", "mini@bbb"));
        assert!(!same_model("mini@aaa", "bert"));
        let m = SetModels {
            model: Some("mini@aaa".into()),
            previous: None,
            reembedding_to: Some("bert@bbb".into()),
        };
        assert_eq!(m.find("bert").as_deref(), Some("bert@bbb"));
        assert_eq!(m.find("mini@aaa").as_deref(), Some("mini@aaa"));
        assert_eq!(m.find("other"), None);
        assert_eq!(m.names(), ["mini@aaa", "bert@bbb"]);
    }
}
