//! Hopper's shared ground.
//!
//! Everything the API, the workers, the queue backend and the CLI must agree
//! on lives here: the job kinds and their argument types ([`jobs`]), queue
//! names ([`queue_name`]), task definitions ([`tasks`]), the one
//! typed configuration loaded from the environment ([`config`]), Postgres
//! access and migrations ([`db`]), the error type ([`error`]), metric names
//! ([`metrics`]) and logging set-up ([`telemetry`]).
//!
//! Nothing in this crate talks to Redis; the queue lives in `hopper-queue`.

pub mod build_info;
pub mod config;
pub mod db;
pub mod document_sets;
pub mod documents;
pub mod embeddings;
pub mod error;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod models;
pub mod query_lane;
pub mod queue_name;
pub mod queue_settings;
pub mod rate_limit;
pub mod retention;
pub mod retry_policy;
pub mod schedules;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod webhook;
pub mod workflows;

pub use config::Config;
pub use error::{Error, Result};
pub use queue_name::QueueName;
