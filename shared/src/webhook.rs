//! Completion webhooks: which callback URLs are allowed, and how a delivery
//! is signed and verified.
//!
//! A job submitted with `callback_url` gets one `POST` to it when it
//! finishes (succeeded, dead or cancelled), made by a `webhook` job so it is
//! retried with backoff like any other. Each delivery carries:
//!
//! ```text
//! Hopper-Event: job.finished
//! Hopper-Delivery: <the webhook job's id>
//! Hopper-Timestamp: <unix seconds>
//! Hopper-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
//! ```
//!
//! A receiver recomputes the HMAC over the timestamp and the raw body with
//! the shared secret (`HOPPER_WEBHOOK_SECRET`), compares in constant time,
//! and rejects timestamps outside its window (5 minutes by [`verify`]) so a
//! captured delivery cannot be replayed later. `docs/webhook_receiver.py`
//! is a tested example.
//!
//! No SSRF by default: callback URLs must be http(s) without credentials,
//! and hosts that are (or resolve to) loopback, private, link-local,
//! unique-local or otherwise non-public addresses are refused unless
//! `HOPPER_WEBHOOK_ALLOW_PRIVATE=1`. `HOPPER_WEBHOOK_ALLOW_HOSTS` narrows
//! callbacks to listed hosts (`hooks.example.com`, `*.example.com`). The
//! check runs at submission and again, on the resolved addresses, at each
//! delivery (which then connects to exactly the address it checked).

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where callbacks may go and how they are signed.
#[derive(Clone, Default)]
pub struct WebhookConfig {
    /// The signing secret (`HOPPER_WEBHOOK_SECRET` or `…_FILE`); callbacks
    /// are refused while it is unset.
    pub secret: Option<String>,
    /// Hosts callbacks may go to (`HOPPER_WEBHOOK_ALLOW_HOSTS`); any public
    /// host when empty.
    pub allow_hosts: Vec<String>,
    /// Allow loopback and private addresses (`HOPPER_WEBHOOK_ALLOW_PRIVATE`;
    /// tests and single-host set-ups).
    pub allow_private: bool,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("allow_hosts", &self.allow_hosts)
            .field("allow_private", &self.allow_private)
            .finish()
    }
}

/// Longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2_048;

impl WebhookConfig {
    /// Checks a callback URL as submitted: shape, allow-list, and (for IP
    /// literals and `localhost`) the address. Returns why it is refused.
    pub fn check_url(&self, raw: &str) -> Result<url::Url, String> {
        if self.secret.is_none() {
            return Err("callbacks are off: HOPPER_WEBHOOK_SECRET is not set".into());
        }
        if raw.len() > MAX_URL_LEN {
            return Err(format!("callback_url is over {MAX_URL_LEN} bytes"));
        }
        let url = url::Url::parse(raw).map_err(|e| format!("callback_url is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("callback_url must be http or https".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("callback_url must not carry credentials".into());
        }
        let host = url
            .host_str()
            .ok_or("callback_url has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if !self.allow_hosts.is_empty() && !self.allow_hosts.iter().any(|p| host_matches(p, &host))
        {
            return Err(format!(
                "callback host `{host}` is not in HOPPER_WEBHOOK_ALLOW_HOSTS"
            ));
        }
        if !self.allow_private {
            let private = match host.parse::<IpAddr>() {
                Ok(ip) => !is_public(ip),
                Err(_) => host == "localhost" || host.ends_with(".localhost"),
            };
            if private {
                return Err(format!(
                    "callback host `{host}` is not a public address (HOPPER_WEBHOOK_ALLOW_PRIVATE)"
                ));
            }
        }
        Ok(url)
    }

    /// Whether a delivery may connect to `ip` (a resolved address).
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

/// `pattern` is a host, or `*.suffix` for any subdomain of `suffix`.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(&format!(".{suffix}")),
        None => host == pattern,
    }
}

/// Whether `ip` is a globally routable address (not loopback, private,
/// link-local, CGNAT, unique-local, multicast, documentation or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The `Hopper-Signature` value of `body` sent at `timestamp` (unix s).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How far a delivery's timestamp may be from the receiver's clock.
pub const TOLERANCE_S: i64 = 300;

/// Verifies a delivery as a receiver should: the signature over timestamp
/// and raw body (constant-time), and the timestamp within [`TOLERANCE_S`]
/// of `now` (unix s), so an old delivery cannot be replayed.
pub fn verify(secret: &str, timestamp: &str, signature: &str, body: &[u8], now: i64) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    if (now - ts).abs() > TOLERANCE_S {
        return false;
    }
    let Some(given) = signature
        .trim()
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hosts: &[&str], private: bool) -> WebhookConfig {
        WebhookConfig {
            secret: Some("s".into()),
            allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allow_private: private,
        }
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let c = config(&[], false);
        for bad in [
            "http://127.0.0.1/x",
            "http://localhost:8080/",
            "http://10.0.0.5/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:192.168.1.1]/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            assert!(c.check_url(bad).is_err(), "{bad} accepted");
        }
        assert!(c.check_url("https://hooks.example.com/hopper").is_ok());
        assert!(c.check_url("http://8.8.8.8/").is_ok());
        assert!(config(&[], true).check_url("http://127.0.0.1:9/x").is_ok());
        let off = WebhookConfig::default();
        assert!(
            off.check_url("https://hooks.example.com/")
                .unwrap_err()
                .contains("SECRET")
        );
    }

    #[test]
    fn the_allow_list_narrows_hosts() {
        let c = config(&["hooks.example.com", "*.corp.example"], false);
        assert!(c.check_url("https://hooks.example.com/a").is_ok());
        assert!(c.check_url("https://a.b.corp.example/a").is_ok());
        assert!(c.check_url("https://corp.example/a").is_err());
        assert!(c.check_url("https://evil.example/a").is_err());
        assert!(
            c.check_url("https://hooks.example.com.evil.example/a")
                .is_err()
        );
    }

    #[test]
    fn signatures_verify_and_expire() {
        let body = br#"{"event":"job.finished"}"#;
        let sig = sign("secret", 1_700_000_000, body);
        assert!(sig.starts_with("v1="));
        assert!(verify("secret", "1700000000", &sig, body, 1_700_000_100));
        assert!(!verify("other", "1700000000", &sig, body, 1_700_000_100));
        assert!(!verify("secret", "1700000000", &sig, b"{}", 1_700_000_100));
        assert!(!verify("secret", "1700000001", &sig, body, 1_700_000_100));
        assert!(
            !verify(
                "secret",
                "1700000000",
                &sig,
                body,
                1_700_000_000 + TOLERANCE_S + 1
            ),
            "replayed after the window"
        );
        assert!(!verify("secret", "x", &sig, body, 1_700_000_000));
    }
}
