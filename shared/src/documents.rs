//! Documents and their chunks in Postgres: what the API stores on upload,
//! and what the pipeline's jobs read and write. The pipeline of a document
//! version runs as a workflow (its fan-in is the queue core's, see
//! `worker/src/pipeline/stages.rs`): embed batches mark themselves done
//! here, and the workflow's body moves the version from `embedding` to
//! `summarizing`/`ready` exactly once ([`finish_embedding`]).
//!
//! Every query a pipeline job runs names the job's tenant: a job whose
//! tenant does not own the document finds nothing (`None`) and changes
//! nothing, whatever ids it carries.
//!
//! Every write a job makes is idempotent: a document version's chunks and
//! embed batches are stored once (a re-run of its ingest finds them and
//! stores nothing), an embed batch flips its `done` flag once, and the
//! status moves on from `embedding` once, so a job re-run after a crash
//! neither duplicates chunks nor counts twice.
//!
//! An upload is atomic: [`insert_then`] stores the row and queues its ingest
//! job inside one transaction, so a refused push leaves no row; an ingest
//! that runs before that transaction commits waits for it ([`start_ingest`]).
//!
//! Search reads chunks two ways: [`search`] by the cosine distance of their
//! vectors (pgvector's HNSW index) and [`keyword_search`] by Postgres full
//! text (each chunk's `tsv`, kept by Postgres from its text in its
//! document's [language](LANGUAGES), under a GIN index); the API fuses the
//! two for hybrid search.

use std::future::Future;

use deadpool_postgres::{Object, Pool, Transaction};
use pgvector::Vector;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Result, jobs::InvalidArgs, models::EmbeddingModel};

/// Smallest chunk size (in model tokens) an upload may ask for.
pub const CHUNK_TOKENS_MIN: usize = 16;
/// Largest chunk size (in model tokens) an upload may ask for; the
/// chunker tokenises candidate chunks of up to this size many times over.
pub const CHUNK_TOKENS_MAX: usize = 8192;
/// The chunk size when an upload names none (the worker's chunker default,
/// `worker/src/pipeline/chunk.rs`); bounds the overlap of such an upload.
pub const DEFAULT_CHUNK_TOKENS: usize = 200;

/// The text search configurations Postgres ships (`pg_ts_config`): the
/// languages a document's chunks may be indexed in for keyword search
/// (stemming and stop words). `simple` lower-cases words and nothing else.
pub const LANGUAGES: &[&str] = &[
    "arabic",
    "armenian",
    "basque",
    "catalan",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hindi",
    "hungarian",
    "indonesian",
    "irish",
    "italian",
    "lithuanian",
    "nepali",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "serbian",
    "simple",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
    "yiddish",
];
/// The language of a document whose upload and set name none.
pub const DEFAULT_LANGUAGE: &str = "english";

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
    /// Target chunk size in tokens, 16 to 8,192 (default 200).
    #[serde(default)]
    pub chunk_tokens: Option<usize>,
    /// Overlap between chunks in tokens, at most half the chunk size
    /// (default 20).
    #[serde(default)]
    pub chunk_overlap: Option<usize>,
    /// Where to `POST` the signed document when it is ready or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The language its chunks are indexed in for keyword search, one of
    /// Postgres' text search configurations (`english`, `french`, `simple`,
    /// …). Default: its document set's, else `english`. A document set
    /// holds one language: another one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

fn yes() -> bool {
    true
}

impl DocumentOptions {
    /// Checks the chunking options: `chunk_tokens` within
    /// [`CHUNK_TOKENS_MIN`]`..=`[`CHUNK_TOKENS_MAX`], `chunk_overlap` at
    /// most half the chunk size; and the language, one of [`LANGUAGES`]. The
    /// error names the field.
    pub fn check(&self) -> Result<(), InvalidArgs> {
        if let Some(language) = &self.language
            && !LANGUAGES.contains(&language.as_str())
        {
            return Err(InvalidArgs {
                field: Some("options.language".into()),
                message: format!(
                    "language must be one of Postgres' text search configurations ({}), \
                     not {language:?}",
                    LANGUAGES.join(", ")
                ),
            });
        }
        let tokens = self.chunk_tokens.unwrap_or(DEFAULT_CHUNK_TOKENS);
        if !(CHUNK_TOKENS_MIN..=CHUNK_TOKENS_MAX).contains(&tokens) {
            return Err(InvalidArgs {
                field: Some("options.chunk_tokens".into()),
                message: format!(
                    "chunk_tokens must be between {CHUNK_TOKENS_MIN} and {CHUNK_TOKENS_MAX}, \
                     not {tokens}"
                ),
            });
        }
        if let Some(overlap) = self.chunk_overlap
            && overlap > tokens / 2
        {
            return Err(InvalidArgs {
                field: Some("options.chunk_overlap".into()),
                message: format!(
                    "chunk_overlap must be between 0 and half of chunk_tokens ({}), not {overlap}",
                    tokens / 2
                ),
            });
        }
        Ok(())
    }
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
    /// The language its chunks are indexed in for keyword search.
    #[serde(default = "default_language")]
    pub language: String,
}

