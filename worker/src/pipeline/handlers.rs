//! Handlers of the pipeline's kinds. What they share travels as
//! `Data<Pipeline>`.
//!
//! Every query they run names the job's tenant (`shared/src/documents.rs`):
//! a job whose tenant does not own the document it names changes nothing
//! and ends as skipped ("not found", see [`gone`]). Only the pipeline queues these jobs
//! (clients cannot: `JobKind::is_internal`, `JobKind::validate`), each with
//! an idempotency key per document version and step that no client key can
//! take ([`step_key`]). A re-run of an ingest whose version is chunked
//! already re-chunks nothing and re-queues only what is left ([`resume`]).

use std::sync::Arc;

use apalis_core::{error::BoxDynError, task::data::Data};
use deadpool_postgres::Pool;
use hopper_queue::{JobContext, Permanent, PushOptions, QueueClient};
use hopper_shared::{
    documents::{self, FanIn, IngestStart, StoredBatch, StoredVersion, status},
    embeddings::{self, INLINE_VECTORS},
    jobs::{ChunkBatch, EmbedArgs, IngestArgs, JobKind, SummarizeArgs},
    metrics as m,
};
use serde_json::{Value, json};

use crate::{
    embed::{EmbedError, EmbedOutput, Embedder, ModelRegistry},
    pipeline::{
        cache::EmbedCache,
        llm::{LlmError, LlmSummarizer},
        sandbox::{Extracted, Sandbox, SandboxError},
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
    /// Extraction and chunking in a child process under hard limits
    /// (ingest workers only).
    pub sandbox: Option<Sandbox>,
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

/// The outcome of a job whose tenant has no such document: deleted while
/// its pipeline ran (an everyday event, not a dead letter), or another
/// tenant's (only a compromised producer can push that: internal kinds are
/// not submittable). Either way nothing was changed, and no retry could
/// change that.
fn gone(doc: uuid::Uuid, job: &JobContext) -> Value {
    tracing::warn!(document = %doc, tenant = %job.tenant, job = %job.id,
        "pipeline job skipped: no such document for its tenant");
    json!({
        "document_id": doc,
        "skipped": format!("document {doc} not found for tenant `{}`: deleted, or not this tenant's", job.tenant),
    })
}

/// The idempotency key of one step of a document version (`embed/<batch>`,
/// `summarize`). It holds no `:`, so no client's key (always
/// `<tenant>:<key>`) can be the same and take the step's place.
fn step_key(doc: uuid::Uuid, version: i32, step: &str) -> String {
    format!("pipeline/{doc}/v{version}/{step}")
}

/// Most times one step is queued afresh after its job ended without doing
/// it (see [`queue_step`]).
const STEP_GENERATIONS: u32 = 100;

/// Queues a pipeline job once under `key`, for the job's tenant. A re-run
/// finds the job queued before under the same key and adds nothing, unless
/// that job is over (dead, cancelled, trimmed) without having done the
/// step: then the next generation of the key (`<key>/g<n>`) is tried, so
/// nothing waits for a job that will never run, and every re-run — by
/// whichever job — finds the same live one.
async fn queue_step(
    p: &Pipeline,
    job: &JobContext,
    kind: JobKind,
    args: Value,
    key: String,
) -> Result<(), BoxDynError> {
    let mut opts = PushOptions {
        request_id: job.request_id.clone(),
        tenant: Some(job.tenant.to_string()),
        ..Default::default()
    };
    for generation in 0..STEP_GENERATIONS {
        opts.idempotency_key = Some(match generation {
            0 => key.clone(),
            n => format!("{key}/g{n}"),
        });
        let pushed = p.queue.push(kind, &args, &opts).await?;
        if pushed.created {
            return Ok(());
        }
        let live = p
            .queue
            .job(kind, pushed.id)
            .await?
            .is_some_and(|j| !j.state.is_final());
        if live {
            return Ok(());
        }
    }
    Err(Permanent(format!("{key} was queued {STEP_GENERATIONS} times already")).into())
}

/// Queues an embed job for each batch not done yet; returns how many.
async fn queue_batches(
    p: &Pipeline,
    job: &JobContext,
    doc: uuid::Uuid,
    version: i32,
    batches: &[StoredBatch],
    model: Option<String>,
) -> Result<usize, BoxDynError> {
    let mut queued = 0;
    for b in batches.iter().filter(|b| !b.done) {
        let args = EmbedArgs {
            texts: Vec::new(),
            batch: Some(ChunkBatch {
                document_id: doc,
                version,
                batch_no: b.batch_no,
                chunk_ids: b.chunk_ids.clone(),
            }),
            model: model.clone(),
        };
        let key = step_key(doc, version, &format!("embed/{}", b.batch_no));
        queue_step(p, job, JobKind::Embed, serde_json::to_value(&args)?, key).await?;
        queued += 1;
    }
    Ok(queued)
}

/// Queues the summary of a document version.
async fn queue_summary(
    p: &Pipeline,
    job: &JobContext,
    doc: uuid::Uuid,
    version: i32,
) -> Result<(), BoxDynError> {
    let args = serde_json::to_value(SummarizeArgs { document_id: doc })?;
    let key = step_key(doc, version, "summarize");
    queue_step(p, job, JobKind::Summarize, args, key).await
}

/// Marks the document failed when no retry will come (a permanent error or
/// the last attempt), so a document never hangs in a running state after
/// its jobs gave up.
async fn give_up(p: &Pipeline, job: &JobContext, doc: uuid::Uuid, error: &BoxDynError) {
    if error.downcast_ref::<Permanent>().is_some() || job.attempt >= job.max_attempts {
        fail_document(p, job, doc, &error.to_string()).await;
    }
}

/// Marks the job's tenant's document failed and sends its callback.
async fn fail_document(p: &Pipeline, job: &JobContext, doc: uuid::Uuid, error: &str) {
    if let Ok(true) = documents::fail(&p.pool, &job.tenant, doc, error).await {
        notify_finished(p, &job.tenant, doc).await;
    }
}

/// Queues the `document.finished` callback of a document that is now ready
/// or failed, if it asked for one (once per document version and status).
async fn notify_finished(p: &Pipeline, tenant: &str, doc: uuid::Uuid) {
    let found = match documents::finished_callback(&p.pool, tenant, doc).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(document = %doc, "cannot read the document's callback: {e}");
            return;
        }
    };
    let Some((url, view)) = found else {
        return;
    };
    let key = format!("webhook:doc:{doc}:v{}:{}", view.version, view.status);
    let body = json!({ "event": "document.finished", "document": view });
    if let Err(e) = p
        .queue
        .push_callback(&url, "document.finished", body, tenant, key)
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
            give_up(&p, &job, doc, &e).await;
            Err(e)
        }
    }
}

