//! The error type of the shared library.
//!
//! Binaries wrap these in `anyhow` at their edges; the API maps them onto
//! HTTP status codes.

/// Errors raised by the shared library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more settings are missing or invalid; every problem is listed.
    #[error("invalid configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    /// Postgres could not be reached or a query failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be taken from the pool.
    #[error("cannot reach Postgres: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The pool itself could not be built from the configuration.
    #[error("postgres pool: {0}")]
    BuildPool(#[from] deadpool_postgres::BuildError),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// An argument was refused (a bad tenant name, say).
    #[error("{0}")]
    Invalid(String),
    /// A request's field was refused: `field` names it (`options.model`).
    #[error("{field}: {message}")]
    InvalidField {
        /// The field, as the request spells it.
        field: String,
        /// Why.
        message: String,
    },
    /// A payload could not be encoded or decoded.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias for the shared library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
