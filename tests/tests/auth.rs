//! API keys and tenants, against the real API in keys mode: no key or a bad
//! one is refused, scopes are enforced, and nothing of tenant B is readable,
//! listable, searchable, cancellable, retryable or purgeable with tenant A's
//! key (a test per route group). Also the rate limits, the cap on requests
//! in flight, CORS and the security headers.

use std::time::Duration;

use hopper_tests::TestEnv;
use serde_json::{Value, json};

/// An API in keys mode with an echo worker, and three keys: A (every
/// scope), A-read (read only) and B (every scope, another tenant).
async fn keyed(extra: &[(&str, &str)], worker_queues: &str) -> (TestEnv, String, String, String) {
    let mut overrides = vec![("HOPPER_AUTH", "keys")];
    overrides.extend_from_slice(extra);
    let mut env = TestEnv::new(&overrides);
    env.start_api().await;
    env.start_worker(worker_queues, &[]);
    let a = env.create_key("tenant-a", "submit,read,admin").await;
    let a_read = env.create_key("tenant-a", "read").await;
    let b = env.create_key("tenant-b", "submit,read,admin").await;
    (env, a, a_read, b)
}

/// `GET /v1/queues` with `key` and extra headers, as the raw response.
async fn queues_as(env: &TestEnv, key: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = env.http().get(env.url("/v1/queues")).bearer_auth(key);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.expect("request")
}

