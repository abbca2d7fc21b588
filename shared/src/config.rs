//! The one typed configuration of every Hopper binary, loaded from the
//! environment and validated at start-up.
//!
//! [`Config::from_env`] reads every setting, and when any is missing or
//! invalid it fails with *all* the problems at once, so an operator fixes a
//! deployment in one round. Per-queue settings are found by queue name
//! ([`Config::queue`]): a built-in kind's start from
//! [`JobKind::default_settings`], any other name's from
//! [`QueueSettings::default`], and both are overridden by
//! `HOPPER_QUEUE_<NAME>_<SETTING>` variables (for example
//! `HOPPER_QUEUE_EMBED_CONCURRENCY=4`).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    str::FromStr,
    time::Duration,
};

use crate::{
    Error,
    jobs::{JobKind, QueueSettings},
    queue_name::QueueName,
    queue_settings::{
        QUEUE_SETTING_VARS, QueueSettingsByName, SettingsOverride, configured_suffixes,
    },
};

/// Default Redis URL (Debian's redis-server on its standard port).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default Postgres URL (the pgvector server `scripts/setup` starts).
pub const DEFAULT_DATABASE_URL: &str = "postgresql://postgres:postgres@127.0.0.1:5433/hopper";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How the API authenticates callers (`HOPPER_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `Authorization: Bearer hop_…` on every `/v1` request (the default).
    Keys,
    /// No keys: every caller is tenant `default` with every scope. For local
    /// development only; the API says so loudly at start-up.
    Open,
}

/// The API's protections (`HOPPER_AUTH`, `HOPPER_RATE_*`, …).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Keys or open mode.
    pub auth: AuthMode,
    /// Sustained requests per second per API key (or per client address in
    /// open mode) (`HOPPER_RATE_PER_KEY`, default 200; 0 turns it off).
    pub rate_per_key: u32,
    /// Sustained requests per second over all callers (`HOPPER_RATE_GLOBAL`,
    /// default 5,000; 0 turns it off).
    pub rate_global: u32,
    /// Requests served at once; more are refused with 503
    /// (`HOPPER_MAX_CONCURRENT_REQUESTS`, default 1,024).
    pub max_concurrent_requests: usize,
    /// Unfinished jobs one tenant may have in each queue; more are refused
    /// with 429 (`HOPPER_MAX_PENDING_PER_TENANT`, default 100,000).
    pub max_pending_per_tenant: u64,
    /// Unfinished high-priority jobs (submissions with `priority=high`,
    /// search queries) one tenant may have in each queue; more are refused
    /// with 429 (`HOPPER_MAX_HIGH_PRIORITY_PER_TENANT`, default 1,000).
    pub max_high_priority_per_tenant: u64,
    /// Whether a vector search asks the workers for its query's vector on
    /// the query lane, with no job (`HOPPER_SEARCH_QUERY_LANE`, default
    /// true; `hopper_shared::query_lane`), before it falls back to an
    /// `embed` job.
    pub search_query_lane: bool,
    /// Longest life of one document event stream; it then ends with a
    /// `reconnect` event (`HOPPER_SSE_MAX_LIFETIME_MS`, default 10 min).
    pub sse_max_lifetime: Duration,
    /// Document event streams one tenant may hold open on one API replica;
    /// more get 429 (`HOPPER_SSE_MAX_STREAMS_PER_TENANT`, default 100).
    pub sse_max_streams_per_tenant: usize,
    /// Origins allowed by CORS (`HOPPER_CORS_ORIGINS`, comma-separated; none
    /// by default).
    pub cors_origins: Vec<String>,
    /// Requests per second (sustained, and the burst) one client address may
    /// make without a valid API key — no key, a malformed, unknown, revoked
    /// or wrong one — counted *before* the key is looked up, so a flood of
    /// made-up keys costs no Postgres query past it; more get 429
    /// (`HOPPER_RATE_PER_ADDRESS`, default 10; 0 turns it off).
    pub rate_per_address: u32,
    /// Proxies whose `X-Forwarded-For` names the client
    /// (`HOPPER_TRUSTED_PROXIES`, comma-separated CIDRs or addresses; none
    /// by default: the peer address is the client and the header is ignored).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The durability option (`HOPPER_REDIS_WAIT_*`): how many replicas must
/// hold a push, an ack or a fail before it counts, and how long to wait for
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisWait {
    /// Replicas that must acknowledge (0: off, no `WAIT` is sent).
    pub replicas: u32,
    /// How long one `WAIT` may block.
    pub timeout: Duration,
}

impl RedisWait {
    /// The default time limit of one `WAIT`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
    /// The most replicas one can ask for.
    pub const MAX_REPLICAS: u32 = 16;

    /// Whether the option is on.
    pub fn is_on(&self) -> bool {
        self.replicas > 0
    }
}

impl Default for RedisWait {
    fn default() -> Self {
        Self {
            replicas: 0,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// Settings shared by the API, the workers and the CLI. Its `Debug` hides
/// the passwords in the service URLs (secrets are never logged).
#[derive(Clone)]
pub struct Config {
    /// Redis connection URL (`REDIS_URL`).
    pub redis_url: String,
    /// TLS files for a `rediss://` Redis (`HOPPER_REDIS_TLS_*_FILE`).
    pub redis_tls: crate::tls::TlsFiles,
    /// The durability option: after a push, an ack or a fail, wait until this
    /// many replicas of the queue's node have the write (`WAIT`), with its
    /// time limit (`HOPPER_REDIS_WAIT_REPLICAS`, default 0: off;
    /// `HOPPER_REDIS_WAIT_TIMEOUT_MS`, default 500).
    pub redis_wait: RedisWait,
    /// Postgres connection URL (`DATABASE_URL`).
    pub database_url: String,
    /// TLS files for Postgres (`HOPPER_PG_TLS_*_FILE`; any set, or
    /// `sslmode=require` in the URL: TLS only).
    pub pg_tls: crate::tls::TlsFiles,
    /// Postgres schema holding Hopper's tables (`HOPPER_DB_SCHEMA`).
    pub db_schema: String,
    /// Prefix of every Redis key (`HOPPER_KEY_PREFIX`); tests use their own.
    pub key_prefix: String,
    /// Address the API listens on (`HOPPER_API_ADDR`).
    pub api_addr: SocketAddr,
    /// Largest request body, documents included (`HOPPER_MAX_UPLOAD_BYTES`,
    /// default 25 MB).
    pub max_upload_bytes: usize,
    /// Where a worker serves /metrics and /health/* (`HOPPER_WORKER_METRICS_ADDR`);
    /// none when unset.
    pub worker_metrics_addr: Option<SocketAddr>,
    /// Log line format (`HOPPER_LOG_FORMAT` = `text` | `json`).
    pub log_format: LogFormat,
    /// Where spans go as OpenTelemetry traces, the OTLP/HTTP collector's base
    /// URL (`HOPPER_OTLP_ENDPOINT`, e.g. `http://localhost:4318`); off when
    /// unset.
    pub otlp_endpoint: Option<url::Url>,
    /// How often a worker renews its lease (`HOPPER_HEARTBEAT_MS`).
    pub heartbeat: Duration,
    /// A worker silent for this long is presumed dead and its jobs re-run
    /// (`HOPPER_LEASE_MS`).
    pub lease: Duration,
    /// How long a stopping worker waits for running jobs
    /// (`HOPPER_SHUTDOWN_GRACE_MS`).
    pub shutdown_grace: Duration,
    /// High-priority jobs claimed in a row before one normal job goes first,
    /// so high priority cannot starve normal (`HOPPER_HIGH_PRIORITY_BURST`,
    /// default 10; 0: high always first).
    pub high_priority_burst: u32,
    /// Whether this process (an API or a worker) runs the scheduler loop that
    /// fires schedule ticks (`HOPPER_SCHEDULER`, default `true`; any number may:
    /// each tick fires exactly once).
    pub scheduler: bool,
    /// Postgres pool and statement time limits.
    pub db_timeouts: DbTimeouts,
    /// Per-queue settings, by queue name ([`Config::queue`]).
    pub queues: QueueSettingsByName,
    /// An OpenAI-compatible chat endpoint for summaries; extractive
    /// summaries when unset.
    pub summary_llm: Option<LlmConfig>,
    /// The API's authentication and limits.
    pub api: ApiSettings,
    /// Completion callbacks: signing secret and allowed destinations.
    pub webhook: crate::webhook::WebhookConfig,
    /// How long finished work is kept (Redis dead letters, Postgres records
    /// and embed results) and how the Postgres sweep runs.
    pub retention: crate::retention::RetentionSettings,
    /// Limits on extracting and chunking one document (`ingest` workers).
    pub extract: ExtractLimits,
}

