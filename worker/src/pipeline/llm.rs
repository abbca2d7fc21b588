//! Abstractive summaries from an OpenAI-compatible chat-completions endpoint
//! (when `HOPPER_SUMMARY_LLM_URL` is set): a per-request timeout, retries
//! with exponential backoff on timeouts, 429 and 5xx, and a circuit breaker
//! (`breaker.rs`) that, after repeated failures, stops calling the endpoint
//! for a while so the summarize queue falls back to extractive summaries
//! instead of piling up, then lets one probe call find out whether it is
//! back.

use std::time::{Duration, Instant};

use hopper_shared::config::LlmConfig;
use serde_json::{Value, json};

use super::breaker::{Breaker, Permit};

/// Failures in a row that open the breaker.
const TRIP_AFTER: u32 = 5;
/// How long an open breaker refuses calls.
const OPEN_FOR: Duration = Duration::from_secs(30);
/// Attempts per summary (first call included).
const TRIES: u32 = 3;
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
        let mut pause = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=TRIES {
            match self.call(text).await {
                Ok(summary) => {
                    self.breaker.record(permit, true, Instant::now());
                    return Ok(summary);
                }
                Err((retryable, e)) => {
                    last = e;
                    if !retryable || attempt == TRIES {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
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
