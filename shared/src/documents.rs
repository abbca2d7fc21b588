//! Documents and their chunks in Postgres: what the API stores on upload,
//! what the pipeline's jobs read and write, and the fan-in that moves a
//! document from `embedding` to `summarizing`/`ready` exactly once.
//!
//! Every write a job makes is idempotent: re-ingesting a document version
//! replaces its chunks, and an embed batch flips its `done` flag once, so a
//! job re-run after a crash neither duplicates chunks nor counts twice.

use deadpool_postgres::Pool;
use pgvector::Vector;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Result;

/// Where a document is in the pipeline.
pub mod status {
    /// Stored, its ingest job waiting.
    pub const QUEUED: &str = "queued";
    /// Being extracted and chunked.
    pub const INGESTING: &str = "ingesting";
    /// Chunks waiting for their vectors.
    pub const EMBEDDING: &str = "embedding";
    /// Every chunk embedded; the summary is being written.
    pub const SUMMARIZING: &str = "summarizing";
    /// Searchable (and summarised, when asked).
    pub const READY: &str = "ready";
    /// Stopped with an error (see `error`).
    pub const FAILED: &str = "failed";
}

/// Per-document pipeline options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentOptions {
    /// Write a summary once embedded (default true).
    #[serde(default = "yes")]
    pub summarize: bool,
    /// Embedding model name; the worker's default when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Target chunk size in tokens (default 200).
    #[serde(default)]
    pub chunk_tokens: Option<usize>,
    /// Overlap between chunks in tokens (default 20).
    #[serde(default)]
    pub chunk_overlap: Option<usize>,
    /// Where to `POST` the signed document when it is ready or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

fn yes() -> bool {
    true
}

/// A document as uploaded.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// Tenant owning it.
    pub tenant: String,
    /// Display name (file name).
    pub name: String,
    /// Optional grouping for search.
    pub document_set: Option<String>,
    /// `text/plain`, `text/markdown`, `text/html` or `application/pdf`.
    pub content_type: String,
    /// The raw bytes.
    pub body: Vec<u8>,
    /// Free-form metadata.
    pub metadata: serde_json::Value,
    /// Pipeline options.
    pub options: DocumentOptions,
}

/// What a client sees of a document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentView {
    /// Its id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Grouping for search.
    pub document_set: Option<String>,
    /// Content type.
    pub content_type: String,
    /// Ingest version (bumped by a re-ingest).
    pub version: i32,
    /// Pipeline status (see [`status`]).
    pub status: String,
    /// Chunks stored.
    pub chunks_total: Option<i32>,
    /// Chunks with a vector.
    pub chunks_embedded: i32,
    /// Chunks cut at the model's maximum length when embedded.
    pub truncated_chunks: i32,
    /// The summary, once written.
    pub summary: Option<String>,
    /// What went wrong, when failed.
    pub error: Option<String>,
    /// Model version that made the vectors.
    pub model: Option<String>,
    /// Size of the upload in bytes.
    pub bytes: i64,
    /// Free-form metadata.
    pub metadata: serde_json::Value,
    /// Unix ms: uploaded.
    pub created_at_ms: i64,
    /// Unix ms: last change.
    pub updated_at_ms: i64,
}

const VIEW_COLUMNS: &str = "id, name, document_set, content_type, version, status, chunks_total, \
    chunks_embedded, truncated_chunks, summary, error, model, octet_length(body)::int8, metadata, \
    (extract(epoch FROM created_at) * 1000)::int8, (extract(epoch FROM updated_at) * 1000)::int8";

fn view(row: &tokio_postgres::Row) -> DocumentView {
    DocumentView {
        id: row.get(0),
        name: row.get(1),
        document_set: row.get(2),
        content_type: row.get(3),
        version: row.get(4),
        status: row.get(5),
        chunks_total: row.get(6),
        chunks_embedded: row.get(7),
        truncated_chunks: row.get(8),
        summary: row.get(9),
        error: row.get(10),
        model: row.get(11),
        bytes: row.get::<_, Option<i64>>(12).unwrap_or(0),
        metadata: row.get(13),
        created_at_ms: row.get(14),
        updated_at_ms: row.get(15),
    }
}

