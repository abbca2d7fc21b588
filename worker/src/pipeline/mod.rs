//! The document pipeline's jobs: `ingest` (extract → chunk → store → fan
//! out embed batches), `embed` (vectors for free texts or a batch of a
//! document's chunks, then the fan-in), and `summarize` (an extractive
//! summary from the stored chunk vectors).
//!
//! Every handler commits its effects in Postgres before it returns (the ack
//! follows) and writes idempotently (a crash re-runs it). Extraction and
//! chunking never run in the worker's own process: [`sandbox`] runs them in
//! a `hopper-extract` child under hard limits.

pub mod cache;
pub mod handlers;
pub mod llm;
pub mod sandbox;
pub mod summary;
