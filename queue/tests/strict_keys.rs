//! The enforcement of the key rule (every key a queue script touches is
//! declared in KEYS) proves itself here: scripts of this test's own, wrapped
//! the way `HOPPER_LUA_STRICT_KEYS=1` wraps every queue script
//! ([`hopper_queue::strict_keys_script`]), run on the real Redis at
//! `REDIS_URL` (single server or cluster: every key shares one hash tag).
//! The queue's own scripts are held to it by running the whole suite with
//! the variable set (`scripts/test` does).

mod support;

use support::TestQueue;

/// Runs `body` in strict mode as script `name` with `keys`; the error's
/// text when Redis refused it.
async fn run_strict(
    queue: &TestQueue,
    name: &str,
    body: &str,
    keys: &[&str],
) -> Result<redis::Value, String> {
    let redis = hopper_queue::Redis::open(&queue.redis_url, &queue.redis_tls).unwrap();
    let mut conn = redis.shared().await.unwrap();
    let script = hopper_queue::strict_keys_script(name, body);
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(*k);
    }
    inv.invoke_async(&mut conn).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn declared_keys_pass_and_the_script_runs_as_written() {
    let queue = TestQueue::new();
    let (a, b) = (queue.foreign_key("a"), queue.foreign_key("b"));
    let body = "redis.call('SET', KEYS[1], 'x')\n\
                redis.call('HSET', KEYS[2], 'f', 'v')\n\
                redis.call('TIME')\n\
                return {redis.call('EXISTS', KEYS[1], KEYS[2]), redis.call('DEL', KEYS[1], KEYS[2])}";
    let reply = run_strict(&queue, "declared", body, &[&a, &b]).await;
    let reply: Vec<i64> = redis::from_redis_value(reply.expect("declared keys pass")).unwrap();
    assert_eq!(reply, vec![2, 2]);
}

#[tokio::test]
async fn an_undeclared_key_is_refused_before_it_is_touched() {
    let queue = TestQueue::new();
    let (a, hidden) = (queue.foreign_key("a"), queue.foreign_key("hidden"));
    // Built inside Lua from a declared key, as the rule forbids.
    let body = "redis.call('SET', KEYS[1], 'x')\n\
                return redis.call('SET', KEYS[1] .. ':hidden', 'y')";
    let a_hidden = format!("{a}:hidden");
    let err = run_strict(&queue, "builder", body, &[&a, &hidden])
        .await
        .expect_err("an undeclared key is refused");
    assert!(
        err.contains(&format!("undeclared key {a_hidden} in builder")),
        "{err}"
    );
    let redis = hopper_queue::Redis::open(&queue.redis_url, &queue.redis_tls).unwrap();
    let mut conn = redis.shared().await.unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&a_hidden)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the refused command did not run");
}

#[tokio::test]
async fn every_key_of_a_many_key_command_is_checked() {
    let queue = TestQueue::new();
    let (a, b) = (queue.foreign_key("a"), queue.foreign_key("b"));
    let err = run_strict(
        &queue,
        "many",
        "return redis.call('DEL', KEYS[1], KEYS[1] .. 'x')",
        &[&a, &b],
    )
    .await
    .expect_err("the second key of DEL is undeclared");
    assert!(
        err.contains(&format!("undeclared key {a}x in many")),
        "{err}"
    );
    // redis.pcall is held to the same rule.
    let err = run_strict(
        &queue,
        "protected",
        "return redis.pcall('RPOPLPUSH', KEYS[1], KEYS[1] .. 'y')",
        &[&a, &b],
    )
    .await
    .expect_err("pcall is checked too");
    assert!(
        err.contains(&format!("undeclared key {a}y in protected")),
        "{err}"
    );
}

#[tokio::test]
async fn a_command_the_checker_does_not_know_is_refused() {
    let queue = TestQueue::new();
    let a = queue.foreign_key("a");
    let err = run_strict(
        &queue,
        "unknown",
        "return redis.call('OBJECT', 'ENCODING', KEYS[1])",
        &[&a],
    )
    .await
    .expect_err("an unclassified command is refused");
    assert!(
        err.contains("unclassified command OBJECT in unknown"),
        "{err}"
    );
}

/// `HOPPER_LUA_STRICT_KEYS=1` changes the scripts' text (so the run that
/// sets it holds them to the rule), and without it every script is exactly
/// its files: the same SHA as always.
#[test]
fn the_variable_switches_strict_mode_and_plain_scripts_keep_their_sha() {
    let strict = std::env::var("HOPPER_LUA_STRICT_KEYS").is_ok_and(|v| v == "1");
    let hash = |name: &str| {
        hopper_queue::script_hashes()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| h)
            .unwrap()
    };
    let prelude = include_str!("../lua/prelude.lua");
    let plain = |file: &str| {
        redis::Script::new(&[prelude, file].concat())
            .get_hash()
            .to_owned()
    };
    for (name, file) in [
        ("ack", include_str!("../lua/ack.lua")),
        ("claim", include_str!("../lua/claim.lua")),
        ("claim_start", include_str!("../lua/claim_start.lua")),
        ("stats", include_str!("../lua/stats.lua")),
    ] {
        assert_eq!(hash(name) != plain(file), strict, "{name}");
    }
}
