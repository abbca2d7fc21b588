//! Hostile documents: a file that hangs, explodes or overflows a parser
//! fails *its* job with a clear, permanent error (the document `failed`, the
//! ingest job dead after one attempt) within a bounded time, while the
//! worker keeps serving — its heartbeat stays fresh and other jobs run. A
//! large but legitimate text is chunked within limits. Extraction runs in a
//! `hopper-extract` child process that is killed on timeout or cancellation
//! and leaves nothing behind.

use std::time::{Duration, Instant};

use hopper_tests::{TestEnv, pdf};
use serde_json::{Value, json};

/// The workers' lease: the bound on their heartbeat's age (they heartbeat
/// every 200 ms; a frozen one would show seconds, the reported freeze 130 s).
const LEASE_MS: u64 = 5_000;

fn hostile_env(extra: &[(&str, &str)]) -> TestEnv {
    let mut vars = vec![("HOPPER_HEARTBEAT_MS", "200"), ("HOPPER_LEASE_MS", "5000")];
    vars.extend_from_slice(extra);
    TestEnv::new(&vars)
}

/// Starts the API and a worker on `queues`; returns the worker's pid once it
/// is registered, and its index in `env`.
async fn start(env: &mut TestEnv, queues: &str) -> (i32, usize) {
    env.start_api().await;
    let index = env.start_worker(queues, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, w) = env.get("/v1/workers").await;
        let ingest = w["workers"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["queue"] == "ingest"));
        if let Some(id) = ingest.and_then(|w| w["worker"].as_str()) {
            // Worker ids are host-pid-random.
            return (id.rsplit('-').nth(1).unwrap().parse().unwrap(), index);
        }
        assert!(
            Instant::now() < deadline,
            "the worker never registered: {w}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Uploads a file; returns the 202 answer (document and job ids).
async fn upload(env: &TestEnv, name: &str, mime: &str, body: Vec<u8>) -> Value {
    let part = reqwest::multipart::Part::bytes(body)
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let (s, b) = env
        .request(env.http().post(env.url("/v1/documents")).multipart(form))
        .await;
    assert_eq!(s, 202, "{b}");
    b
}

/// Polls the document until its status is one of `statuses`, checking at
/// every step that every worker's heartbeat is younger than its lease.
async fn await_document(env: &TestEnv, doc: &Value, statuses: &[&str], within: Duration) -> Value {
    let id = doc["document_id"].as_str().unwrap();
    let deadline = Instant::now() + within;
    let mut oldest_heartbeat = 0;
    loop {
        let (_, d) = env.get(&format!("/v1/documents/{id}")).await;
        if statuses.contains(&d["status"].as_str().unwrap_or_default()) {
            return d;
        }
        let (_, w) = env.get("/v1/workers").await;
        for worker in w["workers"].as_array().unwrap() {
            let age = worker["heartbeat_age_ms"].as_u64().unwrap();
            oldest_heartbeat = oldest_heartbeat.max(age);
            assert!(
                age < LEASE_MS,
                "a worker stopped heartbeating while document {id} was processed: {w}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "document {id} not {statuses:?} in {within:?} (heartbeats at most {oldest_heartbeat} ms old): {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The document failed with an error containing `expected`, and its ingest
/// job went to the dead letters after one attempt (permanent: no other
/// worker gets the same file).
async fn assert_failed_for_good(env: &TestEnv, doc: &Value, failed: &Value, expected: &str) {
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(expected),
        "error {error:?} lacks {expected:?}"
    );
    let job = env
        .wait_final(doc["job_id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["attempts"], 1, "not retried: {job}");
}

/// Submits an echo job now; [`echo_done`] checks it.
async fn echo(env: &TestEnv) -> String {
    let (s, b) = env
        .post("/v1/jobs/echo", &json!({"message": "still serving"}))
        .await;
    assert_eq!(s, 202, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

async fn echo_done(env: &TestEnv, id: &str) {
    let job = env.wait_final(id, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

/// Uploads a hostile file with an echo job behind it: the document fails
/// for good with `expected` within a minute while the worker heartbeats, and
/// the echo job runs.
async fn refused_while_serving(
    env: &TestEnv,
    name: &str,
    mime: &str,
    body: Vec<u8>,
    expected: &str,
) {
    let doc = upload(env, name, mime, body).await;
    let echo_id = echo(env).await;
    let failed = await_document(env, &doc, &["failed", "embedding"], Duration::from_secs(60)).await;
    assert_failed_for_good(env, &doc, &failed, expected).await;
    echo_done(env, &echo_id).await;
}

/// Processes that `pid` started and has not reaped: (pid, name, state).
fn children(pid: i32) -> Vec<(i32, String, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid {
            let child = stat[..open].trim().parse().unwrap_or(0);
            found.push((child, stat[open + 1..close].to_owned(), state));
        }
    }
    found
}

/// Waits until `pid` has an extraction child running; returns it.
async fn extraction_child(pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((child, _, _)) = children(pid)
            .into_iter()
            .find(|(_, name, _)| name == "hopper-extract")
        {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "no hopper-extract child of worker {pid} appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `pid` has no child at all: none running, none unreaped.
async fn no_children_left(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = children(pid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "worker {pid} left children behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nested_divs(n: usize) -> Vec<u8> {
    format!(
        "<html><body>{}deep{}</body></html>",
        "<div>".repeat(n),
        "</div>".repeat(n)
    )
    .into_bytes()
}

#[tokio::test]
async fn html_with_100000_nested_divs_fails_clearly_while_the_worker_serves() {
    let mut env = hostile_env(&[]);
    start(&mut env, "ingest,embed,summarize,echo").await;
    let body = nested_divs(100_000);
    assert!(body.len() > 1_000_000, "1.1 MB as reported");
    let started = Instant::now();
    let doc = upload(&env, "divs.html", "text/html", body).await;
    // Meanwhile: a job of another queue, and an ordinary document.
    let echo_id = echo(&env).await;
    let normal = upload(
        &env,
        "penguins.txt",
        "text/plain",
        b"Emperor penguins huddle together through the Antarctic winter.".to_vec(),
    )
    .await;

    let failed = await_document(&env, &doc, &["failed", "ready"], Duration::from_secs(90)).await;
    assert_failed_for_good(&env, &doc, &failed, "nests elements more than 512 deep").await;
    echo_done(&env, &echo_id).await;
    let ready = await_document(
        &env,
        &normal,
        &["ready", "failed"],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    eprintln!("100,000 nested divs refused in {:?}", started.elapsed());
}

#[tokio::test]
async fn a_table_nested_3000_deep_fails_clearly() {
    let mut env = hostile_env(&[]);
    start(&mut env, "ingest,echo").await;
    let body = format!(
        "<html><body>{}cell{}</body></html>",
        "<table><tr><td>".repeat(3_000),
        "</td></tr></table>".repeat(3_000)
    );
    let expected = "nests elements more than 512 deep";
    refused_while_serving(
        &env,
        "tables.html",
        "text/html",
        body.into_bytes(),
        expected,
    )
    .await;
}

/// A PDF of `pages` pages without content.
fn empty_pages_pdf(pages: usize) -> Vec<u8> {
    let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", i + 3)).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} >>",
            kids.join(" ")
        ),
    ];
    objects.extend(
        (0..pages).map(|_| "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>".to_owned()),
    );
    pdf::file(
        &objects
            .into_iter()
            .map(String::into_bytes)
            .collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn a_pdf_with_thousands_of_empty_pages_fails_clearly() {
    let mut env = hostile_env(&[]);
    start(&mut env, "ingest,echo").await;
    let expected = "the PDF has 5000 pages, more than the 2000 allowed";
    refused_while_serving(
        &env,
        "blank.pdf",
        "application/pdf",
        empty_pages_pdf(5_000),
        expected,
    )
    .await;
}

/// A zlib stream inflating to `n` zero bytes, about 160 times smaller:
/// fixed Huffman codes, one literal zero, then copies of 258 bytes at
/// distance 1.
fn zeros_zlib(n: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        len: u32,
    }
    impl Bits {
        /// `len` bits of `value`, least significant first.
        fn raw(&mut self, value: u64, len: u32) {
            self.acc |= value << self.len;
            self.len += len;
            while self.len >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.len -= 8;
            }
        }
        /// A Huffman code: most significant bit first.
        fn code(&mut self, code: u64, len: u32) {
            self.raw(code.reverse_bits() >> (64 - len), len);
        }
    }
    let mut bits = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        len: 0,
    };
    bits.raw(1, 1); // the last block
    bits.raw(1, 2); // fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    let mut left = n - 1;
    while left >= 258 {
        bits.code(0b1100_0101, 8); // length 258 (code 285)
        bits.code(0, 5); // distance 1
        left -= 258;
    }
    for _ in 0..left {
        bits.code(0x30, 8);
    }
    bits.code(0, 7); // end of block
    if bits.len > 0 {
        bits.out.push(bits.acc as u8);
    }
    let adler = (((n % 65_521) as u32) << 16) | 1;
    bits.out.extend_from_slice(&adler.to_be_bytes());
    bits.out
}

#[tokio::test]
async fn a_pdf_that_inflates_past_the_memory_limit_fails_clearly() {
    let mut env = hostile_env(&[("HOPPER_EXTRACT_MAX_MEMORY_MB", "512")]);
    start(&mut env, "ingest,echo").await;
    // 5 MB on the wire, 800 MB of page content once inflated.
    let stream = zeros_zlib(800_000_000);
    let mut content = format!(
        "<< /Length {} /Filter /FlateDecode >>\nstream\n",
        stream.len()
    )
    .into_bytes();
    content.extend_from_slice(&stream);
    content.extend_from_slice(b"\nendstream");
    let pdf = pdf::file(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_vec(),
        content,
    ]);
    let expected = "needed more than 512 MB of memory (HOPPER_EXTRACT_MAX_MEMORY_MB)";
    refused_while_serving(&env, "bomb.pdf", "application/pdf", pdf, expected).await;
}

#[tokio::test]
async fn a_25_mb_single_line_is_chunked_within_limits() {
    // Legitimate, only large: it must be chunked (in seconds in a release
    // build), not refused; the generous timeout absorbs a busy machine.
    let mut env = hostile_env(&[
        ("HOPPER_MAX_UPLOAD_BYTES", "30000000"),
        ("HOPPER_EXTRACT_TIMEOUT_MS", "300000"),
    ]);
    start(&mut env, "ingest,echo").await;
    let mut line = String::with_capacity(25_000_100);
    let mut i = 0;
    while line.len() < 25_000_000 {
        line.push_str(&format!("lorem ipsum dolor {i} sit amet consectetur "));
        i += 1;
    }
    let started = Instant::now();
    let doc = upload(&env, "line.txt", "text/plain", line.into_bytes()).await;
    let echo_id = echo(&env).await;
    // No embed worker here: ingest done means chunked and stored.
    let done = await_document(
        &env,
        &doc,
        &["embedding", "failed"],
        Duration::from_secs(360),
    )
    .await;
    assert_eq!(done["status"], "embedding", "{done}");
    echo_done(&env, &echo_id).await;
    let job = env
        .wait_final(doc["job_id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");

    let id: uuid::Uuid = doc["document_id"].as_str().unwrap().parse().unwrap();
    let row = env
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*), max(token_count), max(octet_length(text)), sum(octet_length(text)) \
             FROM chunks WHERE document_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (chunks, max_tokens, max_bytes, bytes): (i64, Option<i32>, Option<i32>, Option<i64>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(Some(chunks), done["chunks_total"].as_i64(), "{done}");
    assert!(chunks > 10_000, "{chunks} chunks");
    assert!(
        max_tokens.unwrap() <= 200,
        "{max_tokens:?} tokens in a chunk"
    );
    assert!(
        max_bytes.unwrap() <= 200 * 32,
        "{max_bytes:?} bytes in a chunk"
    );
    assert!(
        bytes.unwrap() >= 24_000_000,
        "the whole line is in chunks: {bytes:?}"
    );
    eprintln!(
        "25 MB single line: {chunks} chunks in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_timeout_kills_the_extraction_and_leaves_no_process_behind() {
    // The nesting limit lifted so the file reaches the parser, which then
    // works for minutes: only the timeout can stop it.
    let mut env = hostile_env(&[
        ("HOPPER_EXTRACT_TIMEOUT_MS", "1500"),
        ("HOPPER_EXTRACT_MAX_HTML_DEPTH", "1000000"),
    ]);
    let (worker, _) = start(&mut env, "ingest,echo").await;
    let doc = upload(&env, "divs.html", "text/html", nested_divs(100_000)).await;
    let child = extraction_child(worker).await;
    let echo_id = echo(&env).await;
    let failed = await_document(
        &env,
        &doc,
        &["failed", "embedding"],
        Duration::from_secs(60),
    )
    .await;
    assert_failed_for_good(&env, &doc, &failed, "took longer than 1500 ms").await;
    echo_done(&env, &echo_id).await;
    no_children_left(worker).await;
    assert!(
        !std::path::Path::new(&format!("/proc/{child}")).exists(),
        "the extraction process {child} still exists"
    );
}

#[tokio::test]
async fn a_stopping_worker_kills_its_extraction() {
    // Clients cannot cancel a pipeline job; a stopping worker cancels its
    // jobs once its grace period is over, and the extraction goes with them.
    let mut env = hostile_env(&[
        ("HOPPER_EXTRACT_MAX_HTML_DEPTH", "1000000"),
        ("HOPPER_SHUTDOWN_GRACE_MS", "300"),
    ]);
    let (worker, index) = start(&mut env, "ingest,echo").await;
    let doc = upload(&env, "divs.html", "text/html", nested_divs(100_000)).await;
    let child = extraction_child(worker).await;
    let stopping = Instant::now();
    let status = env.terminate(index);
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}");
    // Not cancelled, the job would hold the worker 5 s more, then be
    // abandoned (the hard way).
    assert!(
        took < Duration::from_secs(4),
        "the worker took {took:?} to stop: the extraction ignored its job's cancellation"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{child}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the extraction process {child} outlived its worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The attempt was stopped, not failed for good: it is retried.
    let (_, job) = env
        .get(&format!("/v1/jobs/{}", doc["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(
        (job["state"].as_str(), job["error"].as_str()),
        (Some("retrying"), Some("extraction cancelled")),
        "{job}"
    );
}