/// Stores an uploaded document (status `queued`); returns its id.
pub async fn insert(pool: &Pool, doc: &NewDocument) -> Result<Uuid> {
    use sha2::Digest;
    let id = Uuid::now_v7();
    let sha = hex(&sha2::Sha256::digest(&doc.body));
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO documents (id, tenant, name, document_set, content_type, content_sha256, \
                 body, metadata, options) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &id,
                &doc.tenant,
                &doc.name,
                &doc.document_set,
                &doc.content_type,
                &sha,
                &doc.body,
                &doc.metadata,
                &serde_json::to_value(&doc.options)?,
            ],
        )
        .await?;
    Ok(id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One document of a tenant.
pub async fn get(pool: &Pool, tenant: &str, id: Uuid) -> Result<Option<DocumentView>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {VIEW_COLUMNS} FROM documents WHERE id = $1 AND tenant = $2"),
            &[&id, &tenant],
        )
        .await?;
    Ok(row.as_ref().map(view))
}

/// A page of a tenant's documents, newest first, with chunk counts from a
/// SQL aggregate.
pub async fn list(
    pool: &Pool,
    tenant: &str,
    document_set: Option<&str>,
    offset: i64,
    limit: i64,
) -> Result<(i64, Vec<(DocumentView, i64)>)> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {VIEW_COLUMNS}, n FROM ( \
                   SELECT d.*, c.n FROM documents d \
                   CROSS JOIN LATERAL (SELECT count(*) AS n FROM chunks WHERE document_id = d.id) c \
                   WHERE d.tenant = $1 AND ($2::text IS NULL OR d.document_set = $2) \
                   ORDER BY d.created_at DESC, d.id DESC OFFSET $3 LIMIT $4) d \
                 ORDER BY created_at DESC, id DESC"
            ),
            &[&tenant, &document_set, &offset, &limit],
        )
        .await?;
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM documents WHERE tenant = $1 AND ($2::text IS NULL OR document_set = $2)",
            &[&tenant, &document_set],
        )
        .await?
        .get(0);
    Ok((
        total,
        rows.iter()
            .map(|r| (view(r), r.get::<_, i64>(16)))
            .collect(),
    ))
}

/// Deletes a document with its chunks and vectors; false when absent.
pub async fn delete(pool: &Pool, tenant: &str, id: Uuid) -> Result<bool> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "DELETE FROM documents WHERE id = $1 AND tenant = $2",
            &[&id, &tenant],
        )
        .await?;
    Ok(n == 1)
}

/// What the ingest job needs of a document.
#[derive(Debug, Clone)]
pub struct Source {
    /// Content type.
    pub content_type: String,
    /// Raw bytes.
    pub body: Vec<u8>,
    /// Pipeline options.
    pub options: DocumentOptions,
    /// Current version.
    pub version: i32,
    /// Tenant.
    pub tenant: String,
}

/// Loads a document's bytes for ingestion and marks it `ingesting`.
pub async fn start_ingest(pool: &Pool, id: Uuid) -> Result<Option<Source>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "UPDATE documents SET status = 'ingesting', error = NULL, updated_at = now() \
             WHERE id = $1 RETURNING content_type, body, options, version, tenant",
            &[&id],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Source {
        content_type: row.get(0),
        body: row.get::<_, Option<Vec<u8>>>(1).unwrap_or_default(),
        options: serde_json::from_value(row.get(2)).unwrap_or_default(),
        version: row.get(3),
        tenant: row.get(4),
    }))
}

/// A chunk ready to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    /// Its text.
    pub text: String,
    /// Its length in model tokens.
    pub tokens: i32,
}