fn default_language() -> String {
    DEFAULT_LANGUAGE.to_owned()
}

const VIEW_COLUMNS: &str = "id, name, document_set, content_type, version, status, chunks_total, \
    chunks_embedded, truncated_chunks, summary, error, model, octet_length(body)::int8, metadata, \
    (extract(epoch FROM created_at) * 1000)::int8, (extract(epoch FROM updated_at) * 1000)::int8, \
    language::text";

/// How many columns [`VIEW_COLUMNS`] holds: a query's own columns follow.
const VIEW_WIDTH: usize = 17;

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
        language: row.get(16),
    }
}

/// Stores an uploaded document (status `queued`) and runs `then` with its
/// new id (queueing its ingest job) inside the same transaction: the row is
/// committed only when `then` succeeds, so a refused push leaves no row.
/// The transaction holds the document's upload lock ([`upload_lock`]), so
/// an ingest job that runs before the commit waits for it instead of
/// finding nothing. A crash between `then` and the commit leaves a job
/// without its row, which ends as skipped ("not found") — never a row without a job.
///
/// The document's language is [`document_language`]'s: a language other
/// than its set's is refused ([`crate::Error::InvalidField`], nothing
/// stored), and so is a model other than its set's
/// ([`crate::document_sets::join`]).
pub async fn insert_then<T, E, F, Fut>(
    pool: &Pool,
    doc: &NewDocument,
    then: F,
) -> Result<(Uuid, T), E>
where
    F: FnOnce(Uuid) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<crate::Error>,
{
    use sha2::Digest;
    let id = Uuid::now_v7();
    let sha = hex(&sha2::Sha256::digest(&doc.body));
    let options = serde_json::to_value(&doc.options).map_err(crate::Error::from)?;
    let mut client = pool.get().await.map_err(crate::Error::from)?;
    let tx = client.transaction().await.map_err(crate::Error::from)?;
    let stored = async {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&upload_lock(id)])
            .await?;
        let language = document_language(&tx, doc).await?;
        if let Some(set) = doc.document_set.as_deref() {
            crate::document_sets::join(&tx, &doc.tenant, set, doc.options.model.as_deref()).await?;
        }
        tx.execute(
            "INSERT INTO documents (id, tenant, name, document_set, content_type, content_sha256, \
                 body, metadata, options, language) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::regconfig)",
            &[
                &id,
                &doc.tenant,
                &doc.name,
                &doc.document_set,
                &doc.content_type,
                &sha,
                &doc.body,
                &doc.metadata,
                &options,
                &language,
            ],
        )
        .await?;
        Ok::<_, crate::Error>(())
    };
    stored.await?;
    match then(id).await {
        Ok(out) => {
            tx.commit().await.map_err(crate::Error::from)?;
            Ok((id, out))
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// The language a new document's chunks are indexed in: its upload's
/// (`options.language`), else its set's (the language of the set's
/// documents), else [`DEFAULT_LANGUAGE`]. A set holds one language: an
/// upload naming another is refused ([`crate::Error::InvalidField`]). The first
/// uploads into a new set take the set's lock ([`set_lock`]) until they
/// commit, so two of them cannot give it two languages.
async fn document_language(tx: &Transaction<'_>, doc: &NewDocument) -> Result<String> {
    let own = doc.options.language.as_deref();
    let Some(set) = doc.document_set.as_deref() else {
        return Ok(own.unwrap_or(DEFAULT_LANGUAGE).to_owned());
    };
    let set_language = || async {
        let row = tx
            .query_opt(
                "SELECT language::text FROM documents \
                 WHERE tenant = $1 AND document_set = $2 LIMIT 1",
                &[&doc.tenant, &set],
            )
            .await?;
        Ok::<_, crate::Error>(row.map(|r| r.get::<_, String>(0)))
    };
    let mut found = set_language().await?;
    if found.is_none() {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&set_lock(&doc.tenant, set)],
        )
        .await?;
        found = set_language().await?;
    }
    match (found, own) {
        (Some(theirs), Some(own)) if theirs != own => Err(crate::Error::InvalidField {
            field: "options.language".into(),
            message: format!(
                "document set {set:?} is in {theirs}, not {own} (a set holds one language)"
            ),
        }),
        (Some(theirs), _) => Ok(theirs),
        (None, own) => Ok(own.unwrap_or(DEFAULT_LANGUAGE).to_owned()),
    }
}

