//! Completion webhooks end to end: a job submitted with `callback_url` is
//! delivered, signed with its tenant's secret, to `docs/webhook_receiver.py`
//! (the documented example receiver, which verifies the signature over the
//! delivery id, timestamp and body, and the timestamp window), retried while
//! the receiver fails, and refused at submission when the URL is internal
//! (SSRF) or the kind is Hopper's own. Each tenant reads its own secret from
//! `GET /v1/webhooks/secret`; no other secret verifies its deliveries.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use hopper_shared::{jobs::DEFAULT_TENANT, webhook};
use hopper_tests::{TestEnv, free_port, workspace};
use serde_json::{Value, json};

/// The master secret (`HOPPER_WEBHOOK_SECRET`) of these tests' services.
const SECRET: &str = "test-webhook-secret-0123456789";

/// The signing secret of the open-mode tenant.
fn default_secret() -> String {
    webhook::tenant_secret(SECRET, DEFAULT_TENANT)
}

/// The example receiver on a free port, verifying with one secret and
/// logging each request (verified or refused).
struct Receiver {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Receiver {
    fn start(fail_first: u32, secret: &str) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("hopper-webhooks-{port}.jsonl"));
        let _ = std::fs::remove_file(&log);
        let child = Command::new("python3")
            .arg(workspace().join("docs/webhook_receiver.py"))
            .args([
                "--port",
                &port.to_string(),
                "--fail-first",
                &fail_first.to_string(),
            ])
            .arg("--log")
            .arg(&log)
            .env("HOPPER_WEBHOOK_TENANT_SECRET", secret)
            .spawn()
            .expect("python3 runs the example receiver");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "receiver did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/hopper", self.port)
    }

    /// Every request logged so far.
    fn logged(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    /// Verified deliveries so far.
    fn deliveries(&self) -> Vec<Value> {
        let mut all = self.logged();
        all.retain(|d| d["verified"] == true);
        all
    }

    /// Requests refused (401) for a bad signature so far.
    fn refusals(&self) -> Vec<Value> {
        let mut all = self.logged();
        all.retain(|d| d["verified"] == false);
        all
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.deliveries();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} deliveries: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn webhook_env(extra: &[(&str, &str)]) -> TestEnv {
    let mut overrides = vec![
        ("HOPPER_WEBHOOK_SECRET", SECRET),
        ("HOPPER_QUEUE_WEBHOOK_BACKOFF_BASE_MS", "100"),
        ("HOPPER_QUEUE_WEBHOOK_BACKOFF_MAX_MS", "300"),
    ];
    overrides.extend_from_slice(extra);
    TestEnv::new(&overrides)
}

#[tokio::test]
async fn finished_jobs_are_delivered_signed_and_retried_until_accepted() {
    // The receiver refuses the first two deliveries: the third is accepted.
    let receiver = Receiver::start(2, &default_secret());
    let mut env = webhook_env(&[("HOPPER_WEBHOOK_ALLOW_PRIVATE", "1")]);
    env.start_api().await;
    env.start_worker("echo,webhook", &[]);

    let path = format!("/v1/jobs/echo?callback_url={}", urlencode(&receiver.url()));
    let (s, b) = env.post(&path, &json!({"message": "call me back"})).await;
    assert_eq!(s, 202, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(
        env.wait_final(&id, Duration::from_secs(20)).await["state"],
        "succeeded"
    );

    let got = receiver.wait_for(1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["verified"], true);
    assert_eq!(got[0]["event"], "job.finished");
    assert_eq!(got[0]["job"], id.as_str());
    assert_eq!(got[0]["state"], "succeeded");

    // The delivery is a job of its own, with its retries on record.
    let delivery = got[0]["delivery"].as_str().unwrap().to_owned();
    let job = env.wait_final(&delivery, Duration::from_secs(20)).await;
    assert_eq!(job["kind"], "webhook");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 3, "two refusals, then delivered: {job}");
    assert_eq!(job["result"]["status"], 204);

    // A dead job is reported too.
    let (_, b) = env
        .post(
            &format!("{path}&max_attempts=1"),
            &json!({"message": "doomed", "fail": "no"}),
        )
        .await;
    let dead = b["id"].as_str().unwrap().to_owned();
    let got = receiver.wait_for(2).await;
    assert!(
        got.iter()
            .any(|d| d["job"] == dead.as_str() && d["state"] == "dead"),
        "{got:?}"
    );
    assert!(got.iter().all(|d| d["duplicate"] == false), "{got:?}");
}

#[tokio::test]
async fn forged_relabelled_and_replayed_deliveries_are_refused_by_the_example_receiver() {
    let secret = default_secret();
    let receiver = Receiver::start(0, &secret);
    let http = reqwest::Client::new();
    let body = br#"{"event":"job.finished","job":{"id":"x"}}"#.to_vec();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let send = |delivery: &str, ts: i64, sig: String| {
        http.post(receiver.url())
            .header("hopper-timestamp", ts.to_string())
            .header("hopper-signature", sig)
            .header("hopper-delivery", delivery)
            .body(body.clone())
            .send()
    };
    let good = webhook::sign(&secret, "d1", now, &body);
    assert!(good.starts_with("v2="), "{good}");
    assert_eq!(send("d1", now, good.clone()).await.unwrap().status(), 204);
    // Signed with another secret: a made-up one, the master secret, or
    // another tenant's.
    for other in [
        "not-the-secret".to_owned(),
        SECRET.to_owned(),
        webhook::tenant_secret(SECRET, "another-tenant"),
    ] {
        let forged = webhook::sign(&other, "d1", now, &body);
        assert_eq!(send("d1", now, forged).await.unwrap().status(), 401);
    }
    // The delivery id is signed: the same signature under another id fails.
    assert_eq!(
        send("d2", now, good.clone()).await.unwrap().status(),
        401,
        "delivery id is signed"
    );
    let old = now - 600;
    let replayed = webhook::sign(&secret, "d1", old, &body);
    assert_eq!(send("d1", old, replayed).await.unwrap().status(), 401);
    assert_eq!(
        send("d1", now + 1, good).await.unwrap().status(),
        401,
        "timestamp is signed"
    );
    assert_eq!(receiver.deliveries().len(), 1);
    assert_eq!(receiver.refusals().len(), 6);
    // The Rust verifier agrees with the Python one.
    let sig = webhook::sign(&secret, "d1", now, &body);
    assert!(webhook::verify(
        &secret,
        "d1",
        &now.to_string(),
        &sig,
        &body,
        now
    ));
    assert!(!webhook::verify(
        &secret,
        "d2",
        &now.to_string(),
        &sig,
        &body,
        now
    ));
}