/// A re-run of an ingest whose version is chunked already (a crash after
/// its chunks were stored, a retry from the dead letters, a duplicate
/// job): nothing is re-chunked or reset; what is left of the pipeline is
/// queued again — the embed batches not done, or else the summary a
/// summarizing or failed document still lacks — and a `failed` document
/// goes back to that step.
async fn resume(
    p: &Pipeline,
    doc: uuid::Uuid,
    job: &JobContext,
    stored: StoredVersion,
) -> Result<Value, BoxDynError> {
    let tenant = &job.tenant;
    let left = stored.batches.iter().filter(|b| !b.done).count();
    let mut summary_queued = false;
    if left > 0 {
        documents::reopen(&p.pool, tenant, doc, stored.version, status::EMBEDDING).await?;
        let model = stored.options.model.clone();
        queue_batches(p, job, doc, stored.version, &stored.batches, model).await?;
    } else if stored.options.summarize
        && !stored.has_summary
        && [status::SUMMARIZING, status::FAILED].contains(&stored.status.as_str())
    {
        documents::reopen(&p.pool, tenant, doc, stored.version, status::SUMMARIZING).await?;
        queue_summary(p, job, doc, stored.version).await?;
        summary_queued = true;
    }
    Ok(json!({
        "rerun": true,
        "version": stored.version,
        "embed_batches": stored.batches.len(),
        "embed_batches_queued": left,
        "summary_queued": summary_queued,
    }))
}