/// The key of the advisory lock the first uploads into a document set hold
/// until they commit (64 bits of a SHA-256 of tenant and set).
fn set_lock(tenant: &str, set: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"hopper document set\0")
        .chain_update(tenant.as_bytes())
        .chain_update(b"\0")
        .chain_update(set.as_bytes())
        .finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// The key of the advisory lock an upload's transaction holds on its
/// document id until it commits or rolls back (64 random bits of the
/// UUIDv7).
pub fn upload_lock(id: Uuid) -> i64 {
    let b = id.as_bytes();
    i64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
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
            .map(|r| (view(r), r.get::<_, i64>(VIEW_WIDTH)))
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

/// One stored embed batch of a document version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// Its number within the version.
    pub batch_no: i32,
    /// Its chunks.
    pub chunk_ids: Vec<Uuid>,
    /// Whether its vectors are stored.
    pub done: bool,
}

/// A document version whose chunks and embed batches are stored already:
/// what a re-run of its ingest needs to finish the pipeline.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    /// The version.
    pub version: i32,
    /// Pipeline options.
    pub options: DocumentOptions,
    /// Its status now.
    pub status: String,
    /// Whether its summary is written.
    pub has_summary: bool,
    /// Its embed batches, by number.
    pub batches: Vec<StoredBatch>,
}

/// What an ingest job finds.
#[derive(Debug, Clone)]
pub enum IngestStart {
    /// The version is not chunked yet: extract and chunk it (the document is
    /// now `ingesting`).
    Fresh(Source),
    /// The version's chunks are stored (a re-run): nothing is re-chunked and
    /// the status is left alone.
    Stored(StoredVersion),
}

/// Starts an ingest of a tenant's document; `None` when the tenant has no
/// such document. A version not chunked yet is marked `ingesting` and its
/// bytes are returned; a version already chunked is returned as stored.
///
/// The job may run before the upload's transaction commits (the API queues
/// it inside that transaction): when the row is not there, this waits for
/// the upload's lock and looks once more.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres start_ingest", otel.kind = "client", db.system = "postgresql"))]
pub async fn start_ingest(pool: &Pool, tenant: &str, id: Uuid) -> Result<Option<IngestStart>> {
    let mut client = pool.get().await?;
    if let Some(start) = try_start_ingest(&mut client, tenant, id).await? {
        return Ok(Some(start));
    }
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&upload_lock(id)])
        .await?;
    try_start_ingest(&mut client, tenant, id).await
}

async fn try_start_ingest(
    client: &mut Object,
    tenant: &str,
    id: Uuid,
) -> Result<Option<IngestStart>> {
    let tx = client.transaction().await?;
    // The row lock orders this with a concurrent run's `store_chunks`.
    let Some(stored) = current_version(&tx, tenant, id, true).await? else {
        tx.commit().await?;
        return Ok(None);
    };
    let start = if stored.batches.is_empty() {
        let row = tx
            .query_one(
                "UPDATE documents SET status = 'ingesting', error = NULL, updated_at = now() \
                 WHERE id = $1 RETURNING content_type, body",
                &[&id],
            )
            .await?;
        IngestStart::Fresh(Source {
            content_type: row.get(0),
            body: row.get::<_, Option<Vec<u8>>>(1).unwrap_or_default(),
            options: stored.options,
            version: stored.version,
            tenant: tenant.to_owned(),
        })
    } else {
        IngestStart::Stored(stored)
    };
    tx.commit().await?;
    Ok(Some(start))
}

