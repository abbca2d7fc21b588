//! A small client of the Hopper API. Error answers become one-line errors
//! carrying the API's own `detail` (and `field`, when named).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The API at one base URL.
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client of the API at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the Hopper API at {}", self.base))?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            match body["field"].as_str() {
                Some(f) => bail!("{status}: {detail} (field `{f}`)"),
                None => bail!("{status}: {detail}"),
            }
        }
        Ok(body)
    }

    /// Submits a job.
    pub async fn submit(
        &self,
        kind: &str,
        args: &Value,
        query: &[(&str, String)],
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .post(format!("{}/v1/jobs/{kind}", self.base))
            .query(query)
            .json(args);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        self.send(req).await
    }

    /// One job.
    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1/jobs/{id}", self.base)))
            .await
    }

    /// Queue stats.
    pub async fn queues(&self) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1/queues", self.base)))
            .await
    }

    /// Polls a job until its state is final.
    pub async fn wait(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let job = self.job(id).await?;
            let state = job["state"].as_str().unwrap_or_default();
            if ["succeeded", "failed", "dead", "cancelled"].contains(&state) {
                return Ok(job);
            }
            if Instant::now() >= deadline {
                bail!("job {id} still {state} after {timeout:?}");
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}
