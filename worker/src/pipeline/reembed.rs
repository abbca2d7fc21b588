//! A document set's re-embed, on the worker: each batch is an `embed` job
//! (`EmbedArgs::reembed`) that embeds its chunks with the new model and
//! stores the vectors beside the old ones; the batch that completes the
//! re-embed finishes it — queueing batches for chunks uploaded meanwhile,
//! or flipping the set to the new model (`hopper_shared::document_sets`).

use apalis_core::error::BoxDynError;
use hopper_queue::{JobContext, PushOptions};
use hopper_shared::{
    document_sets::{self, ReembedBatch, ReembedFinish, ReembedStored},
    jobs::{self, JobKind},
};
use serde_json::{Value, json};

use crate::{
    embed::ModelRegistry,
    pipeline::{
        served_models,
        stages::{Pipeline, permanent_if_model},
    },
};

/// Runs one re-embed batch, then finishes the re-embed when every batch
/// is done — also when this batch was stored by an earlier run that
/// stopped before finishing ([`document_sets::finish_reembed`] does
/// nothing unless the re-embed is running with every batch done).
pub async fn embed_batch(
    p: &Pipeline,
    job: &JobContext,
    models: &ModelRegistry,
    batch: jobs::ReembedBatch,
) -> Result<Value, BoxDynError> {
    let (id, batch_no) = (batch.reembed_id, batch.batch_no);
    let work = document_sets::reembed_batch(&p.pool, &job.tenant, id, batch_no).await?;
    let mut out = json!({ "reembed_id": id, "batch_no": batch_no });
    let (model, chunks) = match work {
        None => {
            out["skipped"] = json!(format!("no re-embed {id} batch {batch_no} for this tenant"));
            return Ok(out);
        }
        Some(ReembedBatch::Over(why)) => {
            out["skipped"] = json!(why);
            return Ok(out);
        }
        Some(ReembedBatch::Done { model }) => (model, None),
        Some(ReembedBatch::Embed { model, chunks }) => (model, Some(chunks)),
    };
    let embedder = models.get(&model).map_err(permanent_if_model)?;
    let target = served_models::registered(&p.pool, &p.registered, &embedder).await?;
    match chunks {
        None => out["skipped"] = json!("stored by an earlier run"),
        Some(chunks) => {
            let (ids, texts): (Vec<_>, Vec<_>) = chunks.into_iter().unzip();
            let embedded = p
                .embed_cached(&embedder, texts)
                .await
                .map_err(permanent_if_model)?;
            let vectors: Vec<_> = ids.into_iter().zip(embedded.vectors).collect();
            let stored =
                document_sets::store_reembed_batch(&p.pool, id, batch_no, &target, &vectors)
                    .await?;
            out["chunks"] = json!(vectors.len());
            out["model"] = json!(target.model);
            if stored == ReembedStored::Skipped {
                out["skipped"] = json!("stored by an earlier run, or the re-embed is over");
            }
        }
    }
    let model = target.model.clone();
    let queue_more = |more: Vec<i32>| async move {
        let args = document_sets::batch_jobs(id, &model, &more);
        let opts = PushOptions {
            tenant: Some(job.tenant.to_string()),
            ..Default::default()
        };
        p.queue
            .push_many(JobKind::Embed, &args, &opts)
            .await
            .map(|_| ())
            .map_err(BoxDynError::from)
    };
    match document_sets::finish_reembed(&p.pool, id, &target, queue_more).await? {
        ReembedFinish::Flipped => out["finished"] = json!("flipped"),
        ReembedFinish::More(more) => out["finished"] = json!({ "more_batches": more.len() }),
        ReembedFinish::NotYet => {}
    }
    Ok(out)
}