/// The tenant's document's current version with its embed batches (none
/// when it is not chunked yet), read in `tx` (`lock`: FOR UPDATE); `None`
/// when the tenant has no such document.
async fn current_version(
    tx: &Transaction<'_>,
    tenant: &str,
    id: Uuid,
    lock: bool,
) -> Result<Option<StoredVersion>> {
    let sql = if lock {
        "SELECT version, options, status, summary IS NOT NULL FROM documents \
         WHERE id = $1 AND tenant = $2 FOR UPDATE"
    } else {
        "SELECT version, options, status, summary IS NOT NULL FROM documents \
         WHERE id = $1 AND tenant = $2"
    };
    let Some(doc) = tx.query_opt(sql, &[&id, &tenant]).await? else {
        return Ok(None);
    };
    let version: i32 = doc.get(0);
    Ok(Some(StoredVersion {
        version,
        options: serde_json::from_value(doc.get(1)).unwrap_or_default(),
        status: doc.get(2),
        has_summary: doc.get(3),
        batches: stored_batches(tx, id, version).await?,
    }))
}

/// A version's embed batches, by number.
async fn stored_batches(tx: &Transaction<'_>, id: Uuid, version: i32) -> Result<Vec<StoredBatch>> {
    let rows = tx
        .query(
            "SELECT batch_no, chunk_ids, done FROM document_embed_batches \
             WHERE document_id = $1 AND version = $2 ORDER BY batch_no",
            &[&id, &version],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StoredBatch {
            batch_no: r.get(0),
            chunk_ids: r.get(1),
            done: r.get(2),
        })
        .collect())
}

/// A tenant's document version whose chunks are stored, as it stands:
/// `None` when the tenant has no such document or its current version is
/// not chunked yet. Changes nothing (see [`start_ingest`] for the ingest's
/// own look).
pub async fn stored_version(pool: &Pool, tenant: &str, id: Uuid) -> Result<Option<StoredVersion>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let stored = current_version(&tx, tenant, id, false).await?;
    tx.commit().await?;
    Ok(stored.filter(|s| !s.batches.is_empty()))
}

/// Moves a `failed` document version back to `embedding` when a re-run
/// starts the next generation of its pipeline's workflow (the batches not
/// done, then the body that moves it on, [`finish_embedding`]); false when
/// it was not failed.
pub async fn reopen(pool: &Pool, tenant: &str, id: Uuid, version: i32) -> Result<bool> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "UPDATE documents SET status = 'embedding', error = NULL, updated_at = now() \
             WHERE id = $1 AND tenant = $2 AND version = $3 AND status = 'failed'",
            &[&id, &tenant, &version],
        )
        .await?;
    Ok(n == 1)
}

/// A chunk ready to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    /// Its text.
    pub text: String,
    /// Its length in model tokens.
    pub tokens: i32,
}

/// Stores a document version's chunks and embed batches and moves it to
/// `embedding`, once: when the version's batches exist already (a
/// concurrent or earlier run of the same ingest stored them) nothing is
/// replaced and the stored batches are returned. `None` when the tenant has
/// no such document version. Chunk ids are derived from (document, version,
/// ordinal), so every run computes the same ids.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres store_chunks", otel.kind = "client", db.system = "postgresql"))]
pub async fn store_chunks(
    pool: &Pool,
    tenant: &str,
    id: Uuid,
    version: i32,
    text: &str,
    chunks: &[NewChunk],
    batch_size: usize,
) -> Result<Option<Vec<StoredBatch>>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let owned = tx
        .query_opt(
            "SELECT 1 FROM documents WHERE id = $1 AND tenant = $2 AND version = $3 FOR UPDATE",
            &[&id, &tenant, &version],
        )
        .await?;
    if owned.is_none() {
        tx.commit().await?;
        return Ok(None);
    }
    let existing = stored_batches(&tx, id, version).await?;
    if !existing.is_empty() {
        tx.commit().await?;
        return Ok(Some(existing));
    }
    // No batch of this version: whatever chunks exist are another version's.
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
    // Each chunk is indexed for keyword search in its document's language
    // (its `tsv` is a column Postgres generates from `lang` and `text`).
    tx.execute(
        "INSERT INTO chunks (id, document_id, version, ordinal, text, token_count, lang) \
         SELECT id, $2, $3, ord, txt, tok, (SELECT language FROM documents WHERE id = $2) \
         FROM unnest($1::uuid[], $4::int4[], $5::text[], $6::int4[]) AS t(id, ord, txt, tok)",
        &[&ids, &id, &version, &ordinals, &texts, &tokens],
    )
    .await?;
    let batches: Vec<StoredBatch> = ids
        .chunks(batch_size.max(1))
        .enumerate()
        .map(|(n, b)| StoredBatch {
            batch_no: n as i32,
            chunk_ids: b.to_vec(),
            done: false,
        })
        .collect();
    for batch in &batches {
        tx.execute(
            "INSERT INTO document_embed_batches (document_id, version, batch_no, chunk_ids) \
             VALUES ($1, $2, $3, $4)",
            &[&id, &version, &batch.batch_no, &batch.chunk_ids],
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
    Ok(Some(batches))
}

/// The id of chunk `ordinal` of a document version (UUIDv5, deterministic).
pub fn chunk_id(document: Uuid, version: i32, ordinal: usize) -> Uuid {
    Uuid::new_v5(&document, format!("v{version}/chunk/{ordinal}").as_bytes())
}

/// The id of generation `generation` of the workflow that runs a document
/// version's pipeline (UUIDv5, deterministic): every run of its ingest
/// computes the same ids, so a re-run finds the workflow a run before it
/// created instead of starting a second one.
pub fn workflow_id(document: Uuid, version: i32, generation: u32) -> Uuid {
    Uuid::new_v5(
        &document,
        format!("v{version}/workflow/{generation}").as_bytes(),
    )
}

/// A tenant's finished (ready or failed) document that asked for a
/// completion callback: the callback URL and the document.
pub async fn finished_callback(
    pool: &Pool,
    tenant: &str,
    id: Uuid,
) -> Result<Option<(String, DocumentView)>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT {VIEW_COLUMNS}, options->>'callback_url' FROM documents \
                 WHERE id = $1 AND tenant = $2 AND status IN ('ready', 'failed') \
                   AND options->>'callback_url' IS NOT NULL"
            ),
            &[&id, &tenant],
        )
        .await?;
    Ok(row.map(|r| (r.get(VIEW_WIDTH), view(&r))))
}

