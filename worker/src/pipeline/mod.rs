//! The document pipeline's jobs: `ingest` (extract → chunk → store → start
//! the version's workflow), `embed` (vectors for free texts or a batch of a
//! document's chunks: a member of that workflow's chord), and `summarize`
//! (the chord's body: the version moves on once every batch is embedded,
//! with an extractive summary from the stored chunk vectors when asked).
//! The fan-in between them is the queue core's workflow, not the pipeline's.
//! `embed` also runs the batches of a document set's re-embed ([`reembed`]),
//! and an embed worker registers the models it serves ([`served_models`])
//! and answers search queries on the query lane, with no job
//! ([`query_lane`]).
//!
//! Every handler commits its effects in Postgres before it returns (the ack
//! follows) and writes idempotently (a crash re-runs it). Extraction and
//! chunking never run in the worker's own process: [`sandbox`] runs them in
//! a `hopper-extract` child under hard limits.

pub mod breaker;
pub mod cache;
pub mod llm;
pub mod query_lane;
pub mod reembed;
pub mod sandbox;
pub mod served_models;
pub mod stages;
pub mod summary;