/// Time limits on Postgres, so no caller (a job's ack, a health check) waits
/// on it for ever.
#[derive(Debug, Clone, Copy)]
pub struct DbTimeouts {
    /// Waiting for a pooled connection, opening one and checking one before
    /// reuse, each (`HOPPER_DB_POOL_TIMEOUT_MS`, default 5 s).
    pub pool: Duration,
    /// Postgres' `statement_timeout` on every connection
    /// (`HOPPER_DB_STATEMENT_TIMEOUT_MS`, default 30 s; 0: none).
    pub statement: Duration,
}

impl Default for DbTimeouts {
    fn default() -> Self {
        Self {
            pool: Duration::from_secs(5),
            statement: Duration::from_secs(30),
        }
    }
}

/// Limits on extracting and chunking one document, enforced by the worker
/// around the `hopper-extract` child process it runs per document
/// (`worker/src/pipeline/sandbox.rs`). A document that breaks one fails,
/// permanently, with an error naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Wall-clock time for one document, after which the child is killed
    /// (`HOPPER_EXTRACT_TIMEOUT_MS`, default 60 s); its CPU time is limited
    /// to the same, rounded up.
    pub timeout: Duration,
    /// The child's address space in MiB (`HOPPER_EXTRACT_MAX_MEMORY_MB`,
    /// default 2048; at least 512: the parsing thread's stack alone reserves
    /// 256).
    pub max_memory_mb: u64,
    /// Pages a PDF may have (`HOPPER_EXTRACT_MAX_PDF_PAGES`, default 2000).
    pub max_pdf_pages: usize,
    /// Element nesting an HTML document may have
    /// (`HOPPER_EXTRACT_MAX_HTML_DEPTH`, default 512).
    pub max_html_depth: usize,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_memory_mb: 2048,
            max_pdf_pages: 2000,
            max_html_depth: 512,
        }
    }
}

