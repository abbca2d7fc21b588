//! Parses envelopes the pinned celery 5.7 / kombu 5.7 really wrote to Redis
//! (`tests/fixtures/*.json`, made by `tests/fixtures/make_fixtures.py`; its
//! `manifest.json` says which list each landed on), so the parser is checked
//! against the producer, not against our reading of its sources.

use std::path::PathBuf;
use std::time::Duration;

use hopper_celery::config::CeleryConfig;
use hopper_celery::envelope::{CeleryMessage, Refusal, RefusalReason, parse};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn raw(file: &str) -> String {
    std::fs::read_to_string(fixtures().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The task id kombu put in the envelope's properties (read independently of
/// the parser).
fn correlation_id(file: &str) -> String {
    let envelope: Value = serde_json::from_str(&raw(file)).unwrap();
    envelope["properties"]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn accepted(file: &str) -> CeleryMessage {
    let message = parse(&raw(file)).unwrap_or_else(|r| panic!("{file} refused: {r}"));
    assert_eq!(message.id, correlation_id(file), "{file}");
    message
}

fn refused(file: &str, reason: RefusalReason) -> Refusal {
    let refusal = parse(&raw(file)).expect_err(file);
    assert_eq!(refusal.reason, reason, "{file}: {refusal}");
    refusal
}

#[test]
fn send_task_and_delay() {
    let m = accepted("send_task.json");
    assert_eq!(m.task, "tasks.add");
    assert_eq!(m.args, [json!(2), json!(3)]);
    assert!(m.kwargs.is_empty());
    assert_eq!((m.eta, m.expires), (None, None));
    assert_eq!((m.hard_time_limit, m.soft_time_limit), (None, None));
    assert!(!m.ignore_result);
    assert_eq!((m.priority, m.retries), (0, 0));
    assert_eq!(m.routing_key.as_deref(), Some("celery"));
    assert_eq!(m.root_id.as_deref(), Some(m.id.as_str()));
    assert_eq!((m.parent_id.as_deref(), m.group.as_deref()), (None, None));
    assert!(m.origin.as_deref().unwrap().contains('@'));

    let m = accepted("delay.json");
    assert_eq!(m.args, [json!(4)]);
    assert_eq!(Value::Object(m.kwargs), json!({"y": 5}));

    let m = accepted("unicode.json");
    assert_eq!(m.task, "tasks.echo");
    assert_eq!(m.args, [json!("héllo ✓")]);
    assert_eq!(Value::Object(m.kwargs), json!({"clé": "日本"}));
}

#[test]
fn apply_async_options() {
    // countdown=5, priority=9, expires=60, time_limit=30, soft_time_limit=20, ignore_result=True
    let m = accepted("options.json");
    assert!(m.ignore_result);
    assert_eq!(m.priority, 9);
    assert_eq!(m.hard_time_limit, Some(Duration::from_secs(30)));
    assert_eq!(m.soft_time_limit, Some(Duration::from_secs(20)));
    let (eta, expires) = (m.eta.unwrap(), m.expires.unwrap());
    let gap = expires - eta;
    assert!(
        (gap.whole_milliseconds() - 55_000).abs() < 1_000,
        "expires 60 s and countdown 5 s after sending: {gap}"
    );

    assert_eq!(accepted("priority3.json").priority, 4);
    let m = accepted("priority6.json");
    assert_eq!(m.priority, 6);
    assert_eq!(m.routing_key.as_deref(), Some("other"));

    let m = accepted("eta_datetime.json");
    let eta = m.eta.unwrap();
    assert_eq!(eta.unix_timestamp(), 1_893_553_445);
    assert_eq!(eta.microsecond(), 678_901);
    assert_eq!((m.expires.unwrap() - eta).whole_seconds(), 3600);
    assert_eq!(m.hard_time_limit, None);
    assert_eq!(m.soft_time_limit, Some(Duration::from_millis(2500)));
}

#[test]
fn canvas_is_refused_naming_the_message() {
    for (file, field) in [
        ("chain.json", "chain"),
        ("link.json", "callbacks"),
        ("link_error.json", "errbacks"),
        ("chord.json", "chord"),
        ("chord.1.json", "chord"),
    ] {
        let r = refused(file, RefusalReason::Canvas);
        assert!(r.detail.contains(field), "{file}: {}", r.detail);
        assert_eq!(r.id.as_deref(), Some(correlation_id(file).as_str()));
        assert_eq!(r.task.as_deref(), Some("tasks.add"));
        assert!(!r.ignore_result);
    }
}

#[test]
fn group_members_run_alone() {
    let (first, second) = (accepted("group.json"), accepted("group.1.json"));
    assert!(first.group.is_some());
    assert_eq!(first.group, second.group);
    assert_eq!(first.args, [json!(1), json!(1)]);
    assert_eq!(second.args, [json!(2), json!(2)]);
}

#[test]
fn pickle_is_refused_with_the_fix() {
    let r = refused("pickle.json", RefusalReason::ContentType);
    assert_eq!(
        r.detail,
        "content type application/x-python-serialize (pickle) is not supported: \
         set task_serializer='json'"
    );
    // Protocol 2 headers are readable: the producer can still be told.
    assert_eq!(
        r.id.as_deref(),
        Some(correlation_id("pickle.json").as_str())
    );
    assert_eq!(r.task.as_deref(), Some("tasks.add"));
}

#[test]
fn protocol_1() {
    let m = accepted("protocol1.json");
    assert_eq!(m.task, "tasks.add");
    assert_eq!(m.args, [json!(2)]);
    assert_eq!(Value::Object(m.kwargs), json!({"y": 3}));
    assert_eq!(m.hard_time_limit, Some(Duration::from_secs(30)));
    assert_eq!(m.soft_time_limit, Some(Duration::from_secs(20)));
    let gap = m.expires.unwrap() - m.eta.unwrap();
    assert!((gap.whole_milliseconds() - 55_000).abs() < 1_000, "{gap}");
    assert!(!m.ignore_result);
    assert_eq!(m.routing_key.as_deref(), Some("celery"));
}

/// kombu's list for each message is the sub-list `CeleryConfig::sublists`
/// names for its priority step (0→0, 1-3→3… as kombu's `bisect` does).
#[test]
fn sublists_match_kombu() {
    let manifest: Value = serde_json::from_str(&raw("manifest.json")).unwrap();
    let config = CeleryConfig::from_lookup(|_| None).unwrap();
    let mut seen = 0;
    for (case, entry) in manifest.as_object().unwrap() {
        for message in entry["messages"].as_array().unwrap() {
            let file = message["file"].as_str().unwrap();
            let list = message["list"].as_str().unwrap();
            let envelope: Value = serde_json::from_str(&raw(file)).unwrap();
            let queue = envelope["properties"]["delivery_info"]["routing_key"]
                .as_str()
                .unwrap();
            let priority = envelope["properties"]["priority"].as_u64().unwrap_or(0);
            let step = [0, 3, 6, 9].iter().rposition(|s| *s <= priority).unwrap();
            assert_eq!(config.sublists(queue)[step], list, "{case}");
            seen += 1;
        }
    }
    assert!(seen >= 14, "{seen} messages in the manifest");
}
