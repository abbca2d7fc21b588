//! The pipeline's stages: the handlers of its kinds, `ingest`, `embed` and
//! `summarize`. What they share travels as `Data<Pipeline>`.
//!
//! Every query they run names the job's tenant (`shared/src/documents.rs`):
//! a job whose tenant does not own the document it names changes nothing
//! and ends as skipped ("not found", see [`gone`]). Only the pipeline queues
//! these jobs (clients cannot: `JobKind::is_internal`, `JobKind::validate`).
//!
//! After its ingest, a document version's pipeline is one workflow
//! (`hopper-queue`'s `workflow.rs`, [`pipeline_workflow`]): a chord whose
//! header is one `embed` job per batch of chunks and whose body is a
//! `summarize` job that moves the version on — to `summarizing` and its
//! summary, or straight to `ready` — once every batch succeeded. That is
//! the pipeline's only fan-in: the queue core counts the members down
//! exactly once each and pushes the body once. It runs with
//! `on_failure: stop`, so a batch that dies (failing its document,
//! [`give_up`]) leaves the body unrun.
//!
//! The workflow's id is derived from (document, version, generation)
//! (`documents::workflow_id`): a re-run of an ingest whose version is
//! chunked already re-chunks nothing and finds the workflow a run before it
//! started; only when that one is over without having finished the version
//! does it start the next generation, with what is left ([`resume`]).

use std::sync::Arc;

use apalis_core::{error::BoxDynError, task::data::Data};
use deadpool_postgres::Pool;
use hopper_queue::{JobContext, Permanent, QueueClient, workflow::member_of};
use hopper_shared::{
    document_sets,
    documents::{self, Finish, IngestStart, StoredBatch, StoredVersion, status},
    embeddings::{self, INLINE_VECTORS},
    jobs::{ChunkBatch, EmbedArgs, IngestArgs, JobKind, SummarizeArgs},
    metrics as m,
    models::EmbeddingModel,
    workflows::{self, OnFailure, Plan, WorkflowSpec, WorkflowState, node_job_id},
};
use serde_json::{Value, json};

use crate::{
    embed::{EmbedError, EmbedOutput, Embedder, ModelRegistry},
    pipeline::{
        cache::EmbedCache,
        llm::{LlmError, LlmSummarizer},
        sandbox::{Extracted, Sandbox, SandboxError},
        served_models, summary,
    },
};

/// Chunks per embed job of a document.
pub const EMBED_BATCH: usize = 32;

/// What the pipeline's handlers share.
#[derive(Clone)]
pub struct Pipeline {
    /// Postgres.
    pub pool: Pool,
    /// The queues (to start a version's workflow).
    pub queue: QueueClient,
    /// Extraction and chunking in a child process under hard limits
    /// (ingest workers only).
    pub sandbox: Option<Sandbox>,
    /// Loaded embedding models (embed workers only).
    pub models: Option<Arc<ModelRegistry>>,
    /// Their rows in Postgres, as registered at start-up (`served_models`).
    pub registered: Arc<Vec<EmbeddingModel>>,
    /// Vectors of texts seen before.
    pub cache: EmbedCache,
    /// The chat endpoint for summaries, when configured.
    pub llm: Option<Arc<LlmSummarizer>>,
}

impl Pipeline {
    /// Embeds `texts` with `embedder` and caches their vectors, reading
    /// nothing first: for texts the caller has just looked up (the API reads
    /// the cache before it asks the query lane). A cache outage only costs
    /// the next reader's speed.
    pub(super) async fn embed_and_cache(
        &self,
        embedder: &Embedder,
        texts: Vec<String>,
    ) -> Result<EmbedOutput, EmbedError> {
        let version = embedder.version().to_owned();
        let computed = embedder.embed(texts.clone()).await?;
        let entries: Vec<_> = texts.iter().zip(computed.vectors.iter()).collect();
        if let Err(e) = self.cache.put(&version, &entries).await {
            tracing::warn!("embedding cache not written: {e}");
        }
        export_stats(embedder);
        Ok(computed)
    }