/// Replaces a document version's chunks and embed batches (idempotent: a
/// re-run stores the same set once) and moves it to `embedding`. Returns
/// the chunk ids of each embed batch. Chunk ids are derived from (document,
/// version, ordinal), so a re-run produces the same ids.
pub async fn store_chunks(
    pool: &Pool,
    id: Uuid,
    version: i32,
    text: &str,
    chunks: &[NewChunk],
    batch_size: usize,
) -> Result<Vec<Vec<Uuid>>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("DELETE FROM chunks WHERE document_id = $1", &[&id])
        .await?;
    tx.execute(
        "DELETE FROM document_embed_batches WHERE document_id = $1",
        &[&id],
    )
    .await?;
    let ids: Vec<Uuid> = (0..chunks.len())
        .map(|i| chunk_id(id, version, i))
        .collect();
    let ordinals: Vec<i32> = (0..chunks.len() as i32).collect();
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let tokens: Vec<i32> = chunks.iter().map(|c| c.tokens).collect();
    tx.execute(
        "INSERT INTO chunks (id, document_id, version, ordinal, text, token_count) \
         SELECT id, $2, $3, ord, txt, tok FROM unnest($1::uuid[], $4::int4[], $5::text[], $6::int4[]) \
           AS t(id, ord, txt, tok)",
        &[&ids, &id, &version, &ordinals, &texts, &tokens],
    )
    .await?;
    let batches: Vec<Vec<Uuid>> = ids.chunks(batch_size.max(1)).map(|b| b.to_vec()).collect();
    for (n, batch) in batches.iter().enumerate() {
        tx.execute(
            "INSERT INTO document_embed_batches (document_id, version, batch_no, chunk_ids) \
             VALUES ($1, $2, $3, $4)",
            &[&id, &version, &(n as i32), batch],
        )
        .await?;
    }
    tx.execute(
        "UPDATE documents SET status = 'embedding', text = $2, chunks_total = $3, \
             chunks_embedded = 0, embed_batches = $4, embed_batches_done = 0, \
             truncated_chunks = 0, summary = NULL, error = NULL, updated_at = now() \
         WHERE id = $1",
        &[&id, &text, &(chunks.len() as i32), &(batches.len() as i32)],
    )
    .await?;
    tx.commit().await?;
    Ok(batches)
}

/// The id of chunk `ordinal` of a document version (UUIDv5, deterministic).
pub fn chunk_id(document: Uuid, version: i32, ordinal: usize) -> Uuid {
    Uuid::new_v5(&document, format!("v{version}/chunk/{ordinal}").as_bytes())
}

/// A finished (ready or failed) document that asked for a completion
/// callback: its tenant, the callback URL and the document.
pub async fn finished_callback(
    pool: &Pool,
    id: Uuid,
) -> Result<Option<(String, String, DocumentView)>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT {VIEW_COLUMNS}, tenant, options->>'callback_url' FROM documents \
                 WHERE id = $1 AND status IN ('ready', 'failed') \
                   AND options->>'callback_url' IS NOT NULL"
            ),
            &[&id],
        )
        .await?;
    Ok(row.map(|r| (r.get(16), r.get(17), view(&r))))
}

/// Marks a document failed with `error` (nothing is left half-done: the
/// status says why it stopped).
pub async fn fail(pool: &Pool, id: Uuid, error: &str) -> Result<()> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE documents SET status = 'failed', error = $2, updated_at = now() WHERE id = $1",
            &[&id, &error],
        )
        .await?;
    Ok(())
}

/// The texts of some chunks, in the order asked.
pub async fn chunk_texts(pool: &Pool, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT c.id, c.text FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, n) \
             JOIN chunks c ON c.id = u.id ORDER BY u.n",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Where a document stands after an embed batch committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanIn {
    /// Other batches are still out.
    Waiting,
    /// This batch was the last and the document wants a summary (which
    /// must be enqueued — idempotently, as a re-run lands here too).
    Summarize,
    /// The document is ready.
    Ready,
    /// The document or this version is gone (deleted or re-ingested).
    Gone,
}

