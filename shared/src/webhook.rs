//! Completion webhooks: which callback URLs are allowed, and how a delivery
//! is signed and verified.
//!
//! A job submitted with `callback_url` gets one `POST` to it when it
//! finishes (succeeded, dead or cancelled), made by a `webhook` job so it is
//! retried with backoff like any other. Each delivery carries:
//!
//! ```text
//! Hopper-Event: job.finished
//! Hopper-Delivery: <the webhook job's id; the same on every retry>
//! Hopper-Timestamp: <unix seconds>
//! Hopper-Signature: v2=<hex HMAC-SHA256(tenant secret, "<delivery>.<timestamp>.<raw body>")>
//! ```
//!
//! **Secrets are per tenant.** The operator sets one master secret
//! (`HOPPER_WEBHOOK_SECRET`); each tenant's signing secret is derived from
//! it with HKDF-SHA256 ([`tenant_secret`]), so no tenant can verify — or
//! forge — another tenant's deliveries, and the master secret never leaves
//! Hopper. A tenant reads its own secret with an admin key from
//! `GET /v1/webhooks/secret`.
//!
//! A receiver recomputes the HMAC over the delivery id, the timestamp and
//! the raw body with its tenant secret, compares in constant time, and
//! rejects timestamps outside its window (5 minutes by [`verify`]) so a
//! captured delivery cannot be replayed later; because the delivery id is
//! signed, a receiver that de-duplicates by it cannot be fooled by a
//! re-labelled copy either. `docs/webhook_receiver.py` is a tested example.
//!
//! No SSRF by default: callback URLs must be http(s) without credentials,
//! and hosts that are (or resolve to) loopback, private, link-local,
//! unique-local, CGNAT, benchmarking, NAT64/6to4/IPv4-compatible or
//! otherwise non-public addresses are refused unless
//! `HOPPER_WEBHOOK_ALLOW_PRIVATE=1` ([`is_public`]).
//! `HOPPER_WEBHOOK_ALLOW_HOSTS` narrows callbacks to listed hosts
//! (`hooks.example.com`, `*.example.com`). The check runs at submission and
//! again, on the resolved addresses, at each delivery (which then connects
//! to exactly the address it checked, never through a proxy).

use std::{net::IpAddr, sync::LazyLock};

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ipnet::{Ipv4Net, Ipv6Net};
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

/// IPv4 ranges that are never a callback's destination: this network,
/// private, CGNAT (shared address space), loopback, link-local, IETF
/// protocol assignments, documentation, 6to4 relay anycast, benchmarking,
/// multicast and reserved (broadcast included).
const BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// IPv6 ranges that are never a callback's destination. Besides the
/// obvious ones, every range that *embeds* an IPv4 address and reaches it
/// through a translator or tunnel (NAT64, 6to4, Teredo, IPv4-compatible),
/// since it may lead to an internal IPv4 host. IPv4-mapped addresses
/// (`::ffff:a.b.c.d`) are checked as the IPv4 address they map.
const BLOCKED_V6: &[&str] = &[
    "::/96",           // unspecified, loopback, IPv4-compatible ::a.b.c.d
    "::ffff:0:0:0/96", // IPv4-translated (SIIT)
    "64:ff9b::/96",    // NAT64, well-known prefix
    "64:ff9b:1::/48",  // NAT64, local use
    "100::/64",        // discard-only
    "2001::/32",       // Teredo
    "2001:db8::/32",   // documentation
    "2002::/16",       // 6to4
    "fc00::/7",        // unique local
    "fe80::/10",       // link local
    "fec0::/10",       // site local (deprecated)
    "ff00::/8",        // multicast
];

/// [`BLOCKED_V4`] and [`BLOCKED_V6`], parsed once.
static BLOCKED: LazyLock<(Vec<Ipv4Net>, Vec<Ipv6Net>)> = LazyLock::new(|| {
    (
        BLOCKED_V4
            .iter()
            .map(|n| n.parse().expect("valid IPv4 CIDR"))
            .collect(),
        BLOCKED_V6
            .iter()
            .map(|n| n.parse().expect("valid IPv6 CIDR"))
            .collect(),
    )
});