/// An OpenAI-compatible chat-completions endpoint (`HOPPER_SUMMARY_LLM_*`).
#[derive(Clone)]
pub struct LlmConfig {
    /// Base URL, e.g. `https://api.openai.com/v1` (`HOPPER_SUMMARY_LLM_URL`).
    pub base_url: String,
    /// Model name (`HOPPER_SUMMARY_LLM_MODEL`).
    pub model: String,
    /// Bearer key (`HOPPER_SUMMARY_LLM_KEY`, or a file named by
    /// `HOPPER_SUMMARY_LLM_KEY_FILE`); never logged.
    pub api_key: Option<String>,
    /// Per-request timeout (`HOPPER_SUMMARY_LLM_TIMEOUT_MS`, default 30 s).
    pub timeout: Duration,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_tls", &self.redis_tls)
            .field("redis_wait", &self.redis_wait)
            .field("database_url", &redact_url(&self.database_url))
            .field("pg_tls", &self.pg_tls)
            .field("db_schema", &self.db_schema)
            .field("key_prefix", &self.key_prefix)
            .field("api_addr", &self.api_addr)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("worker_metrics_addr", &self.worker_metrics_addr)
            .field("log_format", &self.log_format)
            .field(
                "otlp_endpoint",
                &self.otlp_endpoint.as_ref().map(|u| redact_url(u.as_str())),
            )
            .field("heartbeat", &self.heartbeat)
            .field("lease", &self.lease)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("queues", &self.queues)
            .field("summary_llm", &self.summary_llm)
            .field("api", &self.api)
            .field("webhook", &self.webhook)
            .field("retention", &self.retention)
            .field("extract", &self.extract)
            .finish()
    }
}

impl Config {
    /// Loads the configuration from the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(std::env::vars())
    }

    /// Loads the configuration from these variables (name, value). Unlike
    /// [`Config::from_lookup`] it can list them, so it also finds the
    /// settings of queues other than the built-in ones
    /// (`HOPPER_QUEUE_<NAME>_<SETTING>` for any name).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, Error> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let names: Vec<&str> = vars.keys().map(String::as_str).collect();
        Self::load(|k| vars.get(k).cloned(), &names)
    }

    /// Loads the configuration through `get`, which maps a variable name to
    /// its value. Every problem found is reported in one error. Only the
    /// built-in queues' settings are read (`get` cannot list the others).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        Self::load(get, &[])
    }

    /// Loads the configuration through `get`; `var_names` are the variables
    /// that exist (to find other queues' settings), when known. Each section
    /// is read by a function of its own, which records its problems in the
    /// one [`Env`]; they are read in this order, so the problems are listed
    /// in it.
    fn load(get: impl Fn(&str) -> Option<String>, var_names: &[&str]) -> Result<Self, Error> {
        let mut problems = Vec::new();
        let mut env = Env {
            get: &get,
            problems: &mut problems,
        };

        let redis_url = redis_url(&mut env);
        let redis_tls = redis_tls(&mut env, &redis_url);
        let redis_wait = redis_wait(&mut env);
        let pg_tls = env.tls_files(crate::tls::PG_TLS_VARS);
        let database_url = database_url(&mut env);
        let db_schema = db_schema(&mut env);
        let key_prefix = key_prefix(&mut env);
        let api_addr = env.parse("HOPPER_API_ADDR", "127.0.0.1:8080".parse().unwrap());
        let max_upload_bytes = env.parse("HOPPER_MAX_UPLOAD_BYTES", 25 * 1024 * 1024);
        let worker_metrics_addr = worker_metrics_addr(&mut env);
        let log_format = log_format(&mut env);
        let otlp_endpoint = otlp_endpoint(&mut env);
        let heartbeat = env.millis("HOPPER_HEARTBEAT_MS", Duration::from_secs(2));
        let lease = lease(&mut env, heartbeat);
        let shutdown_grace = env.millis("HOPPER_SHUTDOWN_GRACE_MS", Duration::from_secs(30));
        let high_priority_burst = env.parse("HOPPER_HIGH_PRIORITY_BURST", 10);
        let scheduler = env.parse("HOPPER_SCHEDULER", true);
        let db_timeouts = db_timeouts(&mut env);
        let queues = queues(&mut env, var_names);
        let summary_llm = summary_llm(&mut env);
        let api = api_settings(&mut env);
        let webhook = webhook_config(&mut env);
        let retention = retention_settings(&mut env);
        let extract = extract_limits(&mut env, &queues);

        if !problems.is_empty() {
            return Err(Error::Config(problems));
        }
        Ok(Self {
            redis_url,
            redis_tls,
            redis_wait,
            pg_tls,
            database_url,
            db_schema,
            key_prefix,
            api_addr,
            max_upload_bytes,
            worker_metrics_addr,
            log_format,
            otlp_endpoint,
            heartbeat,
            lease,
            shutdown_grace,
            high_priority_burst,
            scheduler,
            db_timeouts,
            queues,
            summary_llm,
            api,
            webhook,
            retention,
            extract,
        })
    }

    /// Settings of the queue `name`: as configured (see
    /// [`crate::queue_settings`]), else the defaults.
    pub fn queue(&self, name: impl Into<QueueName>) -> QueueSettings {
        self.queues.get(&name.into())
    }
}

/// `REDIS_URL`: one server or a Redis Cluster, with or without TLS.
fn redis_url<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> String {
    let url = env.string("REDIS_URL", DEFAULT_REDIS_URL);
    if ![
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
    ]
    .iter()
    .any(|s| url.starts_with(s))
    {
        env.problem(
            "REDIS_URL",
            &url,
            "must start with redis:// or rediss:// (one server), or redis+cluster:// or \
             rediss+cluster:// (a Redis Cluster: host:port,host:port,…)",
        );
    }
    url
}

/// `HOPPER_REDIS_TLS_*_FILE`, which need a `rediss` `redis_url`.
fn redis_tls<F: Fn(&str) -> Option<String>>(
    env: &mut Env<'_, F>,
    redis_url: &str,
) -> crate::tls::TlsFiles {
    let tls = env.tls_files(crate::tls::REDIS_TLS_VARS);
    if !tls.is_empty() && !redis_url.starts_with("rediss") {
        env.problem(
            "REDIS_URL",
            &redact_url(redis_url),
            "must be rediss:// (or rediss+cluster://) when HOPPER_REDIS_TLS_* files are set",
        );
    }
    tls
}

