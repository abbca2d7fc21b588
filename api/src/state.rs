//! What every handler shares: configuration, the queue client, the Postgres
//! pool, the metrics handle and the cached task registry. Cheap to clone:
//! axum clones the state for every extractor and middleware of every
//! request, so [`AppState`] is one `Arc` around [`Shared`]. (Cloned field by
//! field — a queue client, a pool, caches, a dozen `Arc`s and channel
//! senders — the clones and drops took a quarter of the API's CPU when it
//! answered single-job submissions.)

use std::{ops::Deref, sync::Arc};

use deadpool_postgres::Pool;
use hopper_queue::QueueClient;
use hopper_shared::Config;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{auth::KeyCache, history::DepthHistory, limits::AddressLimiter, tasks::TaskCache};

/// Shared state of the API: a handle on [`Shared`], which it derefs to.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares.
pub struct Shared {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Redis queues.
    pub queue: QueueClient,
    /// Postgres.
    pub pool: Pool,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Recent queue depth, for the dashboard.
    pub history: DepthHistory,
    /// API keys looked up recently.
    pub keys: KeyCache,
    /// The per-address budget of requests without a valid key.
    pub unauthenticated: AddressLimiter,
    /// The HTTP worker protocol's shared parts.
    pub work: crate::work::WorkState,
    /// The task registry, as read within the last second.
    pub tasks: TaskCache,
    /// Search queries embedded by workers on request.
    pub lane: crate::query_lane::QueryLane,
}

impl AppState {
    /// Bundles the parts.
    pub fn new(config: Config, queue: QueueClient, pool: Pool, metrics: PrometheusHandle) -> Self {
        Self(Arc::new(Shared {
            unauthenticated: AddressLimiter::new(config.api.rate_per_address),
            work: crate::work::WorkState::new(config.api.max_concurrent_requests),
            lane: crate::query_lane::QueryLane::new(queue.clone(), config.api.search_query_lane),
            config: Arc::new(config),
            queue,
            pool,
            metrics,
            history: DepthHistory::default(),
            keys: KeyCache::default(),
            tasks: TaskCache::default(),
        }))
    }
}