/// Whether `ip` is a globally routable address: in none of [`BLOCKED_V4`]
/// or [`BLOCKED_V6`] (an IPv4-mapped IPv6 address is judged as its IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    let (v4_nets, v6_nets) = &*BLOCKED;
    match ip {
        IpAddr::V4(v4) => !v4_nets.iter().any(|n| n.contains(&v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => !v6_nets.iter().any(|n| n.contains(&v6)),
        },
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Version tag of the signature scheme, before the `=` of `Hopper-Signature`.
pub const SCHEME: &str = "v2";

/// Salt of the HKDF that derives tenant secrets (fixed: changing it changes
/// every tenant's secret).
const TENANT_SECRET_SALT: &[u8] = b"hopper/webhook-secret/v1";

/// The signing secret of `tenant`'s deliveries: HKDF-SHA256 of the master
/// secret (salt [`TENANT_SECRET_SALT`], info `tenant:<tenant>`), 32 bytes as
/// `whsec_<hex>`. Deterministic, so every worker and API replica derives the
/// same one and nothing is stored; different for every tenant, and the
/// master secret cannot be recovered from it.
pub fn tenant_secret(master: &str, tenant: &str) -> String {
    let hk = Hkdf::<Sha256>::new(Some(TENANT_SECRET_SALT), master.as_bytes());
    let mut okm = [0u8; 32];
    let info = [b"tenant:".as_slice(), tenant.as_bytes()].concat();
    hk.expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    format!("whsec_{}", hex::encode(okm))
}

impl WebhookConfig {
    /// `tenant`'s signing secret ([`tenant_secret`]); `None` while callbacks
    /// are off (no master secret).
    pub fn tenant_secret(&self, tenant: &str) -> Option<String> {
        self.secret.as_deref().map(|m| tenant_secret(m, tenant))
    }
}

/// The HMAC of one delivery: over `"<delivery>.<timestamp>.<body>"`.
fn mac(secret: &str, delivery: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(delivery.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Hopper-Signature` value of delivery `delivery` of `body`, sent at
/// `timestamp` (unix s), signed with `secret` (the tenant's secret).
pub fn sign(secret: &str, delivery: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, delivery, timestamp, body)
        .finalize()
        .into_bytes();
    format!("{SCHEME}={}", hex::encode(tag))
}

/// How far a delivery's timestamp may be from the receiver's clock.
pub const TOLERANCE_S: i64 = 300;

/// Verifies a delivery as a receiver should: the signature over delivery
/// id, timestamp and raw body (constant-time), and the timestamp within
/// [`TOLERANCE_S`] of `now` (unix s), so an old delivery cannot be replayed.
pub fn verify(
    secret: &str,
    delivery: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    if (now - ts).abs() > TOLERANCE_S {
        return false;
    }
    let Some(given) = signature
        .trim()
        .strip_prefix(SCHEME)
        .and_then(|rest| rest.strip_prefix('='))
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    mac(secret, delivery, ts, body).verify_slice(&given).is_ok()
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
    fn every_non_public_range_is_refused_and_public_neighbours_are_not() {
        let c = config(&[], false);
        for bad in [
            // NAT64 (well-known and local-use prefixes) to internal IPv4.
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a00:5]/",
            "http://[64:ff9b:1::a00:5]/",
            // 6to4 of 127.0.0.1 and of a public address: tunnels, refused whole.
            "http://[2002:7f00:1::1]/",
            "http://[2002:808:808::1]/",
            // Site-local (deprecated, still routed inside some networks).
            "http://[fec0::1]/",
            "http://[feff::1]/",
            // IPv4-compatible ::a.b.c.d, internal and public.
            "http://[::127.0.0.1]/",
            "http://[::10.0.0.1]/",
            "http://[::8.8.8.8]/",
            // IPv4-translated, Teredo, discard-only.
            "http://[::ffff:0:a00:1]/",
            "http://[2001::1]/",
            "http://[100::1]/",
            // CGNAT (100.64.0.0/10), both ends.
            "http://100.64.0.0/",
            "http://100.127.255.255/",
            // Benchmarking (198.18.0.0/15), both ends.
            "http://198.18.0.1/",
            "http://198.19.255.255/",
            // And their IPv4-mapped forms.
            "http://[::ffff:100.64.0.1]/",
            "http://[::ffff:198.18.0.1]/",
        ] {
            assert!(c.check_url(bad).is_err(), "{bad} accepted");
        }
        for good in [
            "http://100.63.255.255/",
            "http://100.128.0.0/",
            "http://198.17.255.255/",
            "http://198.20.0.0/",
            "http://[2606:4700:4700::1111]/",
            "http://[64:ff9c::1]/",
            "http://[2003::1]/",
            "http://[fbff::1]/",
            "http://[::ffff:8.8.8.8]/",
        ] {
            assert!(c.check_url(good).is_ok(), "{good} refused");
        }
        // Resolved addresses are judged by the same rules at delivery.
        for ip in [
            "64:ff9b::a00:1",
            "2002::1",
            "fec0::1",
            "::1.2.3.4",
            "100.64.1.1",
            "198.18.5.5",
        ] {
            assert!(!c.address_allowed(ip.parse().unwrap()), "{ip}");
        }
        assert!(c.address_allowed("1.1.1.1".parse().unwrap()));
        assert!(config(&[], true).address_allowed("198.18.0.1".parse().unwrap()));
    }

    #[test]
    fn tenant_secrets_are_derived_per_tenant_and_hide_the_master() {
        let a = tenant_secret("master-secret-0123456789", "acme");
        assert_eq!(
            a,
            tenant_secret("master-secret-0123456789", "acme"),
            "deterministic"
        );
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64, "{a}");
        assert_ne!(a, tenant_secret("master-secret-0123456789", "acme2"));
        assert_ne!(a, tenant_secret("master-secret-0123456789", "ACME"));
        assert_ne!(a, tenant_secret("another-master-0123456789", "acme"));
        assert!(!a.contains("master"));
        // RFC 5869 HKDF-SHA256 with this salt and info, computed apart (a
        // change of derivation would change every receiver's secret).
        assert_eq!(
            a,
            "whsec_28aafbe5336eb69ea5a3e46d425ebdf8b7debf99699a9898b474c74687c8b819"
        );
        let c = config(&[], false);
        assert_eq!(c.tenant_secret("acme"), Some(tenant_secret("s", "acme")));
        assert_eq!(WebhookConfig::default().tenant_secret("acme"), None);
    }

    #[test]
    fn signatures_verify_and_expire() {
        let body = br#"{"event":"job.finished"}"#;
        let d = "0190c3d2-0000-7000-8000-000000000001";
        let sig = sign("secret", d, 1_700_000_000, body);
        assert!(sig.starts_with("v2="));
        assert!(verify("secret", d, "1700000000", &sig, body, 1_700_000_100));
        assert!(!verify("other", d, "1700000000", &sig, body, 1_700_000_100));
        assert!(!verify(
            "secret",
            d,
            "1700000000",
            &sig,
            b"{}",
            1_700_000_100
        ));
        assert!(!verify(
            "secret",
            d,
            "1700000001",
            &sig,
            body,
            1_700_000_100
        ));
        assert!(
            !verify(
                "secret",
                "another-delivery",
                "1700000000",
                &sig,
                body,
                1_700_000_100
            ),
            "the delivery id is signed"
        );
        assert!(
            !verify(
                "secret",
                d,
                "1700000000",
                &sig.replacen("v2=", "v1=", 1),
                body,
                1_700_000_100
            ),
            "only the current scheme"
        );
        assert!(
            !verify(
                "secret",
                d,
                "1700000000",
                &sig,
                body,
                1_700_000_000 + TOLERANCE_S + 1
            ),
            "replayed after the window"
        );
        assert!(!verify("secret", d, "x", &sig, body, 1_700_000_000));
    }
}