/// The durability option, `HOPPER_REDIS_WAIT_REPLICAS` and
/// `HOPPER_REDIS_WAIT_TIMEOUT_MS`.
fn redis_wait<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> RedisWait {
    let wait = RedisWait {
        replicas: env.parse("HOPPER_REDIS_WAIT_REPLICAS", 0),
        timeout: env.millis("HOPPER_REDIS_WAIT_TIMEOUT_MS", RedisWait::DEFAULT_TIMEOUT),
    };
    if wait.replicas > RedisWait::MAX_REPLICAS {
        env.problem(
            "HOPPER_REDIS_WAIT_REPLICAS",
            &wait.replicas.to_string(),
            &format!(
                "must be at most {} (replicas of one master)",
                RedisWait::MAX_REPLICAS
            ),
        );
    }
    if wait.replicas > 0 && wait.timeout.is_zero() {
        // WAIT n 0 blocks for ever: a dead replica would stop every write.
        env.problem(
            "HOPPER_REDIS_WAIT_TIMEOUT_MS",
            "0",
            "must be at least 1 when HOPPER_REDIS_WAIT_REPLICAS is on (0 would wait for ever)",
        );
    }
    wait
}

/// `DATABASE_URL`.
fn database_url<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> String {
    let url = env.string("DATABASE_URL", DEFAULT_DATABASE_URL);
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        env.problem(
            "DATABASE_URL",
            &url,
            "must start with postgresql:// or postgres://",
        );
    }
    url
}

/// `HOPPER_DB_SCHEMA`, a plain identifier (it is interpolated into SQL).
fn db_schema<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> String {
    let schema = env.string("HOPPER_DB_SCHEMA", "public");
    if !is_identifier(&schema) {
        env.problem(
            "HOPPER_DB_SCHEMA",
            &schema,
            "must be a lower-case SQL identifier ([a-z_][a-z0-9_]*)",
        );
    }
    schema
}

/// `HOPPER_KEY_PREFIX`, the prefix of every Redis key.
fn key_prefix<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> String {
    let prefix = env.string("HOPPER_KEY_PREFIX", "hopper");
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        env.problem(
            "HOPPER_KEY_PREFIX",
            &prefix,
            "must be letters, digits, '-', '_' or '.'",
        );
    }
    prefix
}

/// `HOPPER_WORKER_METRICS_ADDR`; none when unset.
fn worker_metrics_addr<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> Option<SocketAddr> {
    let raw = env.value("HOPPER_WORKER_METRICS_ADDR")?;
    match raw.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            env.problem(
                "HOPPER_WORKER_METRICS_ADDR",
                &raw,
                "is not a valid SocketAddr",
            );
            None
        }
    }
}

/// `HOPPER_OTLP_ENDPOINT`: an http(s) URL; none when unset or empty.
fn otlp_endpoint<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> Option<url::Url> {
    let raw = env
        .value("HOPPER_OTLP_ENDPOINT")
        .filter(|v| !v.trim().is_empty())?;
    match url::Url::parse(raw.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        _ => {
            env.problem(
                "HOPPER_OTLP_ENDPOINT",
                &raw,
                "must be an http(s) URL such as http://localhost:4318",
            );
            None
        }
    }
}

/// `HOPPER_LOG_FORMAT`.
fn log_format<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> LogFormat {
    match env.string("HOPPER_LOG_FORMAT", "text").as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            env.problem("HOPPER_LOG_FORMAT", other, "must be `text` or `json`");
            LogFormat::Text
        }
    }
}

/// `HOPPER_LEASE_MS`, at least twice the `heartbeat` period.
fn lease<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>, heartbeat: Duration) -> Duration {
    let lease = env.millis("HOPPER_LEASE_MS", Duration::from_secs(10));
    if lease < heartbeat * 2 {
        env.problem(
            "HOPPER_LEASE_MS",
            &lease.as_millis().to_string(),
            "must be at least twice HOPPER_HEARTBEAT_MS",
        );
    }
    lease
}

/// `HOPPER_DB_POOL_TIMEOUT_MS` and `HOPPER_DB_STATEMENT_TIMEOUT_MS`.
fn db_timeouts<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> DbTimeouts {
    let d = DbTimeouts::default();
    let timeouts = DbTimeouts {
        pool: env.millis("HOPPER_DB_POOL_TIMEOUT_MS", d.pool),
        statement: env.millis("HOPPER_DB_STATEMENT_TIMEOUT_MS", d.statement),
    };
    if timeouts.pool.is_zero() {
        env.problem("HOPPER_DB_POOL_TIMEOUT_MS", "0", "must be at least 1");
    }
    timeouts
}

/// Every queue's settings: the built-in kinds', then those of the other
/// queues `var_names` hold `HOPPER_QUEUE_<NAME>_<SETTING>` variables of.
fn queues<F: Fn(&str) -> Option<String>>(
    env: &mut Env<'_, F>,
    var_names: &[&str],
) -> QueueSettingsByName {
    let mut built_in = BTreeMap::new();
    for kind in JobKind::ALL {
        let name = QueueName::from(kind);
        let settings = queue_settings(env, &name.env_suffix(), kind.default_settings());
        built_in.insert(name, settings);
    }
    let built_in_suffixes = built_in.keys().map(QueueName::env_suffix).collect();
    let mut configured = BTreeMap::new();
    let mut overrides = BTreeMap::new();
    for suffix in configured_suffixes(var_names.iter().copied(), &built_in_suffixes) {
        let settings = queue_settings(env, &suffix, QueueSettings::default());
        let set = QUEUE_SETTING_VARS
            .into_iter()
            .filter(|s| {
                var_names
                    .iter()
                    .any(|v| *v == format!("HOPPER_QUEUE_{suffix}_{s}"))
            })
            .collect();
        overrides.insert(suffix.clone(), SettingsOverride::from_set(&settings, &set));
        configured.insert(suffix, settings);
    }
    QueueSettingsByName::new(built_in, configured).with_overrides(overrides)
}