async fn submit_echo(env: &mut TestEnv, key: &str, body: Value, query: &str) -> String {
    env.use_key(Some(key));
    let (s, b) = env.post(&format!("/v1/jobs/echo{query}"), &body).await;
    assert_eq!(s, 202, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {list}"))
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn requests_need_a_valid_key_and_the_right_scope() {
    let (mut env, a, a_read, _) = keyed(&[], "echo").await;

    // No key, a malformed one, a wrong secret: 401 with a Bearer challenge.
    let forged = format!("{}{}", &a[..14], "0".repeat(32));
    for header in [None, Some("Bearer nonsense"), Some(forged.as_str())] {
        let mut req = env.http().get(env.url("/v1/queues"));
        if let Some(h) = header {
            req = req.header(
                "authorization",
                h.strip_prefix("Bearer ")
                    .map_or(h.to_owned(), |k| format!("Bearer {k}")),
            );
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{header:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    // Health, metrics and the dashboard page need no key.
    for path in ["/health/live", "/health/ready", "/metrics", "/dashboard"] {
        let res = env.http().get(env.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }

    // A read-only key reads but cannot submit, purge or see workers.
    env.use_key(Some(&a_read));
    assert_eq!(env.get("/v1/queues").await.0, 200);
    let (s, b) = env.post("/v1/jobs/echo", &json!({"message": "x"})).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("forbidden")), "{b}");
    assert!(b["detail"].as_str().unwrap().contains("`submit`"), "{b}");
    let (s, _) = env
        .post("/v1/queues/echo/dead/purge", &json!({"all": true}))
        .await;
    assert_eq!(s, 403);

    // A revoked key stops working at once (revoked through the API).
    env.use_key(Some(&a));
    let prefix = a_read[4..12].to_owned();
    let (s, b) = env.delete(&format!("/v1/keys/{prefix}")).await;
    assert_eq!(s, 200, "{b}");
    env.use_key(Some(&a_read));
    assert_eq!(env.get("/v1/queues").await.0, 401);
}

#[tokio::test]
async fn jobs_of_one_tenant_are_invisible_to_another() {
    let (mut env, a, _, b) = keyed(&[], "echo").await;
    let id = submit_echo(&mut env, &a, json!({"message": "a's"}), "").await;
    env.use_key(Some(&a));
    let job = env.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["tenant"], "tenant-a");
    let waiting = submit_echo(
        &mut env,
        &a,
        json!({"message": "later"}),
        "?delay_ms=600000",
    )
    .await;

    env.use_key(Some(&b));
    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{waiting}")] {
        let (s, body) = env.get(&path).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert!(!body.to_string().contains("a's"), "{body}");
    }
    let (s, _) = env
        .post(&format!("/v1/jobs/{waiting}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 404, "B cannot cancel A's job");
    let (_, list) = env.get("/v1/jobs").await;
    assert!(ids(&list, "jobs").is_empty(), "{list}");
    let (_, list) = env.get("/v1/jobs?state=succeeded").await;
    assert!(ids(&list, "jobs").is_empty(), "{list}");
    // Workers list only the caller's running jobs.
    let slow = submit_echo(
        &mut env,
        &a,
        json!({"message": "slow", "sleep_ms": 3000}),
        "",
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        env.use_key(Some(&a));
        let (_, w) = env.get("/v1/workers").await;
        if w.to_string().contains(&slow) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A never saw its job running: {w}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.use_key(Some(&b));
    let (s, w) = env.get("/v1/workers").await;
    assert_eq!(s, 200);
    assert!(
        !w.to_string().contains(&slow),
        "B sees A's running job: {w}"
    );

    // The same idempotency key in two tenants makes two jobs.
    let mut ids_by_tenant = Vec::new();
    for key in [&a, &b] {
        env.use_key(Some(key));
        let (s, body) = env
            .request(
                env.http()
                    .post(env.url("/v1/jobs/echo"))
                    .header("idempotency-key", "same")
                    .json(&json!({"message": "idem"})),
            )
            .await;
        assert_eq!(s, 202, "{body}");
        ids_by_tenant.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_ne!(ids_by_tenant[0], ids_by_tenant[1]);

    // A still sees and controls its own.
    env.use_key(Some(&a));
    let (_, list) = env.get("/v1/jobs").await;
    let mine = ids(&list, "jobs");
    assert!(mine.contains(&id) && mine.contains(&waiting), "{list}");
    assert!(!mine.contains(&ids_by_tenant[1]), "{list}");
    let (s, body) = env
        .post(&format!("/v1/jobs/{waiting}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (s, body["state"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
}

#[tokio::test]
async fn dead_letters_are_per_tenant() {
    let (mut env, a, _, b) = keyed(&[], "echo").await;
    let dead = submit_echo(
        &mut env,
        &a,
        json!({"message": "poison", "fail": "boom"}),
        "?max_attempts=1",
    )
    .await;
    env.use_key(Some(&a));
    assert_eq!(
        env.wait_final(&dead, Duration::from_secs(20)).await["state"],
        "dead"
    );

    env.use_key(Some(&b));
    let (s, page) = env.get("/v1/queues/echo/dead").await;
    assert_eq!((s, page["total"].as_u64()), (200, Some(0)), "{page}");
    for (action, body) in [
        ("retry", json!({"ids": [dead]})),
        ("purge", json!({"ids": [dead]})),
        ("retry", json!({"all": true})),
        ("purge", json!({"all": true})),
    ] {
        let (s, r) = env
            .post(&format!("/v1/queues/echo/dead/{action}"), &body)
            .await;
        assert_eq!(
            (s, r["count"].as_u64()),
            (200, Some(0)),
            "{action} {body}: {r}"
        );
    }

    env.use_key(Some(&a));
    let (_, page) = env.get("/v1/queues/echo/dead").await;
    assert_eq!(
        ids(&page, "jobs"),
        vec![dead.clone()],
        "A's dead letter is untouched"
    );
    let (_, r) = env
        .post("/v1/queues/echo/dead/purge", &json!({"all": true}))
        .await;
    assert_eq!(r["count"], 1, "{r}");
}

#[tokio::test]
async fn documents_and_search_are_per_tenant() {
    let (mut env, a, _, b) = keyed(&[], "ingest,embed,summarize").await;
    env.use_key(Some(&a));
    let (s, up) = env
        .post(
            "/v1/documents",
            &json!({"name": "a.txt", "text": "Tenant A keeps its zebra migration notes here. Zebras cross the river in July."}),
        )
        .await;
    assert_eq!(s, 202, "{up}");
    let doc = up["document_id"].as_str().unwrap().to_owned();

    env.use_key(Some(&b));
    assert_eq!(env.get(&format!("/v1/documents/{doc}")).await.0, 404);
    assert_eq!(env.get(&format!("/v1/documents/{doc}/events")).await.0, 404);
    assert_eq!(env.delete(&format!("/v1/documents/{doc}")).await.0, 404);
    let (_, list) = env.get("/v1/documents").await;
    assert_eq!(list["total"], 0, "{list}");

    // Once A's document is ready, A finds it and B does not.
    env.use_key(Some(&a));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, d) = env.get(&format!("/v1/documents/{doc}")).await;
        if d["status"] == "ready" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ready: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let query = json!({"query": "when do zebras cross the river", "k": 5});
    let (s, hits) = env.post("/v1/search", &query).await;
    assert_eq!(s, 200, "{hits}");
    assert_eq!(hits["hits"][0]["document_id"], doc.as_str(), "{hits}");
    env.use_key(Some(&b));
    let (s, hits) = env.post("/v1/search", &query).await;
    assert_eq!(s, 200, "{hits}");
    assert_eq!(hits["hits"], json!([]), "{hits}");
    // B's search job is B's: A cannot see it.
    let (_, mine) = env.get("/v1/jobs?queue=embed").await;
    let b_jobs = ids(&mine, "jobs");
    assert!(!b_jobs.is_empty(), "{mine}");
    env.use_key(Some(&a));
    for id in b_jobs {
        assert_eq!(env.get(&format!("/v1/jobs/{id}")).await.0, 404);
    }
}

#[tokio::test]
async fn keys_are_managed_per_tenant_by_admins() {
    let (mut env, a, a_read, b) = keyed(&[], "echo").await;
    env.use_key(Some(&a));
    let (s, made) = env
        .post("/v1/keys", &json!({"name": "ci", "scopes": ["submit"]}))
        .await;
    assert_eq!(s, 201, "{made}");
    let new_key = made["key"].as_str().unwrap().to_owned();
    assert_eq!(made["info"]["tenant"], "tenant-a");
    let (_, list) = env.get("/v1/keys").await;
    let listed = list.to_string();
    assert!(
        listed.contains("\"ci\"") && !listed.contains(&new_key[13..]),
        "no secrets: {list}"
    );
    assert!(!listed.contains("tenant-b"), "{list}");

    env.use_key(Some(&new_key));
    let (s, _) = env.post("/v1/jobs/echo", &json!({"message": "ci"})).await;
    assert_eq!(s, 202);

    env.use_key(Some(&b));
    let prefix = &new_key[4..12];
    assert_eq!(
        env.delete(&format!("/v1/keys/{prefix}")).await.0,
        404,
        "B cannot revoke A's key"
    );
    let (_, list) = env.get("/v1/keys").await;
    assert!(!list.to_string().contains(prefix), "{list}");
    env.use_key(Some(&a_read));
    assert_eq!(env.get("/v1/keys").await.0, 403);
    let (s, b) = env.post("/v1/keys", &json!({"scopes": ["root"]})).await;
    assert_eq!(s, 403, "{b}");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_key() {
    let (env, a, _, b) = keyed(&[("HOPPER_RATE_PER_KEY", "5")], "echo").await;
    let mut limited = None;
    for _ in 0..30 {
        let res = queues_as(&env, &a, &[]).await;
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
    }
    let res = limited.expect("a burst over 5/s is limited");
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    // Another key has its own budget.
    let res = queues_as(&env, &b, &[]).await;
    assert_eq!(res.status(), 200);
    // Health is never rate-limited.
    for _ in 0..20 {
        let res = env
            .http()
            .get(env.url("/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_are_shed_with_503() {
    // No embed worker: a search holds its request until its 30 s wait ends.
    let (env, a, _, _) = keyed(&[("HOPPER_MAX_CONCURRENT_REQUESTS", "1")], "echo").await;
    let slow = {
        let req = env
            .http()
            .post(env.url("/v1/search"))
            .bearer_auth(&a)
            .json(&json!({"query": "held"}));
        tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = queues_as(&env, &a, &[]).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");
    slow.abort();
}

#[tokio::test]
async fn cors_and_security_headers() {
    let (env, a, _, _) = keyed(
        &[("HOPPER_CORS_ORIGINS", "https://app.example.com")],
        "echo",
    )
    .await;
    let res = queues_as(&env, &a, &[("origin", "https://app.example.com")]).await;
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h.get("server").is_none(), "no server header");
    assert!(h.get("x-request-id").is_some());

    let preflight = env
        .http()
        .request(reqwest::Method::OPTIONS, env.url("/v1/jobs/echo"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");

    let res = queues_as(&env, &a, &[("origin", "https://evil.example")]).await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_tenant_over_its_cap_of_unfinished_jobs_gets_429() {
    // The cap counts a tenant's unfinished jobs in each queue.
    let (mut env, a, _, b) = keyed(&[("HOPPER_MAX_PENDING_PER_TENANT", "3")], "echo").await;
    env.use_key(Some(&a));
    // Three noop jobs wait (no noop worker): the noop cap is reached.
    let waiting = env
        .submit_batch("noop", &[json!({}), json!({}), json!({})])
        .await;
    let res = env
        .http()
        .post(env.url("/v1/jobs/noop"))
        .bearer_auth(&a)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "5");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "tenant_queue_full", "{body}");
    let (s, _) = env.post("/v1/jobs/noop/batch", &json!([{}])).await;
    assert_eq!(s, 429, "a batch is refused whole");
    let (_, q) = env.queue("noop").await;
    assert_eq!(
        q["pending"], 3,
        "nothing of the refused submissions was queued: {q}"
    );

    // Another tenant, or another queue, is not affected.
    env.use_key(Some(&b));
    let (s, _) = env.post("/v1/jobs/noop", &json!({})).await;
    assert_eq!(s, 202);
    env.use_key(Some(&a));
    let fits = submit_echo(&mut env, &a, json!({"message": "fits"}), "").await;

    // A cancelled job frees its slot.
    let (s, _) = env
        .post(&format!("/v1/jobs/{}/cancel", waiting[0]), &json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = env.post("/v1/jobs/noop", &json!({})).await;
    assert_eq!(s, 202, "room again after a cancel");

    // Succeeded and dead jobs free theirs: after one of each, three more
    // unfinished echo jobs fit, a fourth does not.
    assert_eq!(
        env.wait_final(&fits, Duration::from_secs(20)).await["state"],
        "succeeded"
    );
    let dead = submit_echo(
        &mut env,
        &a,
        json!({"message": "x", "fail": "no"}),
        "?max_attempts=1",
    )
    .await;
    assert_eq!(
        env.wait_final(&dead, Duration::from_secs(20)).await["state"],
        "dead"
    );
    for _ in 0..3 {
        submit_echo(
            &mut env,
            &a,
            json!({"message": "later"}),
            "?delay_ms=600000",
        )
        .await;
    }
    let (s, b) = env
        .post("/v1/jobs/echo?delay_ms=600000", &json!({"message": "over"}))
        .await;
    assert_eq!(s, 429, "{b}");
}

#[tokio::test]
async fn high_priority_jobs_and_search_queries_have_a_cap_of_their_own_per_tenant() {
    let (mut env, a, _, b) = keyed(&[("HOPPER_MAX_HIGH_PRIORITY_PER_TENANT", "2")], "echo").await;
    env.use_key(Some(&a));
    // No noop or embed worker runs: these stay unfinished.
    for _ in 0..2 {
        let (s, body) = env.post("/v1/jobs/noop?priority=high", &json!({})).await;
        assert_eq!(s, 202, "{body}");
    }
    let (s, body) = env.post("/v1/jobs/noop?priority=high", &json!({})).await;
    assert_eq!(s, 429, "{body}");
    assert_eq!(body["error"], "tenant_high_priority_full", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("HOPPER_MAX_HIGH_PRIORITY_PER_TENANT"),
        "{body}"
    );
    let (s, _) = env
        .post("/v1/jobs/noop/batch?priority=high", &json!([{}]))
        .await;
    assert_eq!(s, 429, "a high-priority batch counts too");
    let (s, _) = env.post("/v1/jobs/noop", &json!({})).await;
    assert_eq!(s, 202, "normal priority is not affected");
    env.use_key(Some(&b));
    let (s, _) = env.post("/v1/jobs/noop?priority=high", &json!({})).await;
    assert_eq!(s, 202, "another tenant is not affected");

    // A search query is a high-priority embed job of its tenant.
    env.use_key(Some(&a));
    for _ in 0..2 {
        let (s, body) = env
            .post("/v1/jobs/embed?priority=high", &json!({"texts": ["x"]}))
            .await;
        assert_eq!(s, 202, "{body}");
    }
    let (s, body) = env
        .post("/v1/search", &json!({"query": "anything", "k": 3}))
        .await;
    assert_eq!(s, 429, "{body}");
    assert_eq!(body["error"], "tenant_high_priority_full", "{body}");
    let (_, embed) = env.queue("embed").await;
    assert_eq!(
        embed["pending"], 2,
        "the refused query queued nothing: {embed}"
    );
}