/// Marks a tenant's document failed with `error` (nothing is left
/// half-done: the status says why it stopped); false when nothing changed.
/// A `ready` document stays ready: it is complete, whatever failed since
/// was redundant.
pub async fn fail(pool: &Pool, tenant: &str, id: Uuid, error: &str) -> Result<bool> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "UPDATE documents SET status = 'failed', error = $3, updated_at = now() \
             WHERE id = $1 AND tenant = $2 AND status <> 'ready'",
            &[&id, &tenant, &error],
        )
        .await?;
    Ok(n == 1)
}

/// The texts of one embed batch of a tenant's document version, in batch
/// order, read from the stored batch (not from the job's arguments).
/// `None` when the tenant has no such document; empty when the document
/// has no such batch (another version's).
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres batch_texts", otel.kind = "client", db.system = "postgresql"))]
pub async fn batch_texts(
    pool: &Pool,
    tenant: &str,
    id: Uuid,
    version: i32,
    batch_no: i32,
) -> Result<Option<Vec<(Uuid, String)>>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT c.id, c.text FROM documents d \
             LEFT JOIN document_embed_batches b \
               ON b.document_id = d.id AND b.version = $3 AND b.batch_no = $4 \
             LEFT JOIN LATERAL unnest(b.chunk_ids) WITH ORDINALITY AS u(id, n) ON true \
             LEFT JOIN chunks c ON c.id = u.id AND c.document_id = d.id \
             WHERE d.id = $1 AND d.tenant = $2 ORDER BY u.n",
            &[&id, &tenant, &version, &batch_no],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.iter()
            .filter_map(|r| Some((r.get::<_, Option<Uuid>>(0)?, r.get::<_, Option<String>>(1)?)))
            .collect(),
    ))
}

/// What storing an embed batch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStored {
    /// This call stored the vectors (false: a re-run found them stored, or
    /// the version was replaced).
    pub stored: bool,
    /// Every embed batch of this version is done now (false when the
    /// version was replaced).
    pub all_done: bool,
}

