//! The `webhook` kind: one signed `POST` of a finished job's record to the
//! callback URL its submitter gave (see `hopper_shared::webhook` for the
//! signature and the SSRF rules).
//!
//! Each delivery is signed with its tenant's secret (derived from the master
//! secret and the webhook job's tenant, which is the finished job's), over
//! the delivery id, the timestamp and the body.
//!
//! The URL is checked again here, and its host is resolved here: the
//! delivery connects only to an address that passed the check (pinned with
//! reqwest's `resolve`), so DNS cannot point it at an internal address after
//! submission. Proxy variables (`HTTP(S)_PROXY`, `ALL_PROXY`) are ignored:
//! a proxy would resolve and connect on its own, around both the pin and
//! the check. Redirects are not followed. A 2xx answer delivers; 410 Gone
//! stops for good (dead letter); anything else, or no answer within 10 s,
//! is retried with the queue's backoff.

use std::{net::SocketAddr, time::Duration};

use apalis_core::{error::BoxDynError, task::data::Data};
use hopper_queue::{JobContext, Permanent};
use hopper_shared::{jobs::WebhookArgs, webhook};
use serde_json::{Value, json};

/// Longest a receiver may take to answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What deliveries need: the signing secret and the allowed destinations.
#[derive(Clone, Debug)]
pub struct Deliverer {
    config: webhook::WebhookConfig,
}

impl Deliverer {
    /// A deliverer for `config`.
    pub fn new(config: webhook::WebhookConfig) -> Self {
        Self { config }
    }
}

/// Handler of the `webhook` kind.
pub async fn deliver(
    args: WebhookArgs,
    job: Data<JobContext>,
    d: Data<Deliverer>,
) -> Result<Value, BoxDynError> {
    let secret = d
        .config
        .tenant_secret(&job.tenant)
        .ok_or_else(|| Permanent("HOPPER_WEBHOOK_SECRET is not set on this worker".into()))?;
    let url = d.config.check_url(&args.url).map_err(Permanent)?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let addr = addrs
        .iter()
        .copied()
        .find(|a| d.config.address_allowed(a.ip()))
        .ok_or_else(|| {
            Permanent(format!(
                "{host} resolves only to non-public addresses ({addrs:?})"
            ))
        })?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DELIVERY_TIMEOUT)
        .resolve(&bare, addr)
        .build()?;
    let body = serde_json::to_vec(&args.body)?;
    let timestamp = hopper_queue::now_ms() / 1000;
    let delivery = job.id.to_string();
    let started = std::time::Instant::now();
    let res = client
        .post(url.clone())
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("hopper-webhook/", env!("CARGO_PKG_VERSION")),
        )
        .header("hopper-event", &args.event)
        .header(
            "hopper-signature",
            webhook::sign(&secret, &delivery, timestamp, &body),
        )
        .header("hopper-delivery", delivery)
        .header("hopper-timestamp", timestamp.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| format!("delivery to {host} failed: {e}"))?;
    let status = res.status().as_u16();
    match status {
        200..=299 => Ok(json!({
            "status": status,
            "address": addr.to_string(),
            "took_ms": started.elapsed().as_millis() as u64,
        })),
        410 => Err(Permanent(format!("{host} answered 410 Gone: not retried")).into()),
        _ => Err(format!("{host} answered {status}").into()),
    }
}
