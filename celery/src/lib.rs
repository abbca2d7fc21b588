//! Celery interoperability: lets unchanged Celery producers (`delay`,
//! `apply_async`, `send_task`, `AsyncResult.get`) use Hopper workers.
//!
//! Celery's Redis transport (kombu) `LPUSH`es a JSON envelope per message
//! onto a list named after the queue. The intake ([`intake`]) moves those
//! messages, atomically, into jobs of the internal task `celery.intake`; the
//! worker that serves it parses each envelope ([`envelope`]), finds the
//! Hopper task it names ([`route`]) and queues the job. When that job
//! finishes, the queue core appends its outcome to the outbox
//! `celery.result` (the job's `notify`), from which the bridge writes the
//! Celery result ([`result`], [`publish`]) where `AsyncResult` looks for it.

pub mod config;
pub mod envelope;
mod idle;
pub mod intake;
pub mod publish;
pub mod result;
pub mod route;
pub mod submit;

use hopper_shared::QueueName;

/// The internal task whose jobs are Celery messages as the intake moved them.
pub const INTAKE_TASK: QueueName = QueueName::from_static("celery.intake");

/// The outbox every Celery-sent job's outcome is told to (its `notify`);
/// the bridge publishes Celery results from it ([`publish::run_results`]).
pub const RESULT_TASK: QueueName = QueueName::from_static("celery.result");
