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
                .expect("non-empty buckets")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}
