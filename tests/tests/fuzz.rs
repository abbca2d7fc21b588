//! Property-based fuzzing of the HTTP API from its own OpenAPI document:
//! schemathesis (pinned in `tests/fuzz/requirements.txt`, installed by
//! `scripts/setup fuzz`) generates requests for every operation from
//! `/openapi.json` and checks each answer: no 5xx, a documented status, the
//! documented content type, a body matching the documented schema. It runs
//! against a real API in keys mode with an admin key, and a worker serving
//! every queue (searches are answered). Bounded: `HOPPER_FUZZ_EXAMPLES`
//! (default 25) examples per operation, seed `HOPPER_FUZZ_SEED` (default 1).

use std::process::Command;

use hopper_tests::{TestEnv, workspace};
use serde_json::json;

#[tokio::test]
async fn the_api_survives_schemathesis_with_no_5xx_and_no_schema_violation() {
    let cache = std::env::var_os("HOPPER_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache"));
    let st = cache.join("venv-fuzz/bin/schemathesis");
    assert!(
        st.exists(),
        "schemathesis is missing: run `scripts/setup fuzz`"
    );
    let mut env = TestEnv::new(&[
        ("HOPPER_AUTH", "keys"),
        ("HOPPER_RATE_PER_KEY", "0"),
        ("HOPPER_RATE_GLOBAL", "0"),
    ]);
    let url = env.start_api().await;
    env.start_worker("echo,noop,ingest,embed,summarize,webhook", &[]);
    let key = env.create_key("fuzz", "submit,read,admin").await;

    // Regressions the fuzzer found: NUL characters bound for Postgres.
    env.use_key(Some(&key));
    let (s, b) = env
        .post("/v1/jobs/echo", &json!({"message": "a\u{0}b"}))
        .await;
    assert_eq!((s, b["field"].as_str()), (422, Some("message")), "{b}");
    let (s, b) = env.get("/v1/documents?document_set=a%00b").await;
    assert_eq!((s, b["field"].as_str()), (422, Some("document_set")), "{b}");
    let (s, b) = env
        .post(
            "/v1/search",
            &json!({"query": "x", "filter": {"k": "\u{0}"}}),
        )
        .await;
    assert_eq!((s, b["field"].as_str()), (422, Some("filter.k")), "{b}");

    let examples = std::env::var("HOPPER_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());
    let seed = std::env::var("HOPPER_FUZZ_SEED").unwrap_or_else(|_| "1".into());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .arg("run")
            .arg(format!("{url}/openapi.json"))
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                &examples,
                "--seed",
                &seed,
                "--request-timeout",
                "40",
                "--header",
                &format!("Authorization: Bearer {key}"),
            ])
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}\napi log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.log(0)
    );
    assert!(text.contains("passed"), "{text}");
    // The summary, in the test log.
    for line in text.lines().skip_while(|l| !l.contains("SUMMARY")) {
        eprintln!("{line}");
    }
}
