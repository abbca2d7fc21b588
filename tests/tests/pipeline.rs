//! The document pipeline end to end with the real model: upload Markdown,
//! HTML and PDF, follow the SSE stream to `ready`, search; survive a
//! SIGKILLed embed worker; refuse bad documents clearly.

use std::time::{Duration, Instant};

use hopper_tests::TestEnv;
use serde_json::{Value, json};

/// A one-page PDF whose text layer says `text` (Helvetica, one line per
/// `\n`); with `text` empty, a page with no text layer at all.
fn pdf(text: &str) -> Vec<u8> {
    let mut content = String::new();
    if !text.is_empty() {
        content.push_str("BT /F1 12 Tf 72 720 Td 14 TL\n");
        for line in text.lines() {
            let escaped = line
                .replace('\\', "\\\\")
                .replace('(', "\\(")
                .replace(')', "\\)");
            content.push_str(&format!("({escaped}) Tj T*\n"));
        }
        content.push_str("ET\n");
    }
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    hopper_tests::pdf::file(&objects.map(String::into_bytes))
}

async fn upload(env: &TestEnv, name: &str, mime: &str, body: Vec<u8>) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(body)
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("document_set", "zoo");
    env.request(env.http().post(env.url("/v1/documents")).multipart(form))
        .await
}

/// Follows `GET /v1/documents/{id}/events` until the stream ends (after
/// `ready` or `failed`); returns every progress event.
async fn follow(http: &reqwest::Client, api: &str, id: &str, within: Duration) -> Vec<Value> {
    let res = http
        .get(format!("{api}/v1/documents/{id}/events"))
        .send()
        .await
        .unwrap();
    hopper_tests::sse::read_to_end(res, within)
        .await
        .into_iter()
        .filter(|(name, _)| name == "progress")
        .map(|(_, v)| v)
        .collect()
}

/// Sends only the headers of a `POST /v1/documents` announcing `len` bytes;
/// returns the status and JSON body of the answer.
async fn announce_oversized_upload(env: &TestEnv, len: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = env.url("").trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/documents HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {len}\r\nconnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b.trim()).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

fn pipeline_env() -> TestEnv {
    TestEnv::new(&[("HOPPER_HEARTBEAT_MS", "200"), ("HOPPER_LEASE_MS", "1000")])
}

