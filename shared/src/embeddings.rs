//! Vectors of large `embed` jobs, kept in Postgres (`embed_results`) rather
//! than inline in the job's result: a job over [`INLINE_VECTORS`] texts
//! returns a `vectors_url` instead, served by `GET /v1/jobs/{id}/vectors`.
//! Stored as f32 little-endian bytes; written by an idempotent upsert (a
//! re-run of the job replaces its own row).

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::error::Result;

/// Texts up to which an embed job returns its vectors inline.
pub const INLINE_VECTORS: usize = 64;

/// The embedding cache's key of `text` embedded by `model` (`name@version`)
/// under key prefix `prefix`: `{<prefix>:embcache}:<model>:<sha256 hex>` of
/// the text with every run of whitespace made one space and the ends
/// trimmed. Written by the workers (`worker/src/pipeline/cache.rs`), read
/// by the API for search queries (`api/src/query_vectors.rs`).
pub fn cache_key(prefix: &str, model: &str, text: &str) -> String {
    use sha2::Digest;
    let normalised = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let digest = sha2::Sha256::digest(normalised.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{{{prefix}:embcache}}:{model}:{hex}")
}

/// `v` as the little-endian f32 bytes the embedding cache, the query lane
/// and `embed_results` hold.
pub fn vector_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The f32s of little-endian `bytes` (a trailing partial float is ignored).
pub fn vector_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A stored result: its model, dimension and vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVectors {
    /// Model version that made them.
    pub model: String,
    /// Floats per vector.
    pub dim: usize,
    /// The vectors, in the job's order.
    pub vectors: Vec<Vec<f32>>,
}

/// Stores (or replaces) the vectors of job `id`.
pub async fn store(
    pool: &Pool,
    id: Uuid,
    tenant: &str,
    model: &str,
    dim: usize,
    vectors: &[Vec<f32>],
) -> Result<()> {
    let mut bytes = Vec::with_capacity(vectors.len() * dim * 4);
    for v in vectors {
        bytes.extend(vector_to_bytes(v));
    }
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO embed_results (job_id, tenant, model, dim, count, vectors) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (job_id) DO UPDATE SET model = EXCLUDED.model, dim = EXCLUDED.dim, \
                 count = EXCLUDED.count, vectors = EXCLUDED.vectors",
            &[
                &id,
                &tenant,
                &model,
                &(dim as i32),
                &(vectors.len() as i32),
                &bytes,
            ],
        )
        .await?;
    Ok(())
}

/// The vectors of job `id`, if it belongs to `tenant` and stored any.
pub async fn load(pool: &Pool, id: Uuid, tenant: &str) -> Result<Option<StoredVectors>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT model, dim, vectors FROM embed_results WHERE job_id = $1 AND tenant = $2",
            &[&id, &tenant],
        )
        .await?;
    Ok(row.map(|r| {
        let dim = r.get::<_, i32>(1).max(1) as usize;
        let bytes: Vec<u8> = r.get(2);
        let floats = vector_from_bytes(&bytes);
        StoredVectors {
            model: r.get(0),
            dim,
            vectors: floats.chunks(dim).map(<[f32]>::to_vec).collect(),
        }
    }))
}
