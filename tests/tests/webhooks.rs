//! Completion webhooks end to end: a job submitted with `callback_url` is
//! delivered, signed, to `docs/webhook_receiver.py` (the documented example
//! receiver, which verifies the signature and the timestamp window), retried
//! while the receiver fails, and refused at submission when the URL is
//! internal (SSRF) or the kind is Hopper's own.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use hopper_tests::{TestEnv, free_port, workspace};
use serde_json::{Value, json};

const SECRET: &str = "test-webhook-secret-0123456789";

/// The example receiver on a free port, logging verified deliveries.
struct Receiver {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Receiver {
    fn start(fail_first: u32) -> Self {
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
            .env("HOPPER_WEBHOOK_SECRET", SECRET)
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

    /// Verified deliveries so far.
    fn deliveries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
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
    let receiver = Receiver::start(2);
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
async fn forged_and_replayed_deliveries_are_refused_by_the_example_receiver() {
    let receiver = Receiver::start(0);
    let http = reqwest::Client::new();
    let body = br#"{"event":"job.finished","job":{"id":"x"}}"#.to_vec();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let send = |ts: i64, sig: String| {
        http.post(receiver.url())
            .header("hopper-timestamp", ts.to_string())
            .header("hopper-signature", sig)
            .header("hopper-delivery", "d1")
            .body(body.clone())
            .send()
    };
    let good = hopper_shared::webhook::sign(SECRET, now, &body);
    assert_eq!(send(now, good.clone()).await.unwrap().status(), 204);
    let forged = hopper_shared::webhook::sign("not-the-secret", now, &body);
    assert_eq!(send(now, forged).await.unwrap().status(), 401);
    let old = now - 600;
    let replayed = hopper_shared::webhook::sign(SECRET, old, &body);
    assert_eq!(send(old, replayed).await.unwrap().status(), 401);
    assert_eq!(
        send(now + 1, good).await.unwrap().status(),
        401,
        "timestamp is signed"
    );
    assert!(hopper_shared::webhook::verify(
        SECRET,
        &now.to_string(),
        &hopper_shared::webhook::sign(SECRET, now, &body),
        &body,
        now
    ));
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
    let receiver = Receiver::start(0);
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
