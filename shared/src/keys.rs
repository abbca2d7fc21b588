//! API keys: how they look, how they are stored, and the scopes they carry.
//!
//! A key is `hop_<prefix>_<secret>` (8 and 32 hex characters, from the OS
//! random source). Postgres keeps the prefix (to find the row), the tenant,
//! the scopes and the SHA-256 of the secret — never the secret, which is shown
//! once at creation. The secret has 128 bits of entropy, so a plain hash is
//! enough (no password-stretching needed); comparison is constant-time.
//!
//! Keys are created, listed and revoked by `hopper keys …` (straight against
//! Postgres, so the first admin key needs no key) and by the API's
//! `/v1/keys` routes (admin scope, own tenant only).
//!
//! A `work` key is what a remote worker (the HTTP worker protocol,
//! `/v1/work/*`) presents: it serves its tenant's tasks, optionally only the
//! queues named in its `queues` list (`None`: any queue it may serve).

use std::{fmt, str::FromStr};

use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scope {
    /// Submit and cancel jobs, upload and delete documents, retry dead letters.
    Submit,
    /// Read jobs, documents, search, queue depth.
    Read,
    /// Purge dead letters, manage the tenant's keys.
    Admin,
    /// Serve tasks as a remote worker (`/v1/work/*`): declare, claim,
    /// heartbeat, complete and fail jobs.
    Work,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [Scope::Submit, Scope::Read, Scope::Admin, Scope::Work];

    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Work => "work",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown scope `{s}` (submit, read, admin, work)"))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `submit,read` into scopes (at least one, no unknown ones).
pub fn parse_scopes(list: &str) -> std::result::Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let scope = s.parse::<Scope>()?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err("give at least one scope (submit, read, admin, work)".into());
    }
    Ok(scopes)
}

/// Whether `tenant` is a usable tenant name: 1–64 of `[A-Za-z0-9_.-]`.
pub fn valid_tenant(tenant: &str) -> bool {
    (1..=64).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    /// Row id.
    pub id: uuid::Uuid,
    /// The public part (`hop_<prefix>_…`).
    pub prefix: String,
    /// Whose data it reaches.
    pub tenant: String,
    /// A label.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The queues a `work` key may serve (`None`: any it may serve).
    pub queues: Option<Vec<crate::QueueName>>,
    /// Unix ms: created.
    pub created_at_ms: i64,
    /// Unix ms: revoked, if it was.
    pub revoked_at_ms: Option<i64>,
}

/// A key as the API checks it: its info and the secret's hash.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// The key's public facts.
    pub info: KeyInfo,
    secret_sha256: Vec<u8>,
}

impl StoredKey {
    /// Whether `secret` is this key's secret (constant-time).
    pub fn matches(&self, secret: &str) -> bool {
        use subtle::ConstantTimeEq;
        let digest = Sha256::digest(secret.as_bytes());
        digest.as_slice().ct_eq(&self.secret_sha256).into()
    }
}

/// Splits `hop_<prefix>_<secret>` into prefix and secret.
pub fn split(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("hop_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(prefix, 8) && hex(secret, 32)).then_some((prefix, secret))
}

/// Creates a key; returns its info and the full key (shown once).
pub async fn create(
    pool: &Pool,
    tenant: &str,
    name: &str,
    scopes: &[Scope],
) -> Result<(KeyInfo, String)> {
    create_limited(pool, tenant, name, scopes, None).await
}

/// Parses `resize,ocr` into queue names (at least one, each valid).
pub fn parse_queues(list: &str) -> std::result::Result<Vec<crate::QueueName>, String> {
    let mut queues: Vec<crate::QueueName> = Vec::new();
    for q in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let q = crate::QueueName::new(q).map_err(|e| e.to_string())?;
        if !queues.contains(&q) {
            queues.push(q);
        }
    }
    if queues.is_empty() {
        return Err("give at least one queue name".into());
    }
    Ok(queues)
}

/// Creates a key whose `work` scope serves only `queues` (any queue when
/// `None`); returns its info and the full key (shown once). A queue list
/// needs the `work` scope (it limits nothing else).
pub async fn create_limited(
    pool: &Pool,
    tenant: &str,
    name: &str,
    scopes: &[Scope],
    queues: Option<&[crate::QueueName]>,
) -> Result<(KeyInfo, String)> {
    if let Some(queues) = queues {
        if !scopes.contains(&Scope::Work) {
            return Err(Error::Invalid(
                "a queue list limits a `work` key: give the `work` scope too".into(),
            ));
        }
        if queues.is_empty() {
            return Err(Error::Invalid(
                "a queue list names at least one queue (leave it out for any queue)".into(),
            ));
        }
    }
    if !valid_tenant(tenant) {
        return Err(Error::Invalid(format!(
            "tenant `{tenant}` must be 1-64 letters, digits, `_`, `-` or `.`"
        )));
    }
    if scopes.is_empty() {
        return Err(Error::Invalid("a key needs at least one scope".into()));
    }
    let id = uuid::Uuid::new_v4();
    let prefix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let hash = Sha256::digest(secret.as_bytes()).to_vec();
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let queue_names: Option<Vec<&str>> = queues.map(|q| q.iter().map(|q| q.as_str()).collect());
    let client = pool.get().await?;
    let row = client
        .query_one(
            "INSERT INTO api_keys (id, prefix, secret_sha256, tenant, name, scopes, queues) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING (extract(epoch FROM created_at) * 1000)::int8",
            &[&id, &prefix, &hash, &tenant, &name, &names, &queue_names],
        )
        .await?;
    let info = KeyInfo {
        id,
        prefix: prefix.clone(),
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        scopes: scopes.to_vec(),
        queues: queues.map(<[crate::QueueName]>::to_vec),
        created_at_ms: row.get(0),
        revoked_at_ms: None,
    };
    Ok((info, format!("hop_{prefix}_{secret}")))
}

