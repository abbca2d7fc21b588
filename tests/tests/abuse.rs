//! Abuse before authentication, against the real API in keys mode: made-up
//! keys are limited per client address before any Postgres lookup (counted
//! by `hopper_api_key_lookups_total`), valid keys per key; `X-Forwarded-For`
//! counts only from a trusted proxy; and a key revoked on one API replica
//! stops working on every replica within a second.

use std::time::{Duration, Instant};

use hopper_tests::TestEnv;

/// A random well-formed API key that exists nowhere.
fn made_up_key() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    let more = uuid::Uuid::new_v4().simple().to_string();
    format!("hop_{}_{}", &hex[..8], more)
}

/// `GET {api}/v1/queues` with `key` and an optional `X-Forwarded-For`.
async fn queues(env: &TestEnv, api: &str, key: &str, forwarded_for: Option<&str>) -> u16 {
    let mut req = env.http().get(format!("{api}/v1/queues")).bearer_auth(key);
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.expect("request").status().as_u16()
}

async fn lookups(env: &TestEnv) -> f64 {
    env.metric(&env.url("/metrics"), "hopper_api_key_lookups_total")
        .await
}

async fn keyed(extra: &[(&str, &str)]) -> TestEnv {
    let mut overrides = vec![("HOPPER_AUTH", "keys")];
    overrides.extend_from_slice(extra);
    let mut env = TestEnv::new(&overrides);
    env.start_api().await;
    env
}

#[tokio::test]
async fn made_up_keys_are_limited_per_address_before_any_lookup() {
    let env = keyed(&[("HOPPER_RATE_PER_ADDRESS", "5")]).await;
    let api = env.api.clone().unwrap();
    let known = env.create_key("tenant-a", "read").await;
    assert_eq!(queues(&env, &api, &known, None).await, 200);

    let before = lookups(&env).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(queues(&env, &api, &made_up_key(), None).await);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(unauthorized + limited, 60, "{statuses:?}");
    // The burst of 5, plus what 5/s refilled meanwhile.
    let budget = 5.0 + 5.0 * elapsed + 1.0;
    assert!(
        (unauthorized as f64) <= budget && limited > 0,
        "{unauthorized} answered 401 in {elapsed:.2}s, budget {budget:.1}: {statuses:?}"
    );
    let looked_up = lookups(&env).await - before;
    assert_eq!(
        looked_up, unauthorized as f64,
        "one lookup per made-up key inside the budget, none past it"
    );

    // Past the budget a 429 says when to come back, in the API's JSON.
    let res = env
        .http()
        .get(format!("{api}/v1/queues"))
        .bearer_auth(made_up_key())
        .send()
        .await
        .unwrap();
    if res.status() == 429 {
        assert!(res.headers().contains_key("retry-after"));
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "rate_limited", "{body}");
    }
    // No key at all, or a malformed one, is counted the same way.
    for key in ["", "hop_nonsense"] {
        let s = queues(&env, &api, key, None).await;
        assert!(s == 429 || s == 401, "{key:?}: {s}");
    }
    // A key this replica already knows is not refused with the address's
    // budget spent: it is limited by key, not by address.
    assert_eq!(queues(&env, &api, &known, None).await, 200);
    let refused = env
        .metric(
            &env.url("/metrics"),
            "hopper_api_auth_refused_total{outcome=\"rate_limited\"}",
        )
        .await;
    assert!(refused >= limited as f64, "{refused} < {limited}");
}

