//! Summaries from an OpenAI-compatible chat endpoint, tested against a small
//! local server in this test that speaks the API (and fails once, to prove
//! the retry).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hopper_tests::TestEnv;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Requests the fake endpoint saw: (authorization header, JSON body).
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// Serves `/v1/chat/completions`: 503 on the first request, then a summary.
async fn fake_llm() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                let (head, body) = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break (head, buf[end + 4..end + 4 + len].to_vec());
                        }
                    }
                };
                let auth = head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization:"))
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                let first = {
                    let mut l = log.lock().unwrap();
                    l.push((auth, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                    l.len() == 1
                };
                let (status, reply) = if first {
                    ("503 Service Unavailable", json!({"error": "busy"}))
                } else {
                    (
                        "200 OK",
                        json!({"choices": [{"message": {"role": "assistant", "content": "An LLM wrote this."}}]}),
                    )
                };
                let reply = reply.to_string();
                let res = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = sock.write_all(res.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn summaries_come_from_the_configured_chat_endpoint_with_a_retry() {
    let (url, seen) = fake_llm().await;
    let mut env = TestEnv::new(&[
        ("HOPPER_SUMMARY_LLM_URL", url.as_str()),
        ("HOPPER_SUMMARY_LLM_MODEL", "tiny-llm"),
        ("HOPPER_SUMMARY_LLM_KEY", "sekrit"),
    ]);
    env.start_api().await;
    env.start_worker("ingest,embed,summarize", &[]);
    let (s, b) = env
        .post("/v1/documents", &json!({"name": "moths.txt", "text": "Moths navigate by the moon. Lamps confuse them."}))
        .await;
    assert_eq!(s, 202, "{b}");
    let id = b["document_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let (_, d) = env.get(&format!("/v1/documents/{id}")).await;
        if d["status"] == "ready" || d["status"] == "failed" {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(doc["status"], "ready", "{doc}");
    assert_eq!(doc["summary"], "An LLM wrote this.");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one 503, then one retry");
    let (auth, body) = &seen[1];
    assert_eq!(auth, "bearer sekrit");
    assert_eq!(body["model"], "tiny-llm");
    assert!(
        body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Moths navigate"),
        "{body}"
    );
}