const KEY_COLUMNS: &str = "id, prefix, tenant, name, scopes, \
     (extract(epoch FROM created_at) * 1000)::int8, \
     (extract(epoch FROM revoked_at) * 1000)::int8, secret_sha256, queues";

fn from_row(row: &tokio_postgres::Row) -> Result<StoredKey> {
    let scopes: Vec<String> = row.get(4);
    let scopes = scopes
        .iter()
        .map(|s| s.parse::<Scope>().map_err(Error::Invalid))
        .collect::<Result<Vec<_>>>()?;
    let queues: Option<Vec<String>> = row.get(8);
    let queues = queues
        .map(|q| {
            q.iter()
                .map(|n| crate::QueueName::new(n).map_err(|e| Error::Invalid(e.to_string())))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(StoredKey {
        info: KeyInfo {
            id: row.get(0),
            prefix: row.get(1),
            tenant: row.get(2),
            name: row.get(3),
            scopes,
            queues,
            created_at_ms: row.get(5),
            revoked_at_ms: row.get(6),
        },
        secret_sha256: row.get(7),
    })
}

/// The key with this prefix, revoked or not.
pub async fn find(pool: &Pool, prefix: &str) -> Result<Option<StoredKey>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1"),
            &[&prefix],
        )
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Keys of one tenant (every tenant when `None`), newest first.
pub async fn list(pool: &Pool, tenant: Option<&str>) -> Result<Vec<KeyInfo>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR tenant = $1) \
                 ORDER BY created_at DESC"
            ),
            &[&tenant],
        )
        .await?;
    rows.iter().map(|r| from_row(r).map(|k| k.info)).collect()
}

/// Revokes the key with this id or prefix (of `tenant`, when given).
/// Returns the revoked key's prefix, `None` when no live key matched.
pub async fn revoke(
    pool: &Pool,
    id_or_prefix: &str,
    tenant: Option<&str>,
) -> Result<Option<String>> {
    let id = uuid::Uuid::parse_str(id_or_prefix).ok();
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "UPDATE api_keys SET revoked_at = now() \
             WHERE (id = $1 OR prefix = $2) AND ($3::text IS NULL OR tenant = $3) \
               AND revoked_at IS NULL \
             RETURNING prefix",
            &[&id, &id_or_prefix, &tenant],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Prefixes of the keys revoked at or after `since_ms` (unix ms; the last
/// two minutes when `None`), and Postgres' clock now (unix ms), for the
/// next call's `since_ms`. The API polls this to drop revoked keys from
/// its cache on every replica, however they were revoked (API, CLI, SQL).
pub async fn revoked_since(pool: &Pool, since_ms: Option<i64>) -> Result<(i64, Vec<String>)> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT (extract(epoch FROM now()) * 1000)::int8, \
                    ARRAY(SELECT prefix FROM api_keys WHERE revoked_at >= \
                          COALESCE(to_timestamp($1::int8 / 1000.0), now() - interval '2 minutes'))",
            &[&since_ms],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_only_in_their_own_shape() {
        let key = "hop_0123abcd_0123456789abcdef0123456789abcdef";
        assert_eq!(
            split(key),
            Some(("0123abcd", "0123456789abcdef0123456789abcdef"))
        );
        for bad in [
            "",
            "hop_",
            "hop_0123abcd",
            "hop_0123abc_0123456789abcdef0123456789abcdef",
            "hop_0123abcd_0123456789abcdef0123456789abcde",
            "hop_0123abcz_0123456789abcdef0123456789abcdef",
            "Bearer hop_0123abcd_0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_stored_key_matches_only_its_secret() {
        let key = StoredKey {
            info: KeyInfo {
                id: uuid::Uuid::nil(),
                prefix: "p".into(),
                tenant: "t".into(),
                name: String::new(),
                scopes: vec![Scope::Read],
                queues: None,
                created_at_ms: 0,
                revoked_at_ms: None,
            },
            secret_sha256: Sha256::digest(b"s3cret").to_vec(),
        };
        assert!(key.matches("s3cret"));
        assert!(!key.matches("s3cres"));
        assert!(!key.matches(""));
    }

    #[test]
    fn scopes_and_tenants_are_checked() {
        assert_eq!(
            parse_scopes("submit, read,read").unwrap(),
            vec![Scope::Submit, Scope::Read]
        );
        assert!(parse_scopes("").is_err());
        assert!(parse_scopes("read,root").unwrap_err().contains("`root`"));
        assert_eq!(parse_scopes("work").unwrap(), vec![Scope::Work]);
        assert_eq!(
            parse_queues("resize, ocr,resize").unwrap(),
            vec![
                crate::QueueName::new("resize").unwrap(),
                crate::QueueName::new("ocr").unwrap()
            ]
        );
        assert!(parse_queues(" , ").is_err());
        assert!(parse_queues("ok,not a name").is_err());
        assert!(valid_tenant("acme-prod.eu_1"));
        assert!(!valid_tenant(""));
        assert!(!valid_tenant("a b"));
        assert!(!valid_tenant(&"x".repeat(65)));
    }
}