/// `HOPPER_SUMMARY_LLM_*`; none (extractive summaries) without
/// `HOPPER_SUMMARY_LLM_URL`.
fn summary_llm<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> Option<LlmConfig> {
    let base_url = env.value("HOPPER_SUMMARY_LLM_URL")?;
    if !base_url.starts_with("http://") && !base_url.starts_with("https://") {
        env.problem(
            "HOPPER_SUMMARY_LLM_URL",
            &base_url,
            "must be an http(s) URL",
        );
    }
    let model = env.value("HOPPER_SUMMARY_LLM_MODEL").unwrap_or_default();
    if model.is_empty() {
        env.problem(
            "HOPPER_SUMMARY_LLM_MODEL",
            "",
            "is required with HOPPER_SUMMARY_LLM_URL",
        );
    }
    let api_key = env.secret("HOPPER_SUMMARY_LLM_KEY");
    let timeout = env.millis("HOPPER_SUMMARY_LLM_TIMEOUT_MS", Duration::from_secs(30));
    Some(LlmConfig {
        base_url: base_url.trim_end_matches('/').to_owned(),
        model,
        api_key,
        timeout,
    })
}

/// The API's protections: `HOPPER_AUTH`, `HOPPER_CORS_ORIGINS`,
/// `HOPPER_TRUSTED_PROXIES`, the rates and the caps.
fn api_settings<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> ApiSettings {
    let auth = auth_mode(env);
    let cors_origins = cors_origins(env);
    let trusted_proxies = trusted_proxies(env);
    let api = ApiSettings {
        auth,
        rate_per_key: env.parse("HOPPER_RATE_PER_KEY", 200),
        rate_global: env.parse("HOPPER_RATE_GLOBAL", 5_000),
        max_concurrent_requests: env.parse("HOPPER_MAX_CONCURRENT_REQUESTS", 1_024),
        max_pending_per_tenant: env.parse("HOPPER_MAX_PENDING_PER_TENANT", 100_000),
        max_high_priority_per_tenant: env.parse("HOPPER_MAX_HIGH_PRIORITY_PER_TENANT", 1_000),
        search_query_lane: env.parse("HOPPER_SEARCH_QUERY_LANE", true),
        sse_max_lifetime: env.millis("HOPPER_SSE_MAX_LIFETIME_MS", Duration::from_secs(600)),
        sse_max_streams_per_tenant: env.parse("HOPPER_SSE_MAX_STREAMS_PER_TENANT", 100),
        cors_origins,
        rate_per_address: env.parse("HOPPER_RATE_PER_ADDRESS", 10),
        trusted_proxies,
    };
    if api.max_concurrent_requests == 0 {
        env.problem("HOPPER_MAX_CONCURRENT_REQUESTS", "0", "must be at least 1");
    }
    if api.sse_max_lifetime.is_zero() {
        env.problem("HOPPER_SSE_MAX_LIFETIME_MS", "0", "must be at least 1");
    }
    if api.sse_max_streams_per_tenant == 0 {
        env.problem(
            "HOPPER_SSE_MAX_STREAMS_PER_TENANT",
            "0",
            "must be at least 1",
        );
    }
    api
}

/// `HOPPER_AUTH`: `keys` (the default) or `open`.
fn auth_mode<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> AuthMode {
    match env.string("HOPPER_AUTH", "keys").as_str() {
        "keys" => AuthMode::Keys,
        "open" => AuthMode::Open,
        other => {
            env.problem("HOPPER_AUTH", other, "must be `keys` or `open`");
            AuthMode::Keys
        }
    }
}

/// `HOPPER_CORS_ORIGINS`: comma-separated http(s) origins.
fn cors_origins<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> Vec<String> {
    let origins: Vec<String> = env
        .string("HOPPER_CORS_ORIGINS", "")
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    for origin in &origins {
        if !origin.starts_with("http://") && !origin.starts_with("https://") {
            env.problem(
                "HOPPER_CORS_ORIGINS",
                origin,
                "must list http(s) origins such as https://app.example.com",
            );
        }
    }
    origins
}

/// `HOPPER_TRUSTED_PROXIES`: comma-separated CIDRs or addresses.
fn trusted_proxies<F: Fn(&str) -> Option<String>>(env: &mut Env<'_, F>) -> Vec<ipnet::IpNet> {
    let mut proxies = Vec::new();
    for raw in env
        .string("HOPPER_TRUSTED_PROXIES", "")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match raw
            .parse::<ipnet::IpNet>()
            .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(net) => proxies.push(net.trunc()),
            Err(_) => env.problem(
                "HOPPER_TRUSTED_PROXIES",
                raw,
                "must list CIDRs or addresses such as 10.0.0.0/8 or 127.0.0.1",
            ),
        }
    }
    proxies
}

