//! Hybrid search (`POST /v1/search` `mode`): keyword search by Postgres
//! full text beside the vector index, fused by reciprocal rank fusion.
//!
//! The relevance test runs the real pipeline and model over a small
//! labelled set made in the repo (`tests/fixtures/hybrid_search.json`):
//! families of near-identical documents told apart only by an exact
//! identifier (error codes, gene symbols, drug names), and documents found
//! by paraphrase. It reports recall@5 of the three modes per kind of query
//! and checks that hybrid finds the identifiers vector search misses while
//! keeping every paraphrase vector search finds. The other tests cover the
//! language of a document set and the refusals.

use std::time::{Duration, Instant};

use hopper_tests::{TestEnv, workspace};
use serde::Deserialize;
use serde_json::{Value, json};

/// Hits per query: recall@K counts a query as found when its relevant
/// document is among the first K hits.
const K: usize = 5;

#[derive(Debug, Deserialize)]
struct Fixture {
    documents: Vec<FixtureDocument>,
    queries: Vec<LabelledQuery>,
}

#[derive(Debug, Deserialize)]
struct FixtureDocument {
    name: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct LabelledQuery {
    query: String,
    /// `identifier` or `paraphrase`.
    kind: String,
    /// The name of the one relevant document.
    relevant: String,
}

fn fixture() -> Fixture {
    let path = workspace().join("tests/fixtures/hybrid_search.json");
    let text = std::fs::read_to_string(&path).expect("read the labelled set");
    serde_json::from_str(&text).expect("the labelled set parses")
}

/// Uploads `text` as a JSON document (no summary: nothing here reads one).
async fn upload(env: &TestEnv, name: &str, text: &str, set: &str, options: Value) -> (u16, Value) {
    let mut options = options;
    options["summarize"] = json!(false);
    env.post(
        "/v1/documents",
        &json!({"name": name, "text": text, "document_set": set, "options": options}),
    )
    .await
}

/// `POST /v1/search` that must answer 200; returns its body.
async fn search(env: &TestEnv, body: Value) -> Value {
    let (s, r) = env.post("/v1/search", &body).await;
    assert_eq!(s, 200, "{body} → {r}");
    r
}

fn names(result: &Value) -> Vec<String> {
    result["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["document_name"].as_str().unwrap().to_owned())
        .collect()
}

/// Recall@K of one mode over the queries of one kind, with each query's
/// rank of its relevant document (None: not in the first K).
struct Recall {
    found: usize,
    of: usize,
    ranks: Vec<(String, Option<usize>)>,
}

impl Recall {
    fn value(&self) -> f64 {
        self.found as f64 / self.of as f64
    }
}

async fn recall(env: &TestEnv, fixture: &Fixture, mode: &str, kind: &str) -> Recall {
    let mut ranks = Vec::new();
    for q in fixture.queries.iter().filter(|q| q.kind == kind) {
        let r = search(
            env,
            json!({"query": q.query, "k": K, "mode": mode, "document_set": "labelled"}),
        )
        .await;
        assert_eq!(r["mode"], mode, "{r}");
        let rank = names(&r).iter().position(|n| *n == q.relevant);
        ranks.push((q.query.clone(), rank.map(|r| r + 1)));
    }
    Recall {
        found: ranks.iter().filter(|(_, r)| r.is_some()).count(),
        of: ranks.len(),
        ranks,
    }
}

#[tokio::test]
async fn hybrid_finds_the_identifiers_vector_search_misses_and_keeps_the_paraphrases() {
    let fixture = fixture();
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let worker = env.start_worker("ingest,embed,summarize", &[]);
    for d in &fixture.documents {
        let (s, r) = upload(&env, &d.name, &d.text, "labelled", json!({})).await;
        assert_eq!(s, 202, "{r}");
    }
    env.wait_for_set("labelled", fixture.documents.len(), &["ready"])
        .await;

    let modes = ["vector", "keyword", "hybrid"];
    let kinds = ["identifier", "paraphrase"];
    let mut table = Vec::new();
    for kind in kinds {
        for mode in modes {
            table.push(((kind, mode), recall(&env, &fixture, mode, kind).await));
        }
    }
    let at = |kind: &str, mode: &str| {
        &table
            .iter()
            .find(|((k, m), _)| *k == kind && *m == mode)
            .expect("measured")
            .1
    };
    eprintln!("recall@{K} on {} labelled queries:", fixture.queries.len());
    eprintln!(
        "{:<12} {:>8} {:>8} {:>8}",
        "queries", "vector", "keyword", "hybrid"
    );
    for kind in kinds {
        let cell = |mode| {
            let r = at(kind, mode);
            format!("{}/{}", r.found, r.of)
        };
        eprintln!(
            "{kind:<12} {:>8} {:>8} {:>8}",
            cell("vector"),
            cell("keyword"),
            cell("hybrid")
        );
    }
    for ((kind, mode), r) in &table {
        eprintln!(
            "  {kind} {mode} recall@{K} = {:.2}: {:?}",
            r.value(),
            r.ranks
        );
    }

    // The set is worth something only if each kind needs its own method:
    // keyword search finds every identifier and vector search misses some;
    // vector search finds paraphrases keyword search cannot.
    assert_eq!(
        at("identifier", "keyword").value(),
        1.0,
        "keyword search finds identifiers"
    );
    assert!(
        at("identifier", "vector").found < at("identifier", "vector").of,
        "vector search misses some identifiers"
    );
    assert!(
        at("paraphrase", "vector").found > at("paraphrase", "keyword").found,
        "vector search finds paraphrases keyword search misses"
    );
    // Hybrid finds the identifier queries vector search misses…
    assert!(
        at("identifier", "hybrid").found > at("identifier", "vector").found,
        "hybrid beats vector on identifiers"
    );
    assert_eq!(
        at("identifier", "hybrid").value(),
        1.0,
        "hybrid finds every identifier"
    );
    // …and keeps the paraphrase hits: every one vector search finds.
    for ((query, vector_rank), (_, hybrid_rank)) in at("paraphrase", "vector")
        .ranks
        .iter()
        .zip(&at("paraphrase", "hybrid").ranks)
    {
        assert!(
            vector_rank.is_none() || hybrid_rank.is_some(),
            "hybrid lost the paraphrase hit of {query:?}"
        );
    }
    assert!(
        at("paraphrase", "hybrid").value() >= 5.0 / 6.0,
        "hybrid finds at least 5 of the 6 paraphrases"
    );

    // Hybrid hits say where each list ranked them; the fused score is
    // Σ 1 / (60 + rank) with the default weights.
    let r = search(
        &env,
        json!({"query": "ERR_CONN_RESET_0x3B", "k": K, "mode": "hybrid", "document_set": "labelled"}),
    )
    .await;
    let top = &r["hits"][0];
    assert_eq!(top["document_name"], "billing-release-notes", "{r}");
    assert_eq!(top["keyword_rank"], 1, "{r}");
    // Vector search alone ranks it past the first K: the keyword list lifts it.
    assert!(
        top["vector_rank"]
            .as_u64()
            .is_none_or(|rank| rank > K as u64),
        "{r}"
    );
    let rank = |field: &str| top[field].as_f64().map_or(0.0, |rank| 1.0 / (60.0 + rank));
    let expected = rank("vector_rank") + rank("keyword_rank");
    assert!(
        (top["score"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{r}"
    );
    assert!(
        r["model"]
            .as_str()
            .unwrap()
            .starts_with("all-MiniLM-L6-v2@"),
        "{r}"
    );
    // Weights move the fusion: with the keyword list weighed 0, the order is
    // the vector list's.
    let weighed = search(
        &env,
        json!({"query": "PALB2", "k": K, "mode": "hybrid", "document_set": "labelled",
               "weights": {"vector": 1, "keyword": 0}}),
    )
    .await;
    let vector = search(
        &env,
        json!({"query": "PALB2", "k": K, "mode": "vector", "document_set": "labelled"}),
    )
    .await;
    assert_eq!(names(&weighed), names(&vector), "{weighed}\n{vector}");

    // A keyword query of stop words only matches nothing — while the same
    // words inside a real query still find their document.
    let r = search(&env, json!({"query": "the of and", "mode": "keyword"})).await;
    assert_eq!(r["hits"], json!([]), "{r}");
    // So does a query that only excludes: it would rank every other chunk.
    let r = search(&env, json!({"query": "-giraffes", "mode": "keyword"})).await;
    assert_eq!(r["hits"], json!([]), "{r}");
    let r = search(
        &env,
        json!({"query": "the cipher suite", "mode": "keyword"}),
    )
    .await;
    assert_eq!(names(&r)[0], "err-tls-handshake-0x7f", "{r}");

    // The CLI asks for a mode.
    let out = env.cli(&[
        "--json",
        "search",
        "--mode",
        "keyword",
        "-k",
        "1",
        "--document-set",
        "labelled",
        "imatinib mesylate",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON out");
    assert_eq!(
        (r["mode"].as_str(), names(&r)),
        (Some("keyword"), vec!["discharge-summary".to_owned()])
    );

    // Keyword search queues no embed job: with no worker left, it still
    // answers, at once (a vector search would wait 30 s for its vector).
    env.kill(worker);
    let started = Instant::now();
    let r = search(
        &env,
        json!({"query": "RAD51C", "mode": "keyword", "document_set": "labelled"}),
    )
    .await;
    assert_eq!(names(&r)[0], "clinic-letter", "{r}");
    assert_eq!(
        (r["model"].clone(), r["embed_ms"].as_f64()),
        (Value::Null, Some(0.0)),
        "{r}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn keyword_search_reads_each_set_in_its_language_within_its_tenant_and_refuses_bad_input() {
    let mut env = TestEnv::new(&[("HOPPER_AUTH", "keys")]);
    env.start_api().await;
    let key = env.create_key("acme", "submit,read").await;
    env.use_key(Some(&key));
    // Keyword search needs stored chunks, not vectors: an ingest worker
    // alone makes these documents searchable by keyword.
    env.start_worker("ingest", &[]);
    let cats = "Die Katzen schlafen den ganzen Tag auf dem warmen Dach.";
    let (s, r) = upload(
        &env,
        "katzen",
        cats,
        "deutsch",
        json!({"language": "german"}),
    )
    .await;
    assert_eq!(s, 202, "{r}");
    let german = r["document_id"].as_str().unwrap().to_owned();
    // The same words in an English set are indexed by English rules.
    let (s, r) = upload(&env, "katzen-en", cats, "english", json!({})).await;
    assert_eq!(s, 202, "{r}");
    // A set holds one language: a later upload takes it, another is refused.
    let (s, r) = upload(&env, "dach", "Das Dach ist warm.", "deutsch", json!({})).await;
    assert_eq!(s, 202, "{r}");
    let inherited = r["document_id"].as_str().unwrap().to_owned();
    let (s, r) = upload(
        &env,
        "roof",
        "The roof is warm.",
        "deutsch",
        json!({"language": "english"}),
    )
    .await;
    assert_eq!((s, r["error"].as_str()), (422, Some("invalid")), "{r}");
    assert_eq!(r["field"], "options.language", "{r}");
    assert!(r["detail"].as_str().unwrap().contains("german"), "{r}");
    let (s, r) = upload(&env, "x", "x", "other", json!({"language": "klingon"})).await;
    assert_eq!(
        (s, r["field"].as_str()),
        (422, Some("options.language")),
        "{r}"
    );
    for (id, language) in [(&german, "german"), (&inherited, "german")] {
        let (_, doc) = env.get(&format!("/v1/documents/{id}")).await;
        assert_eq!(doc["language"], language, "{doc}");
    }
    env.wait_for_set("deutsch", 2, &["embedding"]).await;
    env.wait_for_set("english", 1, &["embedding"]).await;

    // "Katze" stems like "Katzen" in German only: the German document is
    // found, the English one is not (its "katzen" stays "katzen").
    let r = search(&env, json!({"query": "Katze", "mode": "keyword"})).await;
    assert_eq!(names(&r), ["katzen"], "{r}");
    let r = search(
        &env,
        json!({"query": "Katzen", "mode": "keyword", "document_set": "english"}),
    )
    .await;
    assert_eq!(names(&r), ["katzen-en"], "{r}");
    // German stop words are German: "den" alone finds nothing in German.
    let r = search(
        &env,
        json!({"query": "den", "mode": "keyword", "document_set": "deutsch"}),
    )
    .await;
    assert_eq!(r["hits"], json!([]), "{r}");
    // Another tenant's keyword search sees none of it.
    let other = env.create_key("globex", "read").await;
    env.use_key(Some(&other));
    let r = search(&env, json!({"query": "Katze", "mode": "keyword"})).await;
    assert_eq!(r["hits"], json!([]), "{r}");
    env.use_key(Some(&key));

    // Refusals name their field.
    for (body, field) in [
        (json!({"query": "x", "mode": "fuzzy"}), "mode"),
        (json!({"query": "x", "mode": 1}), "mode"),
        (json!({"query": "x", "k": 101, "mode": "keyword"}), "k"),
        (json!({"query": "x", "k": 0}), "k"),
        (
            json!({"query": "x", "mode": "hybrid", "weights": {"vector": -1}}),
            "weights.vector",
        ),
        (
            json!({"query": "x", "mode": "hybrid", "weights": {"keyword": 1e9}}),
            "weights.keyword",
        ),
        (
            json!({"query": "x", "mode": "hybrid", "weights": {"vector": 0, "keyword": 0}}),
            "weights",
        ),
        (
            json!({"query": "x", "mode": "hybrid", "weights": {"bm25": 1}}),
            "weights",
        ),
        (json!({"query": "a\u{0}b", "mode": "keyword"}), "query"),
    ] {
        let (s, r) = env.post("/v1/search", &body).await;
        assert_eq!((s, r["field"].as_str()), (422, Some(field)), "{body} → {r}");
    }
}
