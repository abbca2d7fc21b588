//! Handlers of the pipeline's kinds. What they share travels as
//! `Data<Pipeline>`.

use std::sync::Arc;

use apalis_core::{error::BoxDynError, task::data::Data};
use deadpool_postgres::Pool;
use hopper_queue::{JobContext, Permanent, PushOptions, QueueClient};
use hopper_shared::{
    documents::{self, FanIn},
    embeddings::{self, INLINE_VECTORS},
    jobs::{ChunkBatch, EmbedArgs, IngestArgs, JobKind, SummarizeArgs},
    metrics as m,
};
use serde_json::{Value, json};

use crate::{
    embed::{EmbedError, EmbedOutput, Embedder, ModelRegistry},
    pipeline::{
        cache::EmbedCache,
        chunk::{self, TokenCounter},
        extract,
        llm::{LlmError, LlmSummarizer},
        summary,
    },
};

/// Chunks per embed job of a document.
pub const EMBED_BATCH: usize = 32;

/// What the pipeline's handlers share.
#[derive(Clone)]
pub struct Pipeline {
    /// Postgres.
    pub pool: Pool,
    /// The queues (to fan out).
    pub queue: QueueClient,
    /// The default model's tokenizer, for chunking.
    pub tokens: Option<TokenCounter>,
    /// Loaded embedding models (embed workers only).
    pub models: Option<Arc<ModelRegistry>>,
    /// Vectors of texts seen before.
    pub cache: EmbedCache,
    /// The chat endpoint for summaries, when configured.
    pub llm: Option<Arc<LlmSummarizer>>,
}

impl Pipeline {
    /// Embeds `texts` with `embedder`, taking what it can from the cache
    /// and caching the rest. A cache outage only costs speed.
    async fn embed_cached(
        &self,
        embedder: &Embedder,
        texts: Vec<String>,
    ) -> Result<EmbedOutput, EmbedError> {
        let version = format!("{}@{}", embedder.name(), embedder.version());
        let cached = self.cache.get(&version, &texts).await.unwrap_or_else(|e| {
            tracing::warn!("embedding cache unavailable: {e}");
            vec![None; texts.len()]
        });
        let misses: Vec<usize> = (0..texts.len()).filter(|&i| cached[i].is_none()).collect();
        metrics::counter!(m::EMBED_CACHE_HITS).increment((texts.len() - misses.len()) as u64);
        metrics::counter!(m::EMBED_CACHE_MISSES).increment(misses.len() as u64);
        let mut out = EmbedOutput {
            vectors: Vec::new(),
            truncated: 0,
            model_version: version.clone(),
        };
        let mut fresh = Vec::new();
        if !misses.is_empty() {
            let todo: Vec<String> = misses.iter().map(|&i| texts[i].clone()).collect();
            let computed = embedder.embed(todo).await?;
            out.truncated = computed.truncated;
            out.model_version = computed.model_version;
            fresh = computed.vectors;
            let entries: Vec<_> = misses
                .iter()
                .map(|&i| &texts[i])
                .zip(fresh.iter())
                .collect();
            if let Err(e) = self.cache.put(&version, &entries).await {
                tracing::warn!("embedding cache not written: {e}");
            }
            export_stats(embedder);
        }
        let mut fresh = fresh.into_iter();
        out.vectors = cached
            .into_iter()
            .map(|c| c.unwrap_or_else(|| fresh.next().unwrap_or_default()))
            .collect();
        Ok(out)
    }
}

/// Publishes the inference loop's counters as metrics.
fn export_stats(embedder: &Embedder) {
    let s = embedder.stats();
    let model = embedder.name().to_owned();
    metrics::counter!(m::EMBED_FORWARD_PASSES, "model" => model.clone()).absolute(s.forward_passes);
    metrics::counter!(m::EMBED_TEXTS, "model" => model.clone()).absolute(s.texts_embedded);
    metrics::counter!(m::EMBED_TOKENS, "model" => model.clone()).absolute(s.tokens_real);
    metrics::counter!(m::EMBED_PADDED_TOKENS, "model" => model.clone()).absolute(s.tokens_padded);
    metrics::counter!(m::EMBED_TRUNCATED_TEXTS, "model" => model.clone())
        .absolute(s.truncated_texts);
    metrics::gauge!(m::EMBED_MAX_BATCH_SIZE, "model" => model.clone()).set(s.max_batch_size as f64);
    metrics::counter!(m::EMBED_FORWARD_SECONDS, "model" => model)
        .absolute(s.forward_seconds as u64);
}