/// Completion callbacks: `HOPPER_WEBHOOK_SECRET` (or `…_FILE`),
/// `HOPPER_WEBHOOK_ALLOW_HOSTS` and `HOPPER_WEBHOOK_ALLOW_PRIVATE`.
fn webhook_config<F: Fn(&str) -> Option<String>>(
    env: &mut Env<'_, F>,
) -> crate::webhook::WebhookConfig {
    let secret = env.secret("HOPPER_WEBHOOK_SECRET");
    if secret.as_ref().is_some_and(|s| s.len() < 16) {
        env.problem(
            "HOPPER_WEBHOOK_SECRET",
            "***",
            "must be at least 16 characters",
        );
    }
    crate::webhook::WebhookConfig {
        secret,
        allow_hosts: env
            .string("HOPPER_WEBHOOK_ALLOW_HOSTS", "")
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_ascii_lowercase)
            .collect(),
        allow_private: match env.string("HOPPER_WEBHOOK_ALLOW_PRIVATE", "0").as_str() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => {
                env.problem("HOPPER_WEBHOOK_ALLOW_PRIVATE", other, "must be 0 or 1");
                false
            }
        },
    }
}

/// The settings of the queue whose env suffix is `suffix`: `d` (the
/// defaults) overridden by its `HOPPER_QUEUE_<SUFFIX>_<SETTING>` variables.
fn queue_settings<F: Fn(&str) -> Option<String>>(
    env: &mut Env<'_, F>,
    suffix: &str,
    d: QueueSettings,
) -> QueueSettings {
    let var = |s: &str| {
        debug_assert!(QUEUE_SETTING_VARS.contains(&s), "{s}");
        format!("HOPPER_QUEUE_{suffix}_{s}")
    };
    let s = QueueSettings {
        concurrency: env.parse(&var("CONCURRENCY"), d.concurrency),
        max_attempts: env.parse(&var("MAX_ATTEMPTS"), d.max_attempts),
        backoff_base: env.millis(&var("BACKOFF_BASE_MS"), d.backoff_base),
        backoff_max: env.millis(&var("BACKOFF_MAX_MS"), d.backoff_max),
        soft_time_limit: env.millis(&var("SOFT_LIMIT_MS"), d.soft_time_limit),
        hard_time_limit: env.millis(&var("HARD_LIMIT_MS"), d.hard_time_limit),
        retention: env.millis(&var("RETENTION_MS"), d.retention),
        rate_limit: env.rate_limit(&var("RATE_LIMIT"), d.rate_limit),
        tenant_concurrency: env.optional_count(&var("TENANT_CONCURRENCY"), d.tenant_concurrency),
        partitions: env.parse(&var("PARTITIONS"), d.partitions),
    };
    if !(1..=crate::queue_name::MAX_PARTITIONS).contains(&s.partitions) {
        env.problem(
            &var("PARTITIONS"),
            &s.partitions.to_string(),
            "must be between 1 and 64",
        );
    }
    if s.concurrency == 0 {
        env.problem(&var("CONCURRENCY"), "0", "must be at least 1");
    }
    if s.max_attempts == 0 {
        env.problem(&var("MAX_ATTEMPTS"), "0", "must be at least 1");
    }
    if s.soft_time_limit > s.hard_time_limit {
        env.problem(
            &var("SOFT_LIMIT_MS"),
            &s.soft_time_limit.as_millis().to_string(),
            "must not exceed the hard limit",
        );
    }
    s
}

/// `HOPPER_EXTRACT_*`; the timeout must leave the ingest job time to store
/// what was extracted.
fn extract_limits<F: Fn(&str) -> Option<String>>(
    env: &mut Env<'_, F>,
    queues: &QueueSettingsByName,
) -> ExtractLimits {
    let d = ExtractLimits::default();
    let limits = ExtractLimits {
        timeout: env.millis("HOPPER_EXTRACT_TIMEOUT_MS", d.timeout),
        max_memory_mb: env.parse("HOPPER_EXTRACT_MAX_MEMORY_MB", d.max_memory_mb),
        max_pdf_pages: env.parse("HOPPER_EXTRACT_MAX_PDF_PAGES", d.max_pdf_pages),
        max_html_depth: env.parse("HOPPER_EXTRACT_MAX_HTML_DEPTH", d.max_html_depth),
    };
    let ingest_limit = queues.get(&JobKind::Ingest.into()).soft_time_limit;
    if limits.timeout.is_zero() || limits.timeout >= ingest_limit {
        env.problem(
            "HOPPER_EXTRACT_TIMEOUT_MS",
            &limits.timeout.as_millis().to_string(),
            &format!(
                "must be at least 1 and under the ingest queue's soft time limit ({} ms)",
                ingest_limit.as_millis()
            ),
        );
    }
    if limits.max_memory_mb < 512 {
        env.problem(
            "HOPPER_EXTRACT_MAX_MEMORY_MB",
            &limits.max_memory_mb.to_string(),
            "must be at least 512",
        );
    }
    for (var, value) in [
        ("HOPPER_EXTRACT_MAX_PDF_PAGES", limits.max_pdf_pages),
        ("HOPPER_EXTRACT_MAX_HTML_DEPTH", limits.max_html_depth),
    ] {
        if value == 0 {
            env.problem(var, "0", "must be at least 1");
        }
    }
    limits
}

