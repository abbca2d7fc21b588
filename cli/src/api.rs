//! A small client of the Hopper API. Error answers become one-line errors
//! carrying the API's own `detail` (and `field`, when named).

use std::{
    fmt::Write,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hopper_shared::retry_policy::{self, Pauses};
use serde_json::Value;

/// `raw` as one path segment: a name that is not a valid id is the API's
/// to refuse, so it is only escaped here.
pub fn segment(raw: &str) -> String {
    let mut s = String::new();
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

/// The API at one base URL.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client of the API at `base`, sending `key` (if any) as a bearer
    /// token on every request.
    pub fn new(base: &str, key: Option<&str>) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .context("the API key holds characters a header cannot carry")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()?,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the Hopper API at {}", self.base))?;
        let status = res.status();
        let body: Value = if status == reqwest::StatusCode::NO_CONTENT {
            Value::Null
        } else {
            res.json().await.unwrap_or(Value::Null)
        };
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

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `GET path?query` as JSON (the query encoded).
    pub async fn get_query(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
            .map(|_| ())
    }

    /// Uploads one file as a document.
    pub async fn upload(
        &self,
        path: &std::path::Path,
        document_set: Option<&str>,
    ) -> anyhow::Result<Value> {
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "document".into());
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name),
        );
        if let Some(set) = document_set {
            form = form.text("document_set", set.to_owned());
        }
        self.send(
            self.http
                .post(format!("{}/v1/documents", self.base))
                .multipart(form),
        )
        .await
    }

    /// The SSE stream of a document's progress, as a response to read.
    pub async fn events(&self, id: &str) -> anyhow::Result<reqwest::Response> {
        let res = self
            .http
            .get(format!("{}/v1/documents/{id}/events", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach the Hopper API at {}", self.base))?;
        if !res.status().is_success() {
            bail!("{}: cannot follow document {id}", res.status());
        }
        Ok(res)
    }

    /// The event stream of a job's state and progress
    /// (`GET /v1/jobs/{id}/events`), as a response to read.
    pub async fn job_events(&self, id: &str) -> anyhow::Result<reqwest::Response> {
        let res = self
            .http
            .get(format!("{}/v1/jobs/{}/events", self.base, segment(id)))
            .send()
            .await
            .with_context(|| format!("cannot reach the Hopper API at {}", self.base))?;
        let status = res.status();
        if !status.is_success() {
            let body: Value = res.json().await.unwrap_or(Value::Null);
            let detail = body["detail"].as_str().unwrap_or("no detail");
            bail!("{status}: {detail}");
        }
        Ok(res)
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

    /// Polls a job until its state is final, at the pace of
    /// [`retry_policy::job_wait_poll`] (20 ms, doubling to 500 ms).
    pub async fn wait(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut pauses = Pauses::new(retry_policy::job_wait_poll());
        loop {
            let job = self.job(id).await?;
            let state = job["state"].as_str().unwrap_or_default();
            if ["succeeded", "failed", "dead", "cancelled"].contains(&state) {
                return Ok(job);
            }
            if Instant::now() >= deadline {
                bail!("job {id} still {state} after {timeout:?}");
            }
            tokio::time::sleep(pauses.next_pause()).await;
        }
    }
}