/// Stores one embed batch's vectors (of `model`) and counts them, in one
/// transaction; a batch already stored changes nothing. A document in a
/// set stores only while the set still uses `model`
/// ([`crate::document_sets::check_model`]: an error, and the job embeds
/// again, when a re-embed switched it meanwhile). Whether the document
/// moves on is not decided here: the body of the version's workflow does
/// that once every batch succeeded ([`finish_embedding`]). `None` when the
/// tenant has no such document.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres store_embeddings", otel.kind = "client", db.system = "postgresql"))]
#[allow(clippy::too_many_arguments)]
pub async fn store_embeddings(
    pool: &Pool,
    tenant: &str,
    id: Uuid,
    version: i32,
    batch_no: i32,
    vectors: &[(Uuid, Vec<f32>)],
    model: &EmbeddingModel,
    truncated: i32,
) -> Result<Option<BatchStored>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    crate::document_sets::check_model(&tx, tenant, id, &model.model).await?;
    let flipped = tx
        .execute(
            "UPDATE document_embed_batches b SET done = true FROM documents d \
             WHERE b.document_id = $1 AND b.version = $2 AND b.batch_no = $3 AND NOT b.done \
               AND d.id = b.document_id AND d.tenant = $4",
            &[&id, &version, &batch_no, &tenant],
        )
        .await?;
    if flipped == 1 {
        // Only this version's chunks: a re-ingest may have replaced them.
        let stored =
            crate::document_sets::insert_vectors(&tx, model, vectors, Some((id, version))).await?;
        tx.execute(
            "UPDATE documents SET embed_batches_done = embed_batches_done + 1, \
                 chunks_embedded = chunks_embedded + $2, truncated_chunks = truncated_chunks + $3, \
                 model = $4, updated_at = now() \
             WHERE id = $1 AND version = $5 AND tenant = $6",
            &[
                &id,
                &(stored as i32),
                &truncated,
                &model.model,
                &version,
                &tenant,
            ],
        )
        .await?;
    }
    let row = tx
        .query_opt(
            "SELECT version = $3 AND embed_batches_done >= embed_batches FROM documents \
             WHERE id = $1 AND tenant = $2",
            &[&id, &tenant, &version],
        )
        .await?;
    tx.commit().await?;
    Ok(row.map(|r| BatchStored {
        stored: flipped == 1,
        all_done: r.get(0),
    }))
}

/// What the body of a document version's workflow does, once every embed
/// batch it waited for succeeded ([`finish_embedding`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Write the summary: the version moved to `summarizing` now, or was
    /// there already (a re-run of the body).
    Summarize,
    /// Nothing more to do: the version moved to `ready` now, or was ready
    /// already (a re-run); its `document.finished` callback is due.
    Ready,
    /// Not this run's to finish: the document holds another version now,
    /// or is `failed` (another job gave up on it); its status.
    Passed(String),
    /// Some embed batches are not done: the workflow ran a body before its
    /// header was complete, which must not happen.
    Unembedded {
        /// Batches done.
        done: i32,
        /// Batches in all.
        total: i32,
    },
}

/// The fan-in's effect, run by the body of a version's workflow (exactly
/// once per version, whatever re-runs): moves an `embedding` version whose
/// batches are all done to `summarizing` (when it asked for a summary) or
/// `ready`, and says what is left. `version` is the version the workflow
/// ran for (`None`: the current one). `None` when the tenant has no such
/// document.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres finish_embedding", otel.kind = "client", db.system = "postgresql"))]
pub async fn finish_embedding(
    pool: &Pool,
    tenant: &str,
    id: Uuid,
    version: Option<i32>,
) -> Result<Option<Finish>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "WITH moved AS ( \
                 UPDATE documents SET updated_at = now(), \
                     status = CASE WHEN (options->>'summarize')::bool IS DISTINCT FROM false \
                                   THEN 'summarizing' ELSE 'ready' END \
                 WHERE id = $1 AND tenant = $2 AND ($3::int4 IS NULL OR version = $3) \
                   AND status = 'embedding' AND embed_batches_done >= embed_batches \
                 RETURNING status) \
             SELECT coalesce((SELECT status FROM moved), d.status), \
                    $3::int4 IS NULL OR d.version = $3, d.embed_batches_done, d.embed_batches \
             FROM documents d WHERE d.id = $1 AND d.tenant = $2",
            &[&id, &tenant, &version],
        )
        .await?;
    Ok(row.map(|r| {
        let (status, this_version): (String, bool) = (r.get(0), r.get(1));
        let (done, total): (i32, i32) = (r.get(2), r.get(3));
        match status.as_str() {
            _ if !this_version => Finish::Passed(status),
            status::SUMMARIZING => Finish::Summarize,
            status::READY => Finish::Ready,
            status::EMBEDDING => Finish::Unembedded { done, total },
            _ => Finish::Passed(status),
        }
    }))
}

/// What a summary is made from: a document's extracted text, and its
/// chunks' texts with their vectors, in order.
pub type SummaryInput = (String, Vec<(String, Vec<f32>)>);