#[tokio::test]
async fn valid_keys_are_limited_per_key_not_per_address() {
    let env = keyed(&[
        ("HOPPER_RATE_PER_ADDRESS", "5"),
        ("HOPPER_RATE_PER_KEY", "5"),
    ])
    .await;
    let api = env.api.clone().unwrap();
    let a = env.create_key("tenant-a", "read").await;
    let b = env.create_key("tenant-b", "read").await;
    // Known to the replica first (its first lookup is charged to the address).
    assert_eq!(queues(&env, &api, &a, None).await, 200);
    assert_eq!(queues(&env, &api, &b, None).await, 200);

    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(queues(&env, &api, &a, None).await);
    }
    assert!(
        statuses.contains(&429),
        "A is limited by its key: {statuses:?}"
    );
    // Same address, another key: its own budget.
    assert_eq!(queues(&env, &api, &b, None).await, 200);
    // A's requests spent nothing of the address's budget for bad keys.
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(queues(&env, &api, &made_up_key(), None).await, 401);
    }
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    // Untrusted peer: the header is ignored, every request is 127.0.0.1's.
    let env = keyed(&[("HOPPER_RATE_PER_ADDRESS", "3")]).await;
    let api = env.api.clone().unwrap();
    let mut statuses = Vec::new();
    for i in 0..20 {
        let xff = format!("203.0.113.{i}");
        statuses.push(queues(&env, &api, &made_up_key(), Some(&xff)).await);
    }
    assert!(
        statuses.contains(&429),
        "spoofed X-Forwarded-For must not buy fresh budgets: {statuses:?}"
    );

    // Loopback is a trusted proxy: each forwarded client has its own budget.
    let env = keyed(&[
        ("HOPPER_RATE_PER_ADDRESS", "3"),
        ("HOPPER_TRUSTED_PROXIES", "127.0.0.1/32, ::1"),
    ])
    .await;
    let api = env.api.clone().unwrap();
    for i in 0..20 {
        let xff = format!("203.0.113.{i}");
        assert_eq!(
            queues(&env, &api, &made_up_key(), Some(&xff)).await,
            401,
            "client {xff} has a budget of its own"
        );
    }
    // One forwarded client is limited, whatever it puts before the entry
    // the proxy appended.
    let mut statuses = Vec::new();
    for i in 0..20 {
        let xff = format!("198.51.100.{i}, 192.0.2.1");
        statuses.push(queues(&env, &api, &made_up_key(), Some(&xff)).await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// Polls `GET /v1/queues` on `api` with `key` until 401; the time it took.
async fn until_refused(env: &TestEnv, api: &str, key: &str, within: Duration) -> Duration {
    let from = Instant::now();
    loop {
        let s = queues(env, api, key, None).await;
        if s == 401 {
            return from.elapsed();
        }
        assert_eq!(s, 200);
        assert!(
            from.elapsed() < within,
            "{api} still accepts a revoked key after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_every_replica_within_a_second() {
    let mut env = keyed(&[("HOPPER_RATE_PER_KEY", "0")]).await;
    let replica_a = env.api.clone().unwrap();
    let replica_b = env.start_api().await;
    let admin = env.create_key("tenant-a", "read,admin").await;
    let doomed = env.create_key("tenant-a", "read").await;
    let by_cli = env.create_key("tenant-a", "read").await;
    for api in [&replica_a, &replica_b] {
        for key in [&doomed, &by_cli] {
            // Looked up once, then served from each replica's cache.
            for _ in 0..3 {
                assert_eq!(queues(&env, api, key, None).await, 200);
            }
        }
    }

    // Revoked through replica A's API.
    let prefix = &doomed[4..12];
    let res = env
        .http()
        .delete(format!("{replica_a}/v1/keys/{prefix}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        queues(&env, &replica_a, &doomed, None).await,
        401,
        "at once on A"
    );
    let took = until_refused(&env, &replica_b, &doomed, Duration::from_secs(1)).await;
    eprintln!("replica B refused the revoked key after {took:?}");

    // Revoked straight in Postgres (as `hopper keys revoke` does): both.
    let revoked = hopper_shared::keys::revoke(&env.pool(), &by_cli[4..12], None)
        .await
        .unwrap();
    assert!(revoked.is_some());
    for api in [&replica_a, &replica_b] {
        until_refused(&env, api, &by_cli, Duration::from_secs(1)).await;
    }
    // The admin key was never affected.
    assert_eq!(queues(&env, &replica_b, &admin, None).await, 200);
}