#[tokio::test]
async fn markdown_html_and_pdf_become_searchable() {
    let mut env = pipeline_env();
    env.start_api().await;

    let md = "# Giraffes\n\nGiraffes are the tallest living animals. Their long necks reach acacia leaves.\n\n## Sleep\n\nA giraffe sleeps only a few minutes at a time, standing up.\n";
    let html = "<html><head><script>var penguins = 1;</script></head><body><h1>Penguins</h1>\
        <p>Emperor penguins huddle together through the Antarctic winter.</p>\
        <p>Males balance the egg on their feet for two months.</p></body></html>";
    let pdf_text =
        "Octopuses have three hearts and blue blood.\nEach arm can taste what it touches.";

    let (s, md_doc) = upload(&env, "giraffes.md", "text/markdown", md.as_bytes().to_vec()).await;
    assert_eq!(s, 202, "{md_doc}");
    let (s, html_doc) = upload(&env, "penguins.html", "text/html", html.as_bytes().to_vec()).await;
    assert_eq!(s, 202, "{html_doc}");
    let (s, pdf_doc) = upload(&env, "octopus.pdf", "application/pdf", pdf(pdf_text)).await;
    assert_eq!(s, 202, "{pdf_doc}");

    // Subscribe before any worker runs, so the whole progression is seen.
    let mut streams = Vec::new();
    for doc in [&md_doc, &html_doc, &pdf_doc] {
        let id = doc["document_id"].as_str().unwrap().to_owned();
        let (http, url) = (env.http().clone(), env.url(""));
        streams.push(tokio::spawn(async move {
            follow(&http, &url, &id, Duration::from_secs(120)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.start_worker("ingest,embed,summarize", &[]);
    for stream in streams {
        let events = stream.await.unwrap();
        let last = events.last().unwrap();
        assert_eq!(last["status"], "ready", "{events:?}");
        assert_eq!(last["chunks_embedded"], last["chunks_total"], "{last}");
        assert!(!last["summary"].as_str().unwrap_or("").is_empty(), "{last}");
        assert!(
            last["model"]
                .as_str()
                .unwrap()
                .starts_with("all-MiniLM-L6-v2@"),
            "{last}"
        );
        let statuses: Vec<_> = events
            .iter()
            .map(|e| e["status"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            statuses.first().map(String::as_str),
            Some("queued"),
            "{statuses:?}"
        );
        // Small documents can go from queued to ready between two polls of
        // the stream (100 ms), so intermediate statuses are not guaranteed.
        assert!(statuses.len() >= 2, "progress was streamed: {statuses:?}");
        // Whatever was seen, it was seen in pipeline order.
        let order = ["queued", "ingesting", "embedding", "summarizing", "ready"];
        let ranks: Vec<usize> = statuses
            .iter()
            .map(|s| order.iter().position(|o| o == s).expect("a known status"))
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{statuses:?}");
    }

    let cases = [
        ("which animal has three hearts", &pdf_doc),
        ("birds huddling in the antarctic cold", &html_doc),
        ("tallest animal eating leaves", &md_doc),
    ];
    for (query, want) in cases {
        let (s, r) = env
            .post(
                "/v1/search",
                &json!({"query": query, "k": 3, "document_set": "zoo"}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(
            r["hits"][0]["document_id"], want["document_id"],
            "{query}: {r}"
        );
    }
    // The HTML's script never reached a chunk.
    let (_, r) = env
        .post("/v1/search", &json!({"query": "var penguins", "k": 10}))
        .await;
    assert!(
        r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| !h["text"].as_str().unwrap().contains("var ")),
        "{r}"
    );

    // Listing counts chunks in SQL; deleting takes chunks and vectors along.
    let (_, list) = env.get("/v1/documents?document_set=zoo").await;
    assert_eq!(list["total"], 3, "{list}");
    assert!(
        list["documents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["chunk_count"].as_i64().unwrap() >= 1)
    );
    let id = md_doc["document_id"].as_str().unwrap();
    let res = env
        .http()
        .delete(env.url(&format!("/v1/documents/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (s, _) = env.get(&format!("/v1/documents/{id}")).await;
    assert_eq!(s, 404);
    let (_, r) = env
        .post("/v1/search", &json!({"query": "giraffe", "k": 10}))
        .await;
    assert!(
        r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["document_id"] != md_doc["document_id"]),
        "{r}"
    );
}

#[tokio::test]
async fn a_sigkilled_embed_worker_still_gives_one_complete_document() {
    let mut env = pipeline_env();
    env.start_api().await;
    env.start_worker("ingest,summarize", &[]);
    let embed = env.start_worker("embed", &[]);

    // Long enough for many embed batches (32 chunks each).
    let paragraphs: Vec<String> = (0..400)
        .map(|i| format!("Paragraph {i} is about topic number {i}: rivers, mountains and weather in region {i}. It continues with a second sentence for length."))
        .collect();
    let (s, doc) = env
        .post(
            "/v1/documents",
            &json!({"name": "long.txt", "text": paragraphs.join("\n\n"), "options": {"chunk_tokens": 40, "chunk_overlap": 0}}),
        )
        .await;
    assert_eq!(s, 202, "{doc}");
    let id = doc["document_id"].as_str().unwrap().to_owned();

    // Kill the embed worker once embedding is under way, then start another.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, d) = env.get(&format!("/v1/documents/{id}")).await;
        if d["chunks_embedded"].as_i64().unwrap_or(0) > 0 {
            assert_ne!(d["status"], "ready", "too fast to interrupt: {d}");
            break;
        }
        assert!(Instant::now() < deadline, "embedding never started: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.kill(embed);
    env.start_worker("embed", &[]);

    let events = follow(env.http(), &env.url(""), &id, Duration::from_secs(180)).await;
    let last = events.last().unwrap();
    assert_eq!(last["status"], "ready", "{last}");
    let pool = env.pool();
    let client = pool.get().await.unwrap();
    let id: uuid::Uuid = id.parse().unwrap();
    let row = client
        .query_one(
            "SELECT count(*), count(v.chunk_id), count(DISTINCT c.ordinal) FROM chunks c \
             LEFT JOIN chunk_vectors v ON v.chunk_id = c.id WHERE c.document_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (n, embedded, distinct): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        n,
        last["chunks_total"].as_i64().unwrap(),
        "no duplicate chunks"
    );
    assert_eq!((embedded, distinct), (n, n));
    assert_eq!(
        last["chunks_embedded"].as_i64().unwrap(),
        n,
        "counted once each"
    );
    let summaries: i64 = client
        .query_one(
            "SELECT count(*) FROM job_records WHERE kind = 'summarize' AND args->>'document_id' = $1",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(summaries, 1, "one summary job");
}

#[tokio::test]
async fn bad_documents_are_refused_or_fail_clearly() {
    let mut env = TestEnv::new(&[("HOPPER_MAX_UPLOAD_BYTES", "100000")]);
    env.start_api().await;
    env.start_worker("ingest,embed,summarize", &[]);

    let (s, b) = upload(&env, "empty.txt", "text/plain", Vec::new()).await;
    assert_eq!(
        (s, b["error"].clone()),
        (422, json!("empty_document")),
        "{b}"
    );
    let (s, b) = upload(&env, "photo.png", "image/png", vec![0x89, b'P', b'N', b'G']).await;
    assert_eq!(s, 415, "{b}");
    assert!(
        b["known"]
            .as_array()
            .unwrap()
            .contains(&json!("application/pdf")),
        "{b}"
    );
    // Oversize: refused from its Content-Length, before the body is read
    // (a raw request, so the client is not still sending when the answer
    // comes).
    let (status, body) = announce_oversized_upload(&env, 200_000).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "too_large", "{body}");
    let (s, b) = upload(
        &env,
        "latin1.txt",
        "text/plain",
        b"caf\xe9 au lait".to_vec(),
    )
    .await;
    assert_eq!((s, b["error"].clone()), (422, json!("invalid_utf8")), "{b}");
    let (s, b) = upload(&env, "fake.pdf", "application/pdf", b"hello".to_vec()).await;
    assert_eq!((s, b["error"].clone()), (422, json!("invalid_pdf")), "{b}");
    let (s, b) = env.post("/v1/documents", &json!({"name": "x.txt"})).await;
    assert_eq!(s, 422, "{b}");

    // A PDF with no text layer is accepted, then fails with a clear error.
    let (s, b) = upload(&env, "scan.pdf", "application/pdf", pdf("")).await;
    assert_eq!(s, 202, "{b}");
    let id = b["document_id"].as_str().unwrap();
    let events = follow(env.http(), &env.url(""), id, Duration::from_secs(60)).await;
    let last = events.last().unwrap();
    assert_eq!(last["status"], "failed", "{last}");
    assert!(
        last["error"].as_str().unwrap().contains("no text layer"),
        "{last}"
    );
    let job = env
        .wait_final(b["job_id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(
        job["state"], "dead",
        "a permanent failure is not retried: {job}"
    );
    assert_eq!(job["attempts"], 1);

    // Nothing is left queued or running.
    let (_, q) = env.get("/v1/queues").await;
    for queue in q["queues"].as_array().unwrap() {
        assert_eq!(
            (queue["pending"].clone(), queue["running"].clone()),
            (json!(0), json!(0)),
            "{q}"
        );
    }
}