/// The extracted text and the chunks (with vectors) of a tenant's document,
/// for its summary; `None` when the tenant has no such document.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres for_summary", otel.kind = "client", db.system = "postgresql"))]
pub async fn for_summary(pool: &Pool, tenant: &str, id: Uuid) -> Result<Option<SummaryInput>> {
    let client = pool.get().await?;
    let Some(doc) = client
        .query_opt(
            "SELECT coalesce(text, ''), version FROM documents WHERE id = $1 AND tenant = $2",
            &[&id, &tenant],
        )
        .await?
    else {
        return Ok(None);
    };
    let version: i32 = doc.get(1);
    // The vectors of the model the document was embedded with (a re-embed
    // may have added another's).
    let rows = client
        .query(
            "SELECT c.text, v.embedding FROM documents d \
             JOIN chunks c ON c.document_id = d.id AND c.version = $2 \
             JOIN embedding_models m ON m.model = d.model \
             JOIN chunk_vectors v ON v.chunk_id = c.id AND v.model_id = m.id \
             WHERE d.id = $1 ORDER BY c.ordinal",
            &[&id, &version],
        )
        .await?;
    let chunks = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, Vector>(1).to_vec()))
        .collect();
    Ok(Some((doc.get(0), chunks)))
}

/// Stores the summary of a tenant's document and marks it ready; false when
/// the tenant has no such document waiting for one.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres store_summary", otel.kind = "client", db.system = "postgresql"))]
pub async fn store_summary(pool: &Pool, tenant: &str, id: Uuid, summary: &str) -> Result<bool> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "UPDATE documents SET summary = $3, status = 'ready', updated_at = now() \
             WHERE id = $1 AND tenant = $2 AND status IN ('summarizing', 'ready')",
            &[&id, &tenant, &summary],
        )
        .await?;
    Ok(n == 1)
}

/// How `POST /v1/search` ranks chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SearchMode {
    /// Nearest vectors (cosine): finds paraphrases, needs the query embedded.
    #[default]
    Vector,
    /// Postgres full text (`websearch_to_tsquery`, ranked by `ts_rank_cd`):
    /// finds exact words and identifiers, needs no embedding.
    Keyword,
    /// Both, fused by reciprocal rank fusion.
    Hybrid,
}

impl SearchMode {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Keyword => "keyword",
            Self::Hybrid => "hybrid",
        }
    }
}

/// Where a search looks: one tenant's chunks, optionally within one
/// document set and among documents whose metadata contains `filter`.
#[derive(Debug, Clone, Copy)]
pub struct SearchScope<'a> {
    /// The tenant whose documents are searched.
    pub tenant: &'a str,
    /// Only this document set.
    pub document_set: Option<&'a str>,
    /// Only documents whose metadata contains this object (JSON containment).
    pub filter: Option<&'a serde_json::Value>,
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
    /// Higher is better. `vector`: cosine similarity to the query (1 = same
    /// direction); `keyword`: `ts_rank_cd`; `hybrid`: the fused score,
    /// Σ weight / (60 + rank) over the two lists.
    pub score: f64,
    /// The chunk's text.
    pub text: String,
    /// The chunk's position in its document.
    pub ordinal: i32,
    /// `hybrid` only: its rank among the nearest vectors (1 = nearest);
    /// absent when it was not among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub vector_rank: Option<u32>,
    /// `hybrid` only: its rank among the keyword matches (1 = best);
    /// absent when it was not among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub keyword_rank: Option<u32>,
}

fn hits(rows: &[tokio_postgres::Row]) -> Vec<Hit> {
    rows.iter()
        .map(|r| Hit {
            chunk_id: r.get(0),
            document_id: r.get(1),
            document_name: r.get(2),
            score: r.get(3),
            text: r.get(4),
            ordinal: r.get(5),
            vector_rank: None,
            keyword_rank: None,
        })
        .collect()
}

/// How many candidates pgvector's HNSW index gathers (`hnsw.ef_search`,
/// set on every connection by [`crate::db::pool_for`]; pgvector's own
/// default is 40): a search for more rows widens it. `scripts/bench/search`
/// at 100k real MiniLM chunks, recall@10 against exact search: 0.958 at 40,
/// 0.983 at 100, for +1.5 ms of median SQL time.
pub const HNSW_EF_SEARCH_DEFAULT: i64 = 100;
/// The widest candidate list pgvector allows.
const HNSW_EF_SEARCH_MAX: i64 = 1000;

