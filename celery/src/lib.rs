//! Celery interoperability: lets unchanged Celery producers (`delay`,
//! `apply_async`, `send_task`, `AsyncResult.get`) use Hopper workers.
//!
//! Celery's Redis transport (kombu) `LPUSH`es a JSON envelope per message
//! onto a list named after the queue. The intake ([`intake`]) moves those
//! messages, atomically, into jobs of the internal task `celery.intake`; the
//! worker that serves it parses each envelope ([`envelope`]), finds the
//! Hopper task it names ([`route`]) and queues the job. When that job
//! finishes, the queue core queues a `celery.result` job (the job's
//! `notify`), whose handler writes the Celery result ([`result`]) where
//! `AsyncResult` looks for it.

pub mod config;
pub mod envelope;
pub mod intake;
pub mod publish;
pub mod result;
pub mod route;
