//! Names of the metrics Hopper exports, named by what they measure.
//!
//! Kept in one place so the API, the workers, the Grafana dashboard and the
//! KEDA scalers agree on them.

/// Jobs accepted by the API, labelled by `kind`.
pub const JOBS_SUBMITTED: &str = "hopper_jobs_submitted_total";
/// Attempts started by workers, labelled by `kind`.
pub const JOBS_STARTED: &str = "hopper_jobs_started_total";
/// Jobs finished successfully, labelled by `kind`.
pub const JOBS_SUCCEEDED: &str = "hopper_jobs_succeeded_total";
/// Failed attempts (whether retried or not), labelled by `kind`.
pub const JOBS_FAILED: &str = "hopper_jobs_failed_total";
/// Failed attempts scheduled for a retry, labelled by `kind`.
pub const JOBS_RETRIED: &str = "hopper_jobs_retried_total";
/// Jobs moved to the dead letters, labelled by `kind` and `reason`.
pub const JOBS_DEAD_LETTERED: &str = "hopper_jobs_dead_lettered_total";
/// Seconds a job's attempt ran, labelled by `kind`.
pub const JOB_RUN_SECONDS: &str = "hopper_job_run_seconds";
/// Jobs waiting in a queue, labelled by `queue`.
pub const QUEUE_PENDING: &str = "hopper_queue_pending";
/// Jobs waiting for their run-at time, labelled by `queue`.
pub const QUEUE_SCHEDULED: &str = "hopper_queue_scheduled";
/// Jobs claimed by workers, labelled by `queue`.
pub const QUEUE_RUNNING: &str = "hopper_queue_running";
/// Jobs in the dead letters, labelled by `queue`.
pub const QUEUE_DEAD: &str = "hopper_queue_dead";
/// Age of the oldest pending job in seconds (0 when none), labelled by `queue`.
pub const QUEUE_OLDEST_PENDING_SECONDS: &str = "hopper_queue_oldest_pending_seconds";
/// Worker processes heartbeating on a queue, labelled by `queue`.
pub const QUEUE_WORKERS: &str = "hopper_queue_workers";
/// HTTP requests served, labelled by `method`, `route` and `status`.
pub const HTTP_REQUESTS: &str = "hopper_http_requests_total";
/// Seconds spent serving HTTP requests, labelled by `method` and `route`.
pub const HTTP_REQUEST_SECONDS: &str = "hopper_http_request_seconds";
/// API-key lookups in Postgres (a key not in the API's cache, or due for
/// re-checking); requests refused by the per-address limit never get one.
pub const API_KEY_LOOKUPS: &str = "hopper_api_key_lookups_total";
/// Requests without a valid API key, labelled by `outcome` (`unauthorized`
/// answered 401, `rate_limited` refused by the per-address limit with 429).
pub const API_AUTH_REFUSED: &str = "hopper_api_auth_refused_total";

