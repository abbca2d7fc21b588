//! Test harness for Hopper's end-to-end tests.
//!
//! A [`TestEnv`] is one isolated Hopper: its own Redis key prefix and its own
//! Postgres schema on the real services `scripts/setup` started, so tests run
//! in parallel without seeing each other. It starts the real `hopper-api` and
//! `hopper-worker` binaries (built once per test process) and removes its
//! keys, schema and processes when dropped.

pub mod pdf;
pub mod private_cluster;
pub mod private_postgres;
pub mod private_redis;
pub mod sse;

pub use private_cluster::PrivateCluster;
pub use private_postgres::PrivatePostgres;
pub use private_redis::PrivateRedis;

use std::{
    collections::HashMap,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use hopper_shared::config::{DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL};
use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a workspace binary, built (once per test process) if needed.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--bins"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    dir.join("debug").join(name)
}

/// Redis URL of the test services.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// Postgres URL of the test services.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into())
}

/// The value of `series` (name and labels, as printed) in a Prometheus
/// text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// One isolated Hopper: key prefix, schema, and the processes it started.
pub struct TestEnv {
    /// Unique suffix of this environment.
    pub id: String,
    /// Environment given to every process it starts.
    pub env: HashMap<String, String>,
    /// API base URL, once [`TestEnv::start_api`] ran.
    pub api: Option<String>,
    children: Vec<Child>,
    logs: Vec<PathBuf>,
    http: reqwest::Client,
    key: Option<String>,
}

impl TestEnv {
    /// A fresh environment; `overrides` are added to every process' env.
    pub fn new(overrides: &[(&str, &str)]) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut env: HashMap<String, String> = [
            ("REDIS_URL", redis_url()),
            ("DATABASE_URL", database_url()),
            ("HOPPER_KEY_PREFIX", format!("t-{id}")),
            // Open mode unless a test asks for keys (tests/tests/auth.rs).
            ("HOPPER_AUTH", "open".into()),
            ("HOPPER_DB_SCHEMA", format!("t_{id}")),
            ("RUST_LOG", "info,tokio_postgres=warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        Self {
            id,
            env,
            api: None,
            children: Vec::new(),
            logs: Vec::new(),
            http: reqwest::Client::new(),
            key: None,
        }
    }

    /// The validated configuration the processes will see.
    pub fn config(&self) -> hopper_shared::Config {
        hopper_shared::Config::from_lookup(|k| self.env.get(k).cloned()).expect("valid config")
    }

    /// A pool on this environment's schema.
    pub fn pool(&self) -> deadpool_postgres::Pool {
        let c = self.config();
        hopper_shared::db::pool(&c, 4).expect("pool")
    }

    /// Starts `hopper-api` on a free port and waits until it is ready.
    pub async fn start_api(&mut self) -> String {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let (child, log) = self.spawn(
            "hopper-api",
            &[],
            &[("HOPPER_API_ADDR", &format!("127.0.0.1:{port}"))],
        );
        self.children.push(child);
        self.logs.push(log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.http.get(format!("{url}/health/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "hopper-api did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.api = Some(url.clone());
        url
    }

    /// Starts `hopper-worker --queues <queues>` with extra env; returns its
    /// index for [`TestEnv::kill`].
    pub fn start_worker(&mut self, queues: &str, extra: &[(&str, &str)]) -> usize {
        let (child, log) = self.spawn(
            "hopper-worker",
            &["--queues", queues, "--device", "cpu"],
            extra,
        );
        self.children.push(child);
        self.logs.push(log);
        self.children.len() - 1
    }

    /// Starts another workspace binary (a worker built on the library, such
    /// as `examples/custom-task`) with this environment; returns its index.
    pub fn start_binary(&mut self, bin: &str, args: &[&str], extra: &[(&str, &str)]) -> usize {
        let (child, log) = self.spawn(bin, args, extra);
        self.children.push(child);
        self.logs.push(log);
        self.children.len() - 1
    }

    /// Waits up to `within` for the process at `index` to exit; its exit
    /// status, or `None` if it still runs.
    pub fn wait_exit(
        &mut self,
        index: usize,
        within: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.children[index].try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process at `index` wrote to stderr so far.
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.logs[index]).unwrap_or_default()
    }

    /// Spawns a workspace binary with this environment; its stderr goes to
    /// a log file of its own (see [`TestEnv::log`]).
    fn spawn(&mut self, bin: &str, args: &[&str], extra: &[(&str, &str)]) -> (Child, PathBuf) {
        static SPAWNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("hopper-test-{}-{bin}-{n}.log", self.id));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary(bin))
            .args(args)
            .envs(&self.env)
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        (child, log)
    }

    /// Whether a started process has exited.
    pub fn exited(&mut self, index: usize) -> bool {
        matches!(self.children[index].try_wait(), Ok(Some(_)))
    }

    /// Replaces the process at `index` with a new worker.
    pub fn restart_worker(&mut self, index: usize, queues: &str, extra: &[(&str, &str)]) {
        let _ = self.children[index].kill();
        let _ = self.children[index].wait();
        let (child, log) = self.spawn(
            "hopper-worker",
            &["--queues", queues, "--device", "cpu"],
            extra,
        );
        self.children[index] = child;
        self.logs[index] = log;
    }

    /// SIGKILLs a started process.
    pub fn kill(&mut self, index: usize) {
        let _ = self.children[index].kill();
        let _ = self.children[index].wait();
    }