/// A keys-mode environment with webhooks (private receivers allowed, two
/// attempts per delivery) and an echo + webhook worker.
async fn keyed_webhook_env(worker_env: &[(&str, &str)]) -> TestEnv {
    let mut env = webhook_env(&[
        ("HOPPER_AUTH", "keys"),
        ("HOPPER_WEBHOOK_ALLOW_PRIVATE", "1"),
        ("HOPPER_QUEUE_WEBHOOK_MAX_ATTEMPTS", "2"),
    ]);
    env.start_api().await;
    env.start_worker("echo,webhook", worker_env);
    env
}

/// Submits an echo job with a callback to `receiver` as the current key.
async fn echo_with_callback(env: &TestEnv, receiver: &Receiver) -> String {
    let path = format!("/v1/jobs/echo?callback_url={}", urlencode(&receiver.url()));
    let (s, b) = env.post(&path, &json!({"message": "call me back"})).await;
    assert_eq!(s, 202, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn deliveries_are_signed_with_their_tenants_own_secret() {
    let mut env = keyed_webhook_env(&[]).await;
    let a = env.create_key("tenant-a", "submit,read,admin").await;
    let a_submit = env.create_key("tenant-a", "submit,read").await;
    let b = env.create_key("tenant-b", "submit,read,admin").await;

    // Each tenant's admin reads its own secret; other scopes cannot.
    env.use_key(Some(&a));
    let (s, shown_a) = env.get("/v1/webhooks/secret").await;
    assert_eq!(s, 200, "{shown_a}");
    assert_eq!(shown_a["tenant"], "tenant-a");
    let secret_a = shown_a["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret_a, webhook::tenant_secret(SECRET, "tenant-a"));
    assert!(
        shown_a["signature"]
            .as_str()
            .unwrap()
            .contains("Hopper-Delivery"),
        "{shown_a}"
    );
    env.use_key(Some(&b));
    let (_, shown_b) = env.get("/v1/webhooks/secret").await;
    let secret_b = shown_b["secret"].as_str().unwrap().to_owned();
    assert_ne!(secret_a, secret_b);
    assert!(!shown_a.to_string().contains(SECRET) && !shown_b.to_string().contains(SECRET));
    env.use_key(Some(&a_submit));
    let (s, body) = env.get("/v1/webhooks/secret").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // Tenant A's receivers: with A's secret, B's, and the master secret.
    let with_a = Receiver::start(0, &secret_a);
    let with_b = Receiver::start(0, &secret_b);
    let with_master = Receiver::start(0, SECRET);
    env.use_key(Some(&a));
    let job = echo_with_callback(&env, &with_a).await;
    let refused: Vec<String> = [
        echo_with_callback(&env, &with_b).await,
        echo_with_callback(&env, &with_master).await,
    ]
    .into();
    let got = with_a.wait_for(1).await;
    assert_eq!(got[0]["job"], job.as_str(), "{got:?}");
    // A's deliveries to receivers holding another secret fail every attempt.
    for (receiver, job) in [(&with_b, &refused[0]), (&with_master, &refused[1])] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let delivery = loop {
            if let Some(r) = receiver.refusals().first() {
                break r["delivery"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "no delivery for {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let hook = env.wait_final(&delivery, Duration::from_secs(30)).await;
        assert_eq!(hook["state"], "dead", "{hook}");
        assert!(hook["error"].as_str().unwrap().contains("401"), "{hook}");
        assert!(receiver.deliveries().is_empty(), "{:?}", receiver.logged());
    }
    // Tenant B's own deliveries verify with B's secret.
    env.use_key(Some(&b));
    let job_b = echo_with_callback(&env, &with_b).await;
    let got = with_b.wait_for(1).await;
    assert_eq!(got[0]["job"], job_b.as_str(), "{got:?}");

    // Without a master secret there is no tenant secret either.
    let mut off = TestEnv::new(&[("HOPPER_AUTH", "keys")]);
    off.start_api().await;
    let admin = off.create_key("tenant-a", "admin").await;
    off.use_key(Some(&admin));
    let (s, body) = off.get("/v1/webhooks/secret").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (404, Some("webhooks_off")),
        "{body}"
    );
}

#[tokio::test]
async fn deliveries_ignore_proxy_variables() {
    // A proxy at a dead port: a client that honoured these would never
    // reach the receiver (and, worse, would let the proxy pick the address).
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxies = [
        ("HTTP_PROXY", dead.as_str()),
        ("HTTPS_PROXY", dead.as_str()),
        ("ALL_PROXY", dead.as_str()),
        ("http_proxy", dead.as_str()),
        ("https_proxy", dead.as_str()),
        ("all_proxy", dead.as_str()),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ];
    let mut env = keyed_webhook_env(&proxies).await;
    let key = env.create_key("tenant-a", "submit,read").await;
    env.use_key(Some(&key));
    let receiver = Receiver::start(0, &webhook::tenant_secret(SECRET, "tenant-a"));
    let job = echo_with_callback(&env, &receiver).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0]["job"], job.as_str(), "{got:?}");
    let hook = env
        .wait_final(
            got[0]["delivery"].as_str().unwrap(),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        (hook["state"].as_str(), hook["attempts"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{hook}"
    );
}

#[tokio::test]
async fn internal_callbacks_and_webhook_submissions_are_refused() {
    let mut env = webhook_env(&[]);
    env.start_api().await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/x",
        "http://[::1]/x",
        "file:///etc/passwd",
    ] {
        let (s, b) = env
            .post(
                &format!("/v1/jobs/echo?callback_url={}", urlencode(url)),
                &json!({"message": "x"}),
            )
            .await;
        assert_eq!(
            (s, b["field"].as_str()),
            (422, Some("callback_url")),
            "{url}: {b}"
        );
    }
    let (s, b) = env
        .post(
            "/v1/jobs/webhook",
            &json!({"url": "https://example.com", "event": "job.finished", "body": {}}),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (422, Some("internal_kind")),
        "{b}"
    );
    // Without a secret, callbacks are off altogether.
    let mut plain = TestEnv::new(&[]);
    plain.start_api().await;
    let (s, b) = plain
        .post(
            "/v1/jobs/echo?callback_url=https%3A%2F%2Fhooks.example.com%2F",
            &json!({"message": "x"}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("HOPPER_WEBHOOK_SECRET"),
        "{b}"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_document_with_a_callback_is_reported_when_ready() {
    let receiver = Receiver::start(0, &default_secret());
    let mut env = webhook_env(&[("HOPPER_WEBHOOK_ALLOW_PRIVATE", "1")]);
    env.start_api().await;
    env.start_worker("ingest,embed,summarize,webhook", &[]);
    let (s, up) = env
        .post(
            "/v1/documents",
            &json!({
                "name": "notes.txt",
                "text": "Webhooks tell a client that its document is searchable. No polling needed.",
                "options": {"callback_url": receiver.url()},
            }),
        )
        .await;
    assert_eq!(s, 202, "{up}");
    let doc = up["document_id"].as_str().unwrap();
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0]["event"], "document.finished", "{got:?}");
    assert_eq!(got[0]["document"], doc);
    assert_eq!(got[0]["status"], "ready");

    let (s, b) = env
        .post(
            "/v1/documents",
            &json!({"name": "x.txt", "text": "x", "options": {"callback_url": "http://10.0.0.1/"}}),
        )
        .await;
    assert_eq!(s, 202, "private allowed in this env: {b}");
    let mut strict = webhook_env(&[]);
    strict.start_api().await;
    let (s, b) = strict
        .post(
            "/v1/documents",
            &json!({"name": "x.txt", "text": "x", "options": {"callback_url": "http://10.0.0.1/"}}),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (422, Some("options.callback_url")),
        "{b}"
    );
}