/// `HOPPER_DEAD_RETENTION_MS`, `HOPPER_RECORD_RETENTION_DAYS`,
/// `HOPPER_EMBED_RESULT_RETENTION_DAYS`, `HOPPER_RETENTION_SWEEP_MS`,
/// `HOPPER_RETENTION_BATCH`, `HOPPER_NOOP_LATENCIES_KEEP` and
/// `HOPPER_REEMBED_GRACE_MS`.
fn retention_settings<F: Fn(&str) -> Option<String>>(
    env: &mut Env<'_, F>,
) -> crate::retention::RetentionSettings {
    use crate::retention::{DAY, RetentionSettings};
    let d = RetentionSettings::default();
    let mut days = |var: &str, default: Duration| {
        let n: u32 = env.parse(var, (default.as_secs() / DAY.as_secs()) as u32);
        if n > 36_500 {
            env.problem(
                var,
                &n.to_string(),
                "must be at most 36500 (100 years; 0: keep for ever)",
            );
        }
        DAY * n
    };
    let job_records = days("HOPPER_RECORD_RETENTION_DAYS", d.job_records);
    let embed_results = days("HOPPER_EMBED_RESULT_RETENTION_DAYS", d.embed_results);
    let s = RetentionSettings {
        dead_letters: env.millis("HOPPER_DEAD_RETENTION_MS", d.dead_letters),
        job_records,
        embed_results,
        sweep_every: env.millis("HOPPER_RETENTION_SWEEP_MS", d.sweep_every),
        batch: env.parse("HOPPER_RETENTION_BATCH", d.batch),
        noop_latencies: env.parse("HOPPER_NOOP_LATENCIES_KEEP", d.noop_latencies),
        reembed_grace: env.millis("HOPPER_REEMBED_GRACE_MS", d.reembed_grace),
    };
    if s.reembed_grace > 30 * DAY {
        env.problem(
            "HOPPER_REEMBED_GRACE_MS",
            &s.reembed_grace.as_millis().to_string(),
            "must be at most 30 days",
        );
    }
    for (var, value) in [
        (
            "HOPPER_RETENTION_SWEEP_MS",
            s.sweep_every.as_millis() as u64,
        ),
        ("HOPPER_RETENTION_BATCH", u64::from(s.batch)),
        ("HOPPER_NOOP_LATENCIES_KEEP", u64::from(s.noop_latencies)),
    ] {
        if value == 0 {
            env.problem(var, "0", "must be at least 1");
        }
    }
    s
}