    /// Sends `signal` (e.g. [`SIGSTOP`], [`SIGCONT`]) to a started process.
    pub fn signal(&self, index: usize, signal: i32) {
        let pid = self.children[index].id() as i32;
        // SAFETY: sending a signal to a child we own.
        unsafe { libc_kill(pid, signal) };
    }

    /// SIGTERMs a started process and waits for it to exit.
    pub fn terminate(&mut self, index: usize) -> std::process::ExitStatus {
        let pid = self.children[index].id() as i32;
        // SAFETY: sending a signal to a child we own.
        unsafe { libc_kill(pid, 15) };
        self.children[index].wait().expect("wait")
    }

    /// `POST {api}{path}` with a JSON body; returns status and JSON.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(self.http.post(self.url(path)).json(body))
            .await
    }

    /// `GET {api}{path}`; returns status and JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(self.http.get(self.url(path))).await
    }

    /// Sends the API key set by [`TestEnv::use_key`] (if any) on the
    /// requests of [`TestEnv::get`], [`TestEnv::post`], [`TestEnv::delete`]
    /// and [`TestEnv::request`] from now on.
    pub fn use_key(&mut self, key: Option<&str>) {
        self.key = key.map(str::to_owned);
    }

    /// Creates an API key straight in this environment's schema (the API
    /// must have started, so the tables exist).
    pub async fn create_key(&self, tenant: &str, scopes: &str) -> String {
        let scopes = hopper_shared::keys::parse_scopes(scopes).expect("scopes");
        let (_, key) = hopper_shared::keys::create(&self.pool(), tenant, "test", &scopes)
            .await
            .expect("create key");
        key
    }

    /// Runs the `hopper` CLI with `args` in this environment (its Redis,
    /// Postgres and key prefix; `HOPPER_API_URL` = the API, once started)
    /// and waits for it.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(binary("hopper"))
            .args(args)
            .envs(&self.env)
            .env("HOPPER_API_URL", self.api.clone().unwrap_or_default())
            .output()
            .expect("run hopper")
    }

    /// `DELETE {api}{path}`; returns status and JSON.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request(self.http.delete(self.url(path))).await
    }

    /// Sends a prepared request; returns status and JSON (Null if none).
    pub async fn request(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let req = match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// A request builder on the API.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Absolute URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.as_deref().expect("API started"))
    }

    /// Submits `batch` through `POST /v1/jobs/{kind}/batch` (asserting 202);
    /// returns the job ids in order.
    pub async fn submit_batch(&self, kind: &str, batch: &[Value]) -> Vec<String> {
        let (s, b) = self
            .post(&format!("/v1/jobs/{kind}/batch"), &Value::from(batch))
            .await;
        assert_eq!(s, 202, "{b}");
        b["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect()
    }

    /// `GET /v1/queues`, and the stats of one queue in it.
    pub async fn queue(&self, name: &str) -> (Value, Value) {
        let (_, all) = self.get("/v1/queues").await;
        let one = all["queues"]
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["queue"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no queue {name} in {all}"));
        (all, one)
    }

    /// The value of a Prometheus series (exact name and labels) served at
    /// `url`, or 0 when absent.
    pub async fn metric(&self, url: &str, series: &str) -> f64 {
        let text = self
            .http
            .get(url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        metric_value(&text, series).unwrap_or(0.0)
    }

    /// Waits until `expected` documents of `set` are each in one of
    /// `statuses` (`ready`; or `embedding`, once its chunks are stored);
    /// fails at once when one of them failed.
    pub async fn wait_for_set(&self, set: &str, expected: usize, statuses: &[&str]) {
        until(
            &format!("{expected} documents of {set} in {statuses:?}"),
            Duration::from_secs(300),
            || async {
                let (_, list) = self
                    .get(&format!("/v1/documents?document_set={set}&limit=500"))
                    .await;
                let docs = list["documents"].as_array().cloned().unwrap_or_default();
                assert!(
                    docs.iter().all(|d| d["status"] != "failed"),
                    "a document failed: {list}"
                );
                docs.len() == expected
                    && docs
                        .iter()
                        .all(|d| statuses.contains(&d["status"].as_str().unwrap_or("")))
            },
        )
        .await;
    }

    /// Polls `GET /v1/jobs/{id}` until the job's state is final.
    pub async fn wait_final(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
            if status == 200 {
                let s = job["state"].as_str().unwrap_or_default();
                if ["succeeded", "failed", "dead", "cancelled"].contains(&s) {
                    return job;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not final in {within:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory effects on this process.
    unsafe { libc_kill(pid, signal) };
}

/// Stops a process until [`SIGCONT`] (it cannot be caught: a frozen VM).
pub const SIGSTOP: i32 = 19;
/// Resumes a stopped process.
pub const SIGCONT: i32 = 18;

impl Drop for TestEnv {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        cleanup(&self.id);
    }
}

/// Removes an environment's Redis keys and Postgres schema.
fn cleanup(id: &str) {
    if let Ok(client) = redis::Client::open(redis_url())
        && let Ok(mut conn) = client.get_connection()
    {
        use redis::Commands;
        let keys: Vec<String> = conn
            .scan_match::<_, String>(format!("{{t-{id}:*"))
            .map(|it| it.filter_map(Result::ok).collect())
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = conn.del(chunk);
        }
    }
    let url = database_url();
    let schema = format!("t_{id}");
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
            }
        });
    })
    .join();
}

/// Polls `check` every 20 ms until it holds; fails after `within`.
pub async fn until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
