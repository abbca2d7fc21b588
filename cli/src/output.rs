//! Human-readable rendering of API answers (tables and timelines), or the
//! raw JSON with `--json`.

use std::fmt::Write;

use serde_json::Value;

/// Prints `value` as JSON, or `human()` otherwise.
pub fn print(json: bool, value: &Value, human: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", human());
    }
    Ok(())
}

fn ms(v: &Value) -> Option<i64> {
    v.as_i64()
}

/// A job: its state line, timeline and result or error.
pub fn job(j: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "job {}  kind {}  state {}  attempts {}/{}",
        j["id"].as_str().unwrap_or("?"),
        j["kind"].as_str().unwrap_or("?"),
        j["state"].as_str().unwrap_or("?"),
        j["attempts"],
        j["max_attempts"]
    );
    if let Some(enq) = ms(&j["enqueued_at_ms"]) {
        let _ = writeln!(s, "  enqueued   +0 ms");
        if let Some(st) = ms(&j["started_at_ms"]) {
            let _ = writeln!(
                s,
                "  started    +{} ms  on {}",
                st - enq,
                j["worker"].as_str().unwrap_or("?")
            );
        }
        if let Some(fin) = ms(&j["finished_at_ms"]) {
            let _ = writeln!(s, "  finished   +{} ms", fin - enq);
        }
    }
    if let Some(e) = j["error"].as_str() {
        let _ = writeln!(s, "  error: {e}");
    }
    if !j["result"].is_null() {
        let _ = writeln!(s, "  result: {}", j["result"]);
    }
    s
}

/// Queue stats as a table.
pub fn queues(v: &Value) -> String {
    let mut s = format!(
        "{:<10} {:>9} {:>9} {:>9} {:>7} {:>7} {:>12}\n",
        "QUEUE", "PENDING", "SCHEDULED", "RUNNING", "DEAD", "WORKERS", "OLDEST(ms)"
    );
    for q in v["queues"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<10} {:>9} {:>9} {:>9} {:>7} {:>7} {:>12}",
            q["queue"].as_str().unwrap_or("?"),
            q["pending"].to_string(),
            q["scheduled"].to_string(),
            q["running"].to_string(),
            q["dead"].to_string(),
            q["workers"].to_string(),
            q["oldest_pending_age_ms"]
                .as_u64()
                .map_or("-".into(), |a| a.to_string())
        );
    }
    s
}

/// Search hits: score, document, and the start of the chunk.
pub fn hits(r: &Value) -> String {
    let mut s = String::new();
    for (i, h) in r["hits"].as_array().into_iter().flatten().enumerate() {
        let text: String = h["text"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let short: String = text.chars().take(100).collect();
        let _ = writeln!(
            s,
            "{:>2}. {:.3}  {}  {short}",
            i + 1,
            h["score"].as_f64().unwrap_or(0.0),
            h["document_name"].as_str().unwrap_or("?")
        );
    }
    if s.is_empty() {
        s.push_str("no hits\n");
    }
    s
}

/// A page of dead letters.
pub fn dead(r: &Value) -> String {
    let mut s = format!(
        "{} dead letter(s) in {}\n",
        r["total"],
        r["queue"].as_str().unwrap_or("?")
    );
    for j in r["jobs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{}  attempts {}/{}  {}",
            j["id"].as_str().unwrap_or("?"),
            j["attempts"],
            j["max_attempts"],
            j["error"].as_str().unwrap_or("")
        );
    }
    s
}

/// A document list as a table.
pub fn documents(r: &Value) -> String {
    let mut s = format!("{:<36}  {:<12} {:>7}  NAME\n", "ID", "STATUS", "CHUNKS");
    for d in r["documents"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<36}  {:<12} {:>7}  {}",
            d["id"].as_str().unwrap_or("?"),
            d["status"].as_str().unwrap_or("?"),
            d["chunk_count"].to_string(),
            d["name"].as_str().unwrap_or("?")
        );
    }
    s
}

/// One document.
pub fn document(d: &Value) -> String {
    let mut s = format!(
        "document {}  {}  status {}  chunks {}/{}\n",
        d["id"].as_str().unwrap_or("?"),
        d["name"].as_str().unwrap_or("?"),
        d["status"].as_str().unwrap_or("?"),
        d["chunks_embedded"],
        d["chunks_total"]
    );
    if let Some(e) = d["error"].as_str() {
        let _ = writeln!(s, "  error: {e}");
    }
    if let Some(sum) = d["summary"].as_str() {
        let _ = writeln!(s, "  summary: {sum}");
    }
    s
}

/// Workers as a table.
pub fn workers(r: &Value) -> String {
    let mut s = format!(
        "{:<10} {:<32} {:>10} {:>8}\n",
        "QUEUE", "WORKER", "BEAT(ms)", "RUNNING"
    );
    for w in r["workers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<10} {:<32} {:>10} {:>8}",
            w["queue"].as_str().unwrap_or("?"),
            w["worker"].as_str().unwrap_or("?"),
            w["heartbeat_age_ms"].to_string(),
            w["running"].as_array().map_or(0, Vec::len)
        );
    }
    s
}
