//! Abstractive summaries from an OpenAI-compatible chat-completions endpoint
//! (when `HOPPER_SUMMARY_LLM_URL` is set): a per-request timeout, retries
//! with exponential backoff on timeouts, 429 and 5xx
//! (`hopper_shared::retry_policy::llm_call`: three calls, 200 and 400 ms
//! apart), and a circuit breaker
//! (`breaker.rs`) that, after repeated failures, stops calling the endpoint
//! for a while so the summarize queue falls back to extractive summaries
//! instead of piling up, then lets one probe call find out whether it is
//! back.

use std::time::{Duration, Instant};

use hopper_shared::{
    config::LlmConfig,
    retry_policy::{self, Retryable},
};
use serde_json::{Value, json};

use super::breaker::{Breaker, Permit};

/// Failures in a row that open the breaker.
const TRIP_AFTER: u32 = 5;
/// How long an open breaker refuses calls.
const OPEN_FOR: Duration = Duration::from_secs(30);
/// Characters of the document sent to the model.
const MAX_INPUT_CHARS: usize = 12_000;

/// Why no summary came back.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The breaker is open: the endpoint failed repeatedly just now.
    #[error("the summary endpoint is failing; not calling it for a while")]
    Open,
    /// The endpoint answered, but not with a summary.
    #[error("summary endpoint: {0}")]
    Failed(String),
}

/// A chat-completions client with a circuit breaker.
pub struct LlmSummarizer {
    http: reqwest::Client,
    config: LlmConfig,
    breaker: Breaker,
}

impl LlmSummarizer {
    /// A client of `config`'s endpoint.
    pub fn new(config: LlmConfig) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(config.timeout)
                .build()
                .unwrap_or_default(),
            config,
            breaker: Breaker::new(TRIP_AFTER, OPEN_FOR),
        }
    }

    /// A summary of `text`, or why not.
    pub async fn summarize(&self, text: &str) -> Result<String, LlmError> {
        let permit = self.breaker.permit(Instant::now());
        if permit == Permit::Refused {
            return Err(LlmError::Open);
        }
        let last = match (|| self.call(text))
            .retry(retry_policy::llm_call())
            .when(|(retryable, _)| *retryable)
            .await
        {
            Ok(summary) => {
                self.breaker.record(permit, true, Instant::now());
                return Ok(summary);
            }
            Err((_, e)) => e,
        };
        if self.breaker.record(permit, false, Instant::now()) {
            tracing::warn!(
                probe = permit == Permit::Probe,
                "summary endpoint failing: breaker open for {OPEN_FOR:?}"
            );
        }
        Err(LlmError::Failed(last))
    }

    /// One request; the error says whether a retry may help.
    async fn call(&self, text: &str) -> Result<String, (bool, String)> {
        let input: String = text.chars().take(MAX_INPUT_CHARS).collect();
        let body = json!({
            "model": self.config.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "Summarise the document in at most three sentences. Answer with the summary only."},
                {"role": "user", "content": input},
            ],
        });
        let mut req = self
            .http
            .post(format!("{}/chat/completions", self.config.base_url))
            .json(&body);
        if let Some(key) = &self.config.api_key {
            req = req.bearer_auth(key);
        }
        let res = req.send().await.map_err(|e| (true, e.to_string()))?;
        let status = res.status();
        if !status.is_success() {
            let retryable = status.as_u16() == 429 || status.is_server_error();
            return Err((retryable, format!("HTTP {status}")));
        }
        let v: Value = res.json().await.map_err(|e| (true, e.to_string()))?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                (
                    false,
                    "no choices[0].message.content in the answer".to_owned(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    };

    use hopper_shared::retry_policy::LLM_TRIES;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A chat endpoint answering its `n`th request (0-based) with
    /// `statuses[n]` (the last one repeated); a 200 carries a summary.
    /// Returns its base URL and a count of the requests it saw.
    async fn endpoint(statuses: &'static [u16]) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let n = count.fetch_add(1, SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                tokio::spawn(async move {
                    // Read the whole request (headers, then the body's length).
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    loop {
                        let got = sock.read(&mut tmp).await.unwrap_or(0);
                        if got == 0 {
                            return;
                        }
                        buf.extend_from_slice(&tmp[..got]);
                        let text = String::from_utf8_lossy(&buf).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len: usize = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let body = if status == 200 {
                        json!({"choices": [{"message": {"content": "A summary."}}]})
                    } else {
                        json!({"error": "no"})
                    }
                    .to_string();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        (url, seen)
    }

    fn summarizer(base_url: String) -> LlmSummarizer {
        LlmSummarizer::new(LlmConfig {
            base_url,
            model: "m".into(),
            api_key: None,
            timeout: Duration::from_secs(10),
        })
    }

    #[tokio::test]
    async fn a_503_is_retried_and_the_summary_returned() {
        let (url, seen) = endpoint(&[503, 200]).await;
        let summary = summarizer(url).summarize("text").await.unwrap();
        assert_eq!(summary, "A summary.");
        assert_eq!(seen.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failing_endpoint_is_called_llm_tries_times() {
        let (url, seen) = endpoint(&[500]).await;
        let err = summarizer(url).summarize("text").await.unwrap_err();
        assert!(err.to_string().contains("500"), "{err}");
        assert_eq!(seen.load(SeqCst), LLM_TRIES);
    }

    #[tokio::test]
    async fn a_400_is_not_retried() {
        let (url, seen) = endpoint(&[400, 200]).await;
        let err = summarizer(url).summarize("text").await.unwrap_err();
        assert!(err.to_string().contains("400"), "{err}");
        assert_eq!(seen.load(SeqCst), 1);
    }
}