/// The `k` chunks nearest to `query` (cosine) among the vectors of `model`
/// in `scope`, through that model's HNSW index. The index gathers
/// [`HNSW_EF_SEARCH_DEFAULT`] candidates; for more than that (hybrid
/// search's candidate lists, up to 400) its list is widened to `k` for this query alone
/// (`SET LOCAL` in a transaction of its own), so up to `k` hits come back.
/// Connections scan the index iteratively (`hnsw.iterative_scan`, set by
/// [`crate::db::pool_for`]): when the tenant, set or filter leave fewer
/// than `k` of the candidates, the scan goes on instead of returning fewer.
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres search", otel.kind = "client", db.system = "postgresql"))]
pub async fn search(
    pool: &Pool,
    scope: SearchScope<'_>,
    model: &EmbeddingModel,
    query: &[f32],
    k: i64,
) -> Result<Vec<Hit>> {
    if query.len() != model.dim as usize {
        return Err(crate::Error::Invalid(format!(
            "a query vector of {} floats for model {} ({}-d)",
            query.len(),
            model.model,
            model.dim
        )));
    }
    let mut client = pool.get().await?;
    let query = Vector::from(query.to_vec());
    if k <= HNSW_EF_SEARCH_DEFAULT {
        return nearest(&**client, scope, model, &query, k).await;
    }
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL hnsw.ef_search = {}",
        k.min(HNSW_EF_SEARCH_MAX)
    ))
    .await?;
    let hits = nearest(&*tx, scope, model, &query, k).await?;
    tx.commit().await?;
    Ok(hits)
}

/// The nearest-vector query of [`search`], on `client` (a connection or a
/// transaction). The distance and the model's predicate are spelled as its
/// partial index is ([`EmbeddingModel::distance_sql`]); the outer `ORDER
/// BY` restores the exact order an iterative scan relaxes.
async fn nearest(
    client: &impl tokio_postgres::GenericClient,
    scope: SearchScope<'_>,
    model: &EmbeddingModel,
    query: &Vector,
    k: i64,
) -> Result<Vec<Hit>> {
    let distance = model.distance_sql("$1");
    let rows = client
        .query(
            &format!(
                "SELECT * FROM ( \
                     SELECT c.id, d.id, d.name, 1 - ({distance}) AS score, c.text, c.ordinal \
                     FROM chunk_vectors v JOIN chunks c ON c.id = v.chunk_id \
                     JOIN documents d ON d.id = c.document_id \
                     WHERE {predicate} AND d.tenant = $2 \
                       AND ($3::text IS NULL OR d.document_set = $3) \
                       AND ($4::jsonb IS NULL OR d.metadata @> $4) \
                     ORDER BY {distance} LIMIT $5) hits \
                 ORDER BY score DESC",
                predicate = model.predicate_sql()
            ),
            &[query, &scope.tenant, &scope.document_set, &scope.filter, &k],
        )
        .await?;
    Ok(hits(&rows))
}

/// The `k` chunks in `scope` that match `query` as a web search would
/// (`websearch_to_tsquery`: every word, `"quoted phrases"`, `or`, `-not`),
/// best first by `ts_rank_cd`. The query is read in the language of each
/// document it may match (a set holds one language; without a set, each
/// language the tenant's documents use), through the GIN index on the
/// chunks' `tsv`. A query of stop words only matches nothing, and so does
/// one that only excludes (`-word`, `a or -b`: `querytree` says no index
/// can serve it, and it would rank every other chunk at 0).
#[tracing::instrument(name = "postgres", skip_all, fields(otel.name = "postgres keyword_search", otel.kind = "client", db.system = "postgresql"))]
pub async fn keyword_search(
    pool: &Pool,
    scope: SearchScope<'_>,
    query: &str,
    k: i64,
) -> Result<Vec<Hit>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            // One tsquery per language, computed once (materialized: not
            // once per document row), each matched through the GIN index
            // against the chunks of that language.
            "WITH q AS MATERIALIZED ( \
                 SELECT l.language, websearch_to_tsquery(l.language, $1) AS tsq \
                 FROM (SELECT DISTINCT language FROM documents \
                       WHERE tenant = $2 AND ($3::text IS NULL OR document_set = $3)) l) \
             SELECT c.id, d.id, d.name, ts_rank_cd(c.tsv, q.tsq)::float8 AS score, c.text, \
                 c.ordinal \
             FROM q JOIN chunks c ON c.lang = q.language AND c.tsv @@ q.tsq \
             JOIN documents d ON d.id = c.document_id \
             WHERE numnode(q.tsq) > 0 AND querytree(q.tsq) <> 'T' AND d.tenant = $2 \
               AND ($3::text IS NULL OR d.document_set = $3) \
               AND ($4::jsonb IS NULL OR d.metadata @> $4) \
             ORDER BY score DESC, c.id LIMIT $5",
            &[
                &query,
                &scope.tenant,
                &scope.document_set,
                &scope.filter,
                &k,
            ],
        )
        .await?;
    Ok(hits(&rows))
}