/// Whether `s` is a plain lower-case SQL identifier (safe to interpolate).
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// `url` with its password hidden, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Reads variables and records every problem instead of stopping at the first.
struct Env<'a, F> {
    get: &'a F,
    problems: &'a mut Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn problem(&mut self, var: &str, value: &str, why: &str) {
        self.problems.push(format!("{var}={value:?} {why}"));
    }

    /// The value of `var`, if set.
    fn value(&self, var: &str) -> Option<String> {
        (self.get)(var)
    }

    /// The TLS files `vars` (CA, certificate, key) name.
    fn tls_files(&mut self, vars: [&str; 3]) -> crate::tls::TlsFiles {
        let (files, problems) = crate::tls::TlsFiles::from_vars(vars, self.get);
        for (var, value, why) in problems {
            self.problem(&var, &value, &why);
        }
        files
    }

    fn string(&mut self, var: &str, default: &str) -> String {
        (self.get)(var).unwrap_or_else(|| default.to_owned())
    }

    fn parse<T: FromStr>(&mut self, var: &str, default: T) -> T {
        match (self.get)(var) {
            None => default,
            Some(raw) => raw.trim().parse().unwrap_or_else(|_| {
                self.problem(var, &raw, &format!("is not a valid {}", short_type::<T>()));
                default
            }),
        }
    }

    /// A rate limit (`20/s`), `off` for none, or `default` when unset.
    fn rate_limit(
        &mut self,
        var: &str,
        default: Option<crate::rate_limit::RateLimit>,
    ) -> Option<crate::rate_limit::RateLimit> {
        match (self.get)(var) {
            None => default,
            Some(raw) if matches!(raw.trim(), "off" | "none" | "0") => None,
            Some(raw) => match raw.parse() {
                Ok(limit) => Some(limit),
                Err(e) => {
                    self.problem(var, &raw, &e.to_string());
                    default
                }
            },
        }
    }

    /// A count of at least 1, `off` (or `none`, `0`) for none, or `default`
    /// when unset.
    fn optional_count(&mut self, var: &str, default: Option<u32>) -> Option<u32> {
        match (self.get)(var) {
            None => default,
            Some(raw) if matches!(raw.trim(), "off" | "none" | "0") => None,
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(n) => Some(n),
                Err(e) => {
                    self.problem(var, &raw, &format!("a count of at least 1, or `off`: {e}"));
                    default
                }
            },
        }
    }

    fn millis(&mut self, var: &str, default: Duration) -> Duration {
        Duration::from_millis(self.parse(var, default.as_millis() as u64))
    }

    /// A secret from `var`, or from the file named by `var_FILE` (trimmed).
    /// Empty means unset (compose passes `${VAR:-}`).
    fn secret(&mut self, var: &str) -> Option<String> {
        let file_var = format!("{var}_FILE");
        let nonempty = |k: &str| (self.get)(k).filter(|v| !v.is_empty());
        match (nonempty(var), nonempty(&file_var)) {
            (Some(s), _) => Some(s),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(s) => Some(s.trim().to_owned()),
                Err(e) => {
                    self.problem(&file_var, &path, &format!("cannot be read: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }
}

fn short_type<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    name.rsplit("::").next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, Error> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn the_durability_option_is_off_by_default_and_checked() {
        let c = load(&[]).unwrap();
        assert!(!c.redis_wait.is_on());
        let c = load(&[
            ("HOPPER_REDIS_WAIT_REPLICAS", "1"),
            ("HOPPER_REDIS_WAIT_TIMEOUT_MS", "250"),
        ])
        .unwrap();
        assert_eq!(
            c.redis_wait,
            RedisWait {
                replicas: 1,
                timeout: Duration::from_millis(250)
            }
        );
        let e = load(&[
            ("HOPPER_REDIS_WAIT_REPLICAS", "1"),
            ("HOPPER_REDIS_WAIT_TIMEOUT_MS", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("HOPPER_REDIS_WAIT_TIMEOUT_MS"), "{e}");
        let e = load(&[("HOPPER_REDIS_WAIT_REPLICAS", "-1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("HOPPER_REDIS_WAIT_REPLICAS"), "{e}");
        let e = load(&[("HOPPER_REDIS_WAIT_REPLICAS", "99")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 16"), "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgresql://u:secret@h:5/db"),
            "postgresql://u:***@h:5/db"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn the_debug_form_of_a_config_holds_no_secret() {
        let c = load(&[
            ("DATABASE_URL", "postgresql://u:pg-secret@h:5/db"),
            ("REDIS_URL", "redis://:redis-secret@h:6379"),
            ("HOPPER_SUMMARY_LLM_URL", "https://llm.example"),
            ("HOPPER_SUMMARY_LLM_MODEL", "m"),
            ("HOPPER_SUMMARY_LLM_KEY", "llm-secret"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["pg-secret", "redis-secret", "llm-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(&[]).unwrap();
        assert_eq!(c.redis_url, DEFAULT_REDIS_URL);
        assert_eq!(c.queue(JobKind::Echo).concurrency, 32);
    }

    #[test]
    fn queue_settings_are_overridden_per_kind() {
        let c = load(&[
            ("HOPPER_QUEUE_EMBED_CONCURRENCY", "3"),
            ("HOPPER_QUEUE_EMBED_MAX_ATTEMPTS", "9"),
        ])
        .unwrap();
        assert_eq!(c.queue(JobKind::Embed).concurrency, 3);
        assert_eq!(c.queue(JobKind::Embed).max_attempts, 9);
        assert_eq!(
            c.queue(JobKind::Ingest).max_attempts,
            JobKind::Ingest.default_settings().max_attempts
        );
    }

    #[test]
    fn any_queue_name_takes_its_settings_from_the_environment() {
        let c = load(&[
            ("HOPPER_QUEUE_OCR_V2_CONCURRENCY", "2"),
            ("HOPPER_QUEUE_OCR_V2_HARD_LIMIT_MS", "900000"),
            ("HOPPER_QUEUE_OCR_V2_SOFT_LIMIT_MS", "800000"),
        ])
        .unwrap();
        let ocr = c.queue("ocr.v2".parse::<QueueName>().unwrap());
        assert_eq!(ocr.concurrency, 2);
        assert_eq!(ocr.hard_time_limit, Duration::from_secs(900));
        assert_eq!(ocr.max_attempts, QueueSettings::default().max_attempts);
        let other = c.queue("rerank".parse::<QueueName>().unwrap());
        assert_eq!(other, QueueSettings::default());
        // The built-in kinds keep theirs.
        assert_eq!(
            c.queue(JobKind::Webhook),
            JobKind::Webhook.default_settings()
        );

        let err = load(&[("HOPPER_QUEUE_OCR_V2_CONCURRENCY", "0")]).unwrap_err();
        assert!(
            err.to_string().contains("HOPPER_QUEUE_OCR_V2_CONCURRENCY"),
            "{err}"
        );
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        assert!(load(&[]).unwrap().api.trusted_proxies.is_empty());
        let c = load(&[(
            "HOPPER_TRUSTED_PROXIES",
            "10.0.0.0/8, 127.0.0.1,::1, fd00::/8",
        )])
        .unwrap();
        let shown: Vec<String> = c
            .api
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "fd00::/8"]);
        let Err(Error::Config(problems)) = load(&[("HOPPER_TRUSTED_PROXIES", "10.0.0.0/33,proxy")])
        else {
            panic!("expected a config error");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn extract_limits_are_read_and_checked() {
        let c = load(&[
            ("HOPPER_EXTRACT_TIMEOUT_MS", "1500"),
            ("HOPPER_EXTRACT_MAX_HTML_DEPTH", "64"),
        ])
        .unwrap();
        assert_eq!(c.extract.timeout, Duration::from_millis(1500));
        assert_eq!(c.extract.max_html_depth, 64);
        assert_eq!(c.extract.max_pdf_pages, 2000);
        let Err(Error::Config(problems)) = load(&[
            // Not under the ingest queue's soft limit (540 s).
            ("HOPPER_EXTRACT_TIMEOUT_MS", "540000"),
            ("HOPPER_EXTRACT_MAX_MEMORY_MB", "100"),
            ("HOPPER_EXTRACT_MAX_PDF_PAGES", "0"),
        ]) else {
            panic!("expected a config error");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn the_otlp_endpoint_is_off_by_default_and_checked() {
        assert_eq!(load(&[]).unwrap().otlp_endpoint, None);
        let c = load(&[("HOPPER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).unwrap();
        assert_eq!(c.otlp_endpoint.unwrap().as_str(), "http://127.0.0.1:4318/");
        for bad in ["localhost:4318", "ftp://collector", "not a url"] {
            let Err(Error::Config(problems)) = load(&[("HOPPER_OTLP_ENDPOINT", bad)]) else {
                panic!("{bad} was accepted");
            };
            assert!(problems[0].contains("HOPPER_OTLP_ENDPOINT"), "{problems:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let Err(Error::Config(problems)) = load(&[
            ("REDIS_URL", "http://x"),
            ("HOPPER_DB_SCHEMA", "Robert'); DROP"),
            ("HOPPER_QUEUE_ECHO_CONCURRENCY", "many"),
            ("HOPPER_LOG_FORMAT", "xml"),
        ]) else {
            panic!("expected a config error");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("HOPPER_QUEUE_ECHO_CONCURRENCY"))
        );
    }
}