/// Finished work deleted under its retention, labelled by `store`
/// (`dead_letters` and `finished_jobs` in Redis, with `queue`, counted by
/// workers; `job_records` and `embed_results` in Postgres, counted by the API).
pub const RETENTION_REMOVED: &str = "hopper_retention_removed_total";
/// Seconds from submission to a job's first start (its delay included),
/// labelled by `kind`.
pub const JOB_QUEUE_WAIT_SECONDS: &str = "hopper_job_queue_wait_seconds";
/// Heartbeats a worker sent, labelled by `queue` and `outcome` (`ok`, `failed`).
pub const WORKER_HEARTBEATS: &str = "hopper_worker_heartbeats_total";
/// Finished attempts whose outcome was dropped because their lease was lost
/// (the job was recovered and maybe ran again elsewhere), labelled by `queue`.
pub const JOB_LEASE_LOST: &str = "hopper_job_lease_lost_total";
/// Writes (`op`: `push`, `ack`, `fail`) that fewer replicas acknowledged
/// than `HOPPER_REDIS_WAIT_REPLICAS` asked for within its time limit,
/// labelled by `op` and `queue`.
pub const REDIS_WAIT_SHORTFALL: &str = "hopper_redis_wait_shortfall_total";
/// Times a worker found itself evicted (presumed dead) and registered
/// afresh, labelled by `queue`.
pub const WORKER_EVICTIONS: &str = "hopper_worker_evictions_total";
/// Stray jobs released from a live worker's in-flight set (claimed but not
/// running there), labelled by `queue`.
pub const JOBS_STRANDED: &str = "hopper_jobs_stranded_total";
/// Texts per forward pass of the embedding engine, labelled by `device`.
pub const EMBED_BATCH_SIZE: &str = "hopper_embed_batch_size";
/// Tokens per forward pass (padding included), labelled by `device`.
pub const EMBED_BATCH_TOKENS: &str = "hopper_embed_batch_tokens";
/// Forward passes, labelled by `model`.
pub const EMBED_FORWARD_PASSES: &str = "hopper_embed_forward_passes_total";
/// Texts embedded by the model (cache hits excluded), labelled by `model`;
/// its rate is embeddings per second.
pub const EMBED_TEXTS: &str = "hopper_embed_texts_total";
/// Real (unpadded) tokens embedded, labelled by `model`.
pub const EMBED_TOKENS: &str = "hopper_embed_tokens_total";
/// Tokens computed including padding, labelled by `model`.
pub const EMBED_PADDED_TOKENS: &str = "hopper_embed_padded_tokens_total";
/// Texts cut at the model's maximum length, labelled by `model`.
pub const EMBED_TRUNCATED_TEXTS: &str = "hopper_embed_truncated_texts_total";
/// Largest batch so far, labelled by `model`.
pub const EMBED_MAX_BATCH_SIZE: &str = "hopper_embed_max_batch_size";
/// Whole seconds spent in forward passes, labelled by `model`.
pub const EMBED_FORWARD_SECONDS: &str = "hopper_embed_forward_seconds_total";
/// Embedding-cache hits, in texts.
pub const EMBED_CACHE_HITS: &str = "hopper_embed_cache_hits_total";
/// Embedding-cache misses, in texts.
pub const EMBED_CACHE_MISSES: &str = "hopper_embed_cache_misses_total";
/// Vector searches whose query vector the API read from the embedding
/// cache, queueing no `embed` job.
pub const SEARCH_QUERY_CACHE_HITS: &str = "hopper_search_query_cache_hits_total";
/// Vector searches whose query the API sent down the query lane, labelled
/// by `outcome`: `answered` (a worker's vector), `failed` (the worker's
/// engine refused it), `no_listener` (no worker listens: asked by an
/// `embed` job), `timeout` (no answer within the lane's wait: asked by a
/// job) or `error` (Redis failed: asked by a job).
pub const SEARCH_QUERY_LANE: &str = "hopper_search_query_lane_total";
/// Query-lane requests a worker popped, labelled by `outcome`: `answered`,
/// `failed` (answered with the engine's error), `expired` (its asker had
/// given up: dropped) or `malformed` (not a request: dropped).
pub const QUERY_LANE_REQUESTS: &str = "hopper_query_lane_requests_total";
/// GPU memory in use on the worker's CUDA device (all processes), labelled by
/// `device`; only on CUDA.
pub const GPU_MEMORY_USED_BYTES: &str = "hopper_gpu_memory_used_bytes";
/// The CUDA device's total memory, labelled by `device`; only on CUDA.
pub const GPU_MEMORY_TOTAL_BYTES: &str = "hopper_gpu_memory_total_bytes";
/// Counter: Celery messages the intake moved from kombu's lists into Hopper.
pub const CELERY_MESSAGES_TAKEN: &str = "hopper_celery_messages_taken_total";
/// Counter: Celery messages refused (labels `reason`: content_type, unknown_task, …).
pub const CELERY_MESSAGES_REFUSED: &str = "hopper_celery_messages_refused_total";
/// Counter: Celery results published to the result backend (label `status`).
pub const CELERY_RESULTS_PUBLISHED: &str = "hopper_celery_results_published_total";
/// Schedule ticks handled by this process, by `outcome` (`fired`, `skipped`).
pub const SCHEDULE_TICKS: &str = "hopper_schedule_ticks_total";
/// Seconds from a schedule's tick to the push of its job (fire-time lag).
pub const SCHEDULE_FIRE_LAG_SECONDS: &str = "hopper_schedule_fire_lag_seconds";
/// Always 1, labelled by the process' `version` and `git_sha` (which build
/// runs where: `build_info.rs`).
pub const BUILD_INFO: &str = "hopper_build_info";
/// Seconds since the process started.
pub const PROCESS_UPTIME_SECONDS: &str = "hopper_process_uptime_seconds";
/// Prefix of the standard process metrics (`metrics-process`: resident and
/// virtual memory, CPU seconds, threads, open and maximum file descriptors,
/// start time), so they sort with Hopper's own.
pub const PROCESS_METRICS_PREFIX: &str = "hopper_";
/// The process' resident memory (RSS) in bytes.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "hopper_process_resident_memory_bytes";
/// CPU time (user + system) the process has used, in seconds; a gauge with
/// fractions of a second, so `rate()` of it is the cores it keeps busy.
pub const PROCESS_CPU_SECONDS: &str = "hopper_process_cpu_seconds_total";

/// Buckets of [`EMBED_BATCH_SIZE`].
pub const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Buckets of [`EMBED_BATCH_TOKENS`].
pub const BATCH_TOKENS_BUCKETS: &[f64] = &[
    64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0,
];

/// Histogram buckets (seconds) of every `*_seconds` metric, so dashboards can
/// compute any percentile with `histogram_quantile`.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle), with [`SECONDS_BUCKETS`] for every `*_seconds` metric.
pub fn install_exporter() -> metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(EMBED_BATCH_SIZE.into()),
                        BATCH_SIZE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(EMBED_BATCH_TOKENS.into()),
                        BATCH_TOKENS_BUCKETS,
                    )
                })
                .expect("non-empty buckets")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}