async fn ingest_inner(
    p: &Pipeline,
    doc: uuid::Uuid,
    job: &JobContext,
) -> Result<Value, BoxDynError> {
    let src = match documents::start_ingest(&p.pool, &job.tenant, doc).await? {
        Some(IngestStart::Fresh(src)) => src,
        Some(IngestStart::Stored(stored)) => return resume(p, doc, job, stored).await,
        None => return Ok(gone(doc, job)),
    };
    let sandbox = p
        .sandbox
        .as_ref()
        .ok_or_else(|| Permanent("this worker has no tokenizer (HOPPER_MODEL_DIR)".into()))?;
    let opts = &src.options;
    let Extracted { text, chunks } = sandbox
        .run(
            &src.content_type,
            &src.body,
            opts.chunk_tokens
                .unwrap_or(hopper_extract::chunk::DEFAULT_TOKENS),
            opts.chunk_overlap
                .unwrap_or(hopper_extract::chunk::DEFAULT_OVERLAP),
            job.cancel.cancelled(),
        )
        .await
        .map_err(SandboxError::into_job_error)?;
    // A concurrent run of the same ingest may have stored them first: then
    // these are its batches, and the pushes below add nothing.
    let Some(batches) = documents::store_chunks(
        &p.pool,
        &job.tenant,
        doc,
        src.version,
        &text,
        &chunks,
        EMBED_BATCH,
    )
    .await?
    else {
        return Ok(gone(doc, job));
    };
    let model = src.options.model.clone();
    queue_batches(p, job, doc, src.version, &batches, model).await?;
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
        // The batch's chunks as stored for the job's tenant, not as the
        // job's arguments list them.
        let Some(chunks) =
            documents::batch_texts(&p.pool, &job.tenant, doc, batch.version, batch.batch_no)
                .await?
        else {
            return Ok(gone(doc, &job));
        };
        if chunks.is_empty() {
            return Ok(json!({
                "document_id": doc,
                "batch_no": batch.batch_no,
                "skipped": "no such batch of this document version",
            }));
        }
        let (ids, texts): (Vec<_>, Vec<_>) = chunks.into_iter().unzip();
        let out = p
            .embed_cached(&embedder, texts)
            .await
            .map_err(permanent_if_model)?;
        let vectors: Vec<_> = ids.into_iter().zip(out.vectors).collect();
        let Some(fan_in) = documents::store_embeddings(
            &p.pool,
            &job.tenant,
            doc,
            batch.version,
            batch.batch_no,
            &vectors,
            &out.model_version,
            out.truncated as i32,
        )
        .await?
        else {
            return Ok(gone(doc, &job));
        };
        if fan_in == FanIn::Ready {
            notify_finished(&p, &job.tenant, doc).await;
        }
        if fan_in == FanIn::Summarize {
            queue_summary(&p, &job, doc, batch.version).await?;
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
        give_up(&p, &job, doc, e).await;
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
        let Some((text, chunks)) = documents::for_summary(&p.pool, &job.tenant, doc).await? else {
            return Ok(gone(doc, &job));
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
        if documents::store_summary(&p.pool, &job.tenant, doc, &summary).await? {
            notify_finished(&p, &job.tenant, doc).await;
        }
        Ok::<_, BoxDynError>(json!({ "document_id": doc, "chars": summary.len() }))
    }
    .await;
    if let Err(e) = &result {
        give_up(&p, &job, doc, e).await;
    }
    result
}