/// Stores one embed batch's vectors and advances the document, in one
/// transaction. A batch already stored changes nothing but still reports
/// where the document stands, so a re-run after a crash re-issues the
/// summary request it may have missed.
pub async fn store_embeddings(
    pool: &Pool,
    id: Uuid,
    version: i32,
    batch_no: i32,
    vectors: &[(Uuid, Vec<f32>)],
    model: &str,
    truncated: i32,
) -> Result<FanIn> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let flipped = tx
        .execute(
            "UPDATE document_embed_batches SET done = true \
             WHERE document_id = $1 AND version = $2 AND batch_no = $3 AND NOT done",
            &[&id, &version, &batch_no],
        )
        .await?;
    if flipped == 1 {
        let ids: Vec<Uuid> = vectors.iter().map(|(id, _)| *id).collect();
        let vecs: Vec<Vector> = vectors
            .iter()
            .map(|(_, v)| Vector::from(v.clone()))
            .collect();
        tx.execute(
            "UPDATE chunks c SET embedding = u.v, model_version = $3 \
             FROM unnest($1::uuid[], $2::vector[]) AS u(id, v) WHERE c.id = u.id",
            &[&ids, &vecs, &model],
        )
        .await?;
        tx.execute(
            "UPDATE documents SET embed_batches_done = embed_batches_done + 1, \
                 chunks_embedded = chunks_embedded + $2, truncated_chunks = truncated_chunks + $3, \
                 model = $4, updated_at = now(), \
                 status = CASE WHEN embed_batches_done + 1 < embed_batches THEN status \
                               WHEN (options->>'summarize')::bool IS DISTINCT FROM false THEN 'summarizing' \
                               ELSE 'ready' END \
             WHERE id = $1 AND version = $5",
            &[&id, &(ids.len() as i32), &truncated, &model, &version],
        )
        .await?;
    }
    let row = tx
        .query_opt(
            "SELECT status, version FROM documents WHERE id = $1",
            &[&id],
        )
        .await?;
    tx.commit().await?;
    Ok(match row {
        None => FanIn::Gone,
        Some(r) if r.get::<_, i32>(1) != version => FanIn::Gone,
        Some(r) => match r.get::<_, String>(0).as_str() {
            status::SUMMARIZING => FanIn::Summarize,
            status::READY => FanIn::Ready,
            _ => FanIn::Waiting,
        },
    })
}

/// The extracted text and the chunks (with vectors) of a document, for its
/// summary.
pub async fn for_summary(
    pool: &Pool,
    id: Uuid,
) -> Result<Option<(String, Vec<(String, Vec<f32>)>)>> {
    let client = pool.get().await?;
    let Some(doc) = client
        .query_opt(
            "SELECT coalesce(text, '') FROM documents WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let rows = client
        .query(
            "SELECT text, embedding FROM chunks WHERE document_id = $1 AND embedding IS NOT NULL \
             ORDER BY ordinal",
            &[&id],
        )
        .await?;
    let chunks = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, Vector>(1).to_vec()))
        .collect();
    Ok(Some((doc.get(0), chunks)))
}

/// Stores the summary and marks the document ready.
pub async fn store_summary(pool: &Pool, id: Uuid, summary: &str) -> Result<()> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE documents SET summary = $2, status = 'ready', updated_at = now() \
             WHERE id = $1 AND status IN ('summarizing', 'ready')",
            &[&id, &summary],
        )
        .await?;
    Ok(())
}

/// A search hit.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hit {
    /// The chunk.
    pub chunk_id: Uuid,
    /// Its document.
    pub document_id: Uuid,
    /// The document's name.
    pub document_name: String,
    /// Cosine similarity to the query (1 = same direction).
    pub score: f64,
    /// The chunk's text.
    pub text: String,
    /// The chunk's position in its document.
    pub ordinal: i32,
}

/// The `k` chunks nearest to `query` (cosine, HNSW index) among a tenant's
/// documents, optionally within one document set and matching a metadata
/// filter (JSON containment).
pub async fn search(
    pool: &Pool,
    tenant: &str,
    query: &[f32],
    k: i64,
    document_set: Option<&str>,
    filter: Option<&serde_json::Value>,
) -> Result<Vec<Hit>> {
    let client = pool.get().await?;
    let q = Vector::from(query.to_vec());
    let rows = client
        .query(
            "SELECT c.id, d.id, d.name, 1 - (c.embedding <=> $1) AS score, c.text, c.ordinal \
             FROM chunks c JOIN documents d ON d.id = c.document_id \
             WHERE c.embedding IS NOT NULL AND d.tenant = $2 \
               AND ($3::text IS NULL OR d.document_set = $3) \
               AND ($4::jsonb IS NULL OR d.metadata @> $4) \
             ORDER BY c.embedding <=> $1 LIMIT $5",
            &[&q, &tenant, &document_set, &filter, &k],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Hit {
            chunk_id: r.get(0),
            document_id: r.get(1),
            document_name: r.get(2),
            score: r.get(3),
            text: r.get(4),
            ordinal: r.get(5),
        })
        .collect())
}