    /// Embeds `texts` with `embedder`, taking what it can from the cache
    /// and caching the rest. A cache outage only costs speed.
    pub(super) async fn embed_cached(
        &self,
        embedder: &Embedder,
        texts: Vec<String>,
    ) -> Result<EmbedOutput, EmbedError> {
        let version = embedder.version().to_owned();
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
            let computed = self.embed_and_cache(embedder, todo).await?;
            out.truncated = computed.truncated;
            out.model_version = computed.model_version;
            fresh = computed.vectors;
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

/// Most generations of one document version's workflow (see [`resume`]):
/// past that, a re-run fails the document rather than start it again.
const MAX_GENERATIONS: u32 = 100;

/// The workflow of a document version's pipeline: a chord of one `embed`
/// job per batch not done yet and the `summarize` body, stopping at the
/// first failure.
fn pipeline_workflow(
    doc: uuid::Uuid,
    version: i32,
    batches: &[StoredBatch],
    model: Option<String>,
) -> Result<(WorkflowSpec, Plan), BoxDynError> {
    let header = batches
        .iter()
        .filter(|b| !b.done)
        .map(|b| {
            let args = EmbedArgs {
                texts: Vec::new(),
                batch: Some(ChunkBatch {
                    document_id: doc,
                    version,
                    batch_no: b.batch_no,
                    chunk_ids: b.chunk_ids.clone(),
                }),
                model: model.clone(),
                reembed: None,
            };
            Ok(workflows::task(JobKind::Embed, serde_json::to_value(args)?))
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    let body = SummarizeArgs {
        document_id: doc,
        version: Some(version),
        input: None,
    };
    let body = workflows::task(JobKind::Summarize, serde_json::to_value(body)?);
    let spec = WorkflowSpec::new(workflows::chord(header, body))
        .named(format!("document {doc} v{version}"))
        .on_failure(OnFailure::Stop);
    // Only a document of over 10,000 batches is refused (no retry helps).
    let plan = spec
        .plan()
        .map_err(|e| Permanent(format!("document {doc}: its pipeline cannot run: {e}")))?;
    Ok((spec, plan))
}

/// Whether a job of workflow `id`'s plan exists already while the workflow
/// does not: a generation whose workflow expired (a week after it ended)
/// while some of its jobs are kept longer (dead letters). Its job ids are
/// taken, so that generation cannot be started again.
async fn jobs_left_behind(p: &Pipeline, id: uuid::Uuid, plan: &Plan) -> Result<bool, BoxDynError> {
    for (index, node) in plan.nodes.iter().enumerate() {
        if p.queue
            .job(&node.task, node_job_id(id, index))
            .await?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
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
/// this version's), and start the version's workflow: one embed job per
/// batch of chunks, then the body that finishes it.
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
/// job), or an embed job that finds its version's workflow over
/// ([`resume_if_orphaned`]): nothing is re-chunked or reset. It looks at the
/// version's workflow, generation by generation: a running one is repaired
/// (its members' reports may have been lost) and, still running, left to
/// finish; one that is over (failed, cancelled) without finishing the
/// version makes way for the next generation, started with the batches not
/// done and the body (just the body when every batch is done) — and a
/// `failed` document goes back to `embedding`. A `ready` version needs
/// nothing.
async fn resume(
    p: &Pipeline,
    doc: uuid::Uuid,
    job: &JobContext,
    stored: StoredVersion,
) -> Result<Value, BoxDynError> {
    let version = stored.version;
    let mut out = json!({
        "rerun": true,
        "version": version,
        "embed_batches": stored.batches.len(),
        "embed_batches_queued": 0,
    });
    if stored.status == status::READY {
        return Ok(out);
    }
    let mut generation = 0;
    while generation < MAX_GENERATIONS {
        let id = documents::workflow_id(doc, version, generation);
        let running = |wf: &Option<workflows::WorkflowView>| {
            wf.as_ref().map(|wf| wf.state == WorkflowState::Running)
        };
        match running(&p.queue.workflow(id, None, false).await?) {
            Some(true) => {
                p.queue.repair_workflow(id).await?;
                if running(&p.queue.workflow(id, None, false).await?) == Some(true) {
                    out["workflow"] = json!(id);
                    out["generation"] = json!(generation);
                    return Ok(out);
                }
                generation += 1;
            }
            Some(false) => generation += 1,
            None => {
                let model = stored.options.model.clone();
                let (spec, plan) = pipeline_workflow(doc, version, &stored.batches, model)?;
                if jobs_left_behind(p, id, &plan).await? {
                    // Unless a concurrent run created it just now.
                    if p.queue.workflow(id, None, false).await?.is_none() {
                        generation += 1;
                    }
                    continue;
                }
                documents::reopen(&p.pool, &job.tenant, doc, version).await?;
                p.queue
                    .create_workflow_as(id, &spec, &plan, &job.tenant)
                    .await?;
                tracing::info!(document = %doc, version, generation, workflow = %id,
                    nodes = plan.nodes.len(), "document pipeline started again");
                out["workflow"] = json!(id);
                out["generation"] = json!(generation);
                out["embed_batches_queued"] = json!(plan.nodes.len() - 1);
                return Ok(out);
            }
        }
    }
    Err(Permanent(format!(
        "document {doc} v{version}: its pipeline was started {MAX_GENERATIONS} times already"
    ))
    .into())
}

/// After an embed job found every batch of its version done: when its own
/// workflow is over (a dead letter retried after its run failed, a straggler
/// of a stopped run) — or it belongs to none (queued before pipelines ran as
/// workflows) — no body will move the version on, so it resumes the
/// pipeline as an ingest re-run would ([`resume`]: the next generation,
/// just the body). A running workflow finishes the version itself.
async fn resume_if_orphaned(
    p: &Pipeline,
    job: &JobContext,
    doc: uuid::Uuid,
    version: i32,
) -> Result<(), BoxDynError> {
    if let Some(member) = job.notify.as_ref().and_then(member_of) {
        let wf = p.queue.workflow(member.workflow, None, false).await?;
        if wf.is_some_and(|wf| wf.state == WorkflowState::Running) {
            return Ok(());
        }
    }
    let Some(stored) = documents::stored_version(&p.pool, &job.tenant, doc).await? else {
        return Ok(());
    };
    if stored.version == version {
        let resumed = resume(p, doc, job, stored).await?;
        tracing::info!(document = %doc, version, job = %job.id, %resumed,
            "an embed batch outlived its workflow: the pipeline resumes");
    }
    Ok(())
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
    // A fresh version has no workflow yet (a concurrent run's is the same
    // one: creating it again stores nothing).
    let model = src.options.model.clone();
    let (spec, plan) = pipeline_workflow(doc, src.version, &batches, model)?;
    let id = documents::workflow_id(doc, src.version, 0);
    p.queue
        .create_workflow_as(id, &spec, &plan, &job.tenant)
        .await?;
    Ok(json!({
        "chunks": chunks.len(),
        "embed_batches": batches.len(),
        "chars": text.len(),
        "workflow": id,
    }))
}

/// `embed`: vectors for free texts (returned), or for a batch of a
/// document's chunks (stored; its workflow counts it).
pub async fn embed(
    args: EmbedArgs,
    job: Data<JobContext>,
    p: Data<Pipeline>,
) -> Result<Value, BoxDynError> {
    let models = p
        .models
        .as_ref()
        .ok_or_else(|| Permanent("this worker has no embedding model loaded".into()))?;
    if let Some(batch) = args.reembed {
        return super::reembed::embed_batch(&p, &job, models, batch).await;
    }
    let Some(batch) = args.batch else {
        let embedder = models
            .resolve(args.model.as_deref())
            .map_err(permanent_if_model)?;
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
        // The set's model when the document is in one (a re-embed may have
        // switched it since the batch was queued), else the upload's.
        let wanted = document_sets::embed_model(&p.pool, &job.tenant, doc)
            .await?
            .or(args.model);
        let embedder = models
            .resolve(wanted.as_deref())
            .map_err(permanent_if_model)?;
        let (ids, texts): (Vec<_>, Vec<_>) = chunks.into_iter().unzip();
        let out = p
            .embed_cached(&embedder, texts)
            .await
            .map_err(permanent_if_model)?;
        let model = served_models::registered(&p.pool, &p.registered, &embedder).await?;
        document_sets::pin_model(&p.pool, &job.tenant, doc, &model.model).await?;
        let vectors: Vec<_> = ids.into_iter().zip(out.vectors).collect();
        let Some(stored) = documents::store_embeddings(
            &p.pool,
            &job.tenant,
            doc,
            batch.version,
            batch.batch_no,
            &vectors,
            &model,
            out.truncated as i32,
        )
        .await?
        else {
            return Ok(gone(doc, &job));
        };
        if stored.all_done {
            resume_if_orphaned(&p, &job, doc, batch.version).await?;
        }
        Ok::<_, BoxDynError>(json!({
            "document_id": doc,
            "batch_no": batch.batch_no,
            "chunks": vectors.len(),
            "truncated": out.truncated,
            "model": out.model_version,
        }))
    }
    .await;
    if let Err(e) = &result {
        give_up(&p, &job, doc, e).await;
    }
    result
}

/// Unknown or missing models cannot be fixed by a retry on this worker.
pub(super) fn permanent_if_model(e: EmbedError) -> BoxDynError {
    if e.is_unknown_model() {
        Permanent(e.to_string()).into()
    } else {
        e.into()
    }
}

/// `summarize`, the body of a version's workflow, run once every embed
/// batch succeeded: moves the version on (`documents::finish_embedding`,
/// once whatever re-runs), then writes its summary — extractive from the
/// stored chunk vectors, or from the chat endpoint — when it asked for one,
/// and sends `document.finished` once it is ready.
pub async fn summarize(
    args: SummarizeArgs,
    job: Data<JobContext>,
    p: Data<Pipeline>,
) -> Result<Value, BoxDynError> {
    let doc = args.document_id;
    let result = async {
        let finish = documents::finish_embedding(&p.pool, &job.tenant, doc, args.version).await?;
        match finish {
            None => return Ok(gone(doc, &job)),
            Some(Finish::Summarize) => {}
            Some(Finish::Ready) => {
                notify_finished(&p, &job.tenant, doc).await;
                return Ok(json!({ "document_id": doc, "status": status::READY }));
            }
            Some(Finish::Passed(now)) => {
                return Ok(json!({
                    "document_id": doc,
                    "skipped": format!("document {doc} is {now}: replaced by another version, or failed meanwhile"),
                }));
            }
            Some(Finish::Unembedded { done, total }) => {
                return Err(Permanent(format!(
                    "document {doc}: {done} of {total} embed batches done, yet its body ran"
                ))
                .into());
            }
        }
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
        Ok::<_, BoxDynError>(json!({
            "document_id": doc,
            "status": status::READY,
            "chars": summary.len(),
        }))
    }
    .await;
    if let Err(e) = &result {
        give_up(&p, &job, doc, e).await;
    }
    result
}