/// Marks the document failed when this was the job's last attempt, so a
/// document never hangs in a running state after its jobs gave up.
async fn give_up_if_last(p: &Pipeline, job: &JobContext, doc: uuid::Uuid, error: &str) {
    if job.attempt >= job.max_attempts {
        fail_document(p, doc, error).await;
    }
}

/// Marks the document failed and sends its callback.
async fn fail_document(p: &Pipeline, doc: uuid::Uuid, error: &str) {
    if documents::fail(&p.pool, doc, error).await.is_ok() {
        notify_finished(p, doc).await;
    }
}

/// Queues the `document.finished` callback of a document that is now ready
/// or failed, if it asked for one (once per document version and status).
async fn notify_finished(p: &Pipeline, doc: uuid::Uuid) {
    let found = match documents::finished_callback(&p.pool, doc).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(document = %doc, "cannot read the document's callback: {e}");
            return;
        }
    };
    let Some((tenant, url, view)) = found else {
        return;
    };
    let key = format!("webhook:doc:{doc}:v{}:{}", view.version, view.status);
    let body = json!({ "event": "document.finished", "document": view });
    if let Err(e) = p
        .queue
        .push_callback(&url, "document.finished", body, &tenant, key)
        .await
    {
        tracing::warn!(document = %doc, "document callback not queued: {e}");
    }
}

/// `ingest`: extract the text, chunk it by tokens, store the chunks (replacing
/// this version's), and fan out one embed job per batch of chunks.
pub async fn ingest(
    args: IngestArgs,
    job: Data<JobContext>,
    p: Data<Pipeline>,
) -> Result<Value, BoxDynError> {
    let doc = args.document_id;
    match ingest_inner(&p, doc, &job).await {
        Ok(v) => Ok(v),
        Err(e) => {
            if e.downcast_ref::<Permanent>().is_some() {
                fail_document(&p, doc, &e.to_string()).await;
            } else {
                give_up_if_last(&p, &job, doc, &e.to_string()).await;
            }
            Err(e)
        }
    }
}

async fn ingest_inner(
    p: &Pipeline,
    doc: uuid::Uuid,
    job: &JobContext,
) -> Result<Value, BoxDynError> {
    let Some(src) = documents::start_ingest(&p.pool, doc).await? else {
        return Ok(json!({ "skipped": "the document was deleted" }));
    };
    let text =
        extract::extract(&src.content_type, &src.body).map_err(|e| Permanent(e.to_string()))?;
    let counter = p
        .tokens
        .as_ref()
        .ok_or_else(|| Permanent("this worker has no tokenizer (HOPPER_MODEL_DIR)".into()))?;
    let opts = &src.options;
    let chunks = chunk::chunk(
        &text,
        src.content_type == "text/markdown",
        counter,
        opts.chunk_tokens.unwrap_or(chunk::DEFAULT_TOKENS),
        opts.chunk_overlap.unwrap_or(chunk::DEFAULT_OVERLAP),
    )?;
    if chunks.is_empty() {
        return Err(Permanent(extract::ExtractError::Empty.to_string()).into());
    }
    let batches =
        documents::store_chunks(&p.pool, doc, src.version, &text, &chunks, EMBED_BATCH).await?;
    for (n, chunk_ids) in batches.iter().enumerate() {
        let args = EmbedArgs {
            texts: Vec::new(),
            batch: Some(ChunkBatch {
                document_id: doc,
                version: src.version,
                batch_no: n as i32,
                chunk_ids: chunk_ids.clone(),
            }),
            model: opts.model.clone(),
        };
        // Keyed by document version and batch: a re-run of this job after a
        // crash enqueues nothing twice.
        let push = PushOptions {
            idempotency_key: Some(format!("doc:{doc}:v{}:embed:{n}", src.version)),
            request_id: job.request_id.clone(),
            tenant: Some(job.tenant.to_string()),
            ..Default::default()
        };
        p.queue
            .push(JobKind::Embed, &serde_json::to_value(&args)?, &push)
            .await?;
    }
    Ok(json!({ "chunks": chunks.len(), "embed_batches": batches.len(), "chars": text.len() }))
}

/// `embed`: vectors for free texts (returned), or for a batch of a
/// document's chunks (stored, then the fan-in).
pub async fn embed(
    args: EmbedArgs,
    job: Data<JobContext>,
    p: Data<Pipeline>,
) -> Result<Value, BoxDynError> {
    let models = p
        .models
        .as_ref()
        .ok_or_else(|| Permanent("this worker has no embedding model loaded".into()))?;
    let embedder = models
        .resolve(args.model.as_deref())
        .map_err(permanent_if_model)?;
    let Some(batch) = args.batch else {
        let n = args.texts.len();
        let out = p
            .embed_cached(&embedder, args.texts)
            .await
            .map_err(permanent_if_model)?;
        if n <= INLINE_VECTORS {
            return Ok(json!({
                "model": out.model_version,
                "dim": embedder.dim(),
                "count": n,
                "truncated": out.truncated,
                "vectors": out.vectors,
            }));
        }
        // Large results live in Postgres, not in Redis and the job record.
        embeddings::store(
            &p.pool,
            job.id,
            &job.tenant,
            &out.model_version,
            embedder.dim(),
            &out.vectors,
        )
        .await?;
        return Ok(json!({
            "model": out.model_version,
            "dim": embedder.dim(),
            "count": n,
            "truncated": out.truncated,
            "vectors_url": format!("/v1/jobs/{}/vectors", job.id),
        }));
    };
    let doc = batch.document_id;
    let result = async {
        let chunks = documents::chunk_texts(&p.pool, &batch.chunk_ids).await?;
        let (ids, texts): (Vec<_>, Vec<_>) = chunks.into_iter().unzip();
        let out = p
            .embed_cached(&embedder, texts)
            .await
            .map_err(permanent_if_model)?;
        let vectors: Vec<_> = ids.into_iter().zip(out.vectors).collect();
        let fan_in = documents::store_embeddings(
            &p.pool,
            doc,
            batch.version,
            batch.batch_no,
            &vectors,
            &out.model_version,
            out.truncated as i32,
        )
        .await?;
        if fan_in == FanIn::Ready {
            notify_finished(&p, doc).await;
        }
        if fan_in == FanIn::Summarize {
            let push = PushOptions {
                idempotency_key: Some(format!("doc:{doc}:v{}:summarize", batch.version)),
                request_id: job.request_id.clone(),
                tenant: Some(job.tenant.to_string()),
                ..Default::default()
            };
            p.queue
                .push(
                    JobKind::Summarize,
                    &serde_json::to_value(SummarizeArgs { document_id: doc })?,
                    &push,
                )
                .await?;
        }
        Ok::<_, BoxDynError>(json!({
            "document_id": doc,
            "batch_no": batch.batch_no,
            "chunks": vectors.len(),
            "truncated": out.truncated,
            "model": out.model_version,
            "fan_in": format!("{fan_in:?}").to_lowercase(),
        }))
    }
    .await;
    if let Err(e) = &result {
        give_up_if_last(&p, &job, doc, &e.to_string()).await;
    }
    result
}

/// Unknown or missing models cannot be fixed by a retry on this worker.
fn permanent_if_model(e: EmbedError) -> BoxDynError {
    if e.is_unknown_model() {
        Permanent(e.to_string()).into()
    } else {
        e.into()
    }
}

/// `summarize`: an extractive summary from the stored chunk vectors.
pub async fn summarize(
    args: SummarizeArgs,
    job: Data<JobContext>,
    p: Data<Pipeline>,
) -> Result<Value, BoxDynError> {
    let doc = args.document_id;
    let result = async {
        let Some((text, chunks)) = documents::for_summary(&p.pool, doc).await? else {
            return Ok(json!({ "skipped": "the document was deleted" }));
        };
        let summary = match &p.llm {
            None => summary::extractive(&chunks),
            Some(llm) => match llm.summarize(&text).await {
                Ok(s) => s,
                // A long outage must not strand documents: fall back.
                Err(LlmError::Open) => summary::extractive(&chunks),
                Err(e) => return Err(e.into()),
            },
        };
        documents::store_summary(&p.pool, doc, &summary).await?;
        notify_finished(&p, doc).await;
        Ok::<_, BoxDynError>(json!({ "document_id": doc, "chars": summary.len() }))
    }
    .await;
    if let Err(e) = &result {
        give_up_if_last(&p, &job, doc, &e.to_string()).await;
    }
    result
}
