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
        let mut previous = 0;
        for a in j["history"].as_array().into_iter().flatten() {
            let attempt = a["attempt"].as_u64().unwrap_or(0);
            if attempt <= previous {
                let _ = writeln!(s, "  (retried from the dead letters)");
            }
            previous = attempt;
            let start = ms(&a["started_at_ms"]).map_or("?".into(), |t| format!("+{} ms", t - enq));
            let end = ms(&a["finished_at_ms"]).map_or("?".into(), |t| format!("+{} ms", t - enq));
            let _ = writeln!(
                s,
                "  attempt {attempt}  {start} .. {end}  {}  on {}{}",
                a["outcome"].as_str().unwrap_or("?"),
                a["worker"].as_str().unwrap_or("?"),
                a["error"]
                    .as_str()
                    .map_or(String::new(), |e| format!("  ({e})"))
            );
        }
        if j["state"] == "running"
            && let Some(st) = ms(&j["started_at_ms"])
        {
            let _ = writeln!(
                s,
                "  attempt {}  +{} ms ..  running  on {}",
                j["attempts"],
                st - enq,
                j["worker"].as_str().unwrap_or("?")
            );
        }
        if let Some(due) = ms(&j["run_at_ms"]) {
            let _ = writeln!(s, "  due        +{} ms", due - enq);
        }
        if let Some(fin) = ms(&j["finished_at_ms"]) {
            let _ = writeln!(
                s,
                "  finished   +{} ms  {}",
                fin - enq,
                j["state"].as_str().unwrap_or("?")
            );
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

/// A job listing as a table, with how long ago each was enqueued.
pub fn jobs(r: &Value) -> String {
    let now = now_ms();
    let jobs = r["jobs"].as_array().map(Vec::as_slice).unwrap_or_default();
    if jobs.is_empty() {
        return "no jobs\n".into();
    }
    let rows = jobs
        .iter()
        .map(|j| {
            let enq = ms(&j["enqueued_at_ms"]).unwrap_or(now);
            vec![
                j["id"].as_str().unwrap_or("?").to_owned(),
                j["kind"].as_str().unwrap_or("?").to_owned(),
                j["state"].as_str().unwrap_or("?").to_owned(),
                format!("{}/{}", j["attempts"], j["max_attempts"]),
                format!("{} ago", human_ms(now - enq)),
                ms(&j["finished_at_ms"]).map_or("-".into(), |f| human_ms(f - enq)),
            ]
        })
        .collect();
    table(
        &["ID", "QUEUE", "STATE", "ATTEMPTS", "ENQUEUED", "TOOK"],
        &[3, 4, 5],
        rows,
    )
}

/// `GET /v1/document-sets` as a table: each set's model, sizes and latest
/// re-embed (`running 1200/4000` chunks, `done`, `cancelled`).
pub fn document_sets(r: &Value) -> String {
    let sets = r["sets"].as_array().cloned().unwrap_or_default();
    if sets.is_empty() {
        return "no document sets\n".into();
    }
    let rows = sets
        .iter()
        .map(|s| {
            let reembed = &s["reembed"];
            let progress = match reembed["state"].as_str() {
                None => "-".to_owned(),
                Some("running") => format!(
                    "to {}: {}/{} chunks",
                    reembed["model"].as_str().unwrap_or("?"),
                    reembed["chunks_done"],
                    reembed["chunks_total"]
                ),
                Some(state) => format!("{state} ({})", reembed["model"].as_str().unwrap_or("?")),
            };
            vec![
                s["name"].as_str().unwrap_or("?").to_owned(),
                s["model"].as_str().unwrap_or("(default)").to_owned(),
                s["documents"].to_string(),
                s["chunks"].to_string(),
                progress,
            ]
        })
        .collect();
    table(
        &["SET", "MODEL", "DOCUMENTS", "CHUNKS", "RE-EMBED"],
        &[2, 3],
        rows,
    )
}

/// Rows under `header` as a borderless table (`comfy-table`): each column
/// as wide as its widest cell, two spaces apart, the columns in `right`
/// (numbers) aligned right; no trailing spaces.
pub fn table(header: &[&str], right: &[usize], rows: Vec<Vec<String>>) -> String {
    use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    let last = header.len().saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// Unix time now, in ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A duration as `humantime` writes it, to a precision that suits its
/// size: `850ms`, `12s 300ms`, `4m 3s`, `2h 30m`, `3days 4h`.
pub fn human_ms(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    let unit = match ms {
        0..10_000 => 1,
        10_000..60_000 => 100,
        60_000..3_600_000 => 1_000,
        3_600_000..86_400_000 => 60_000,
        _ => 3_600_000,
    };
    let rounded = ms / unit * unit;
    humantime::format_duration(std::time::Duration::from_millis(rounded)).to_string()
}

/// API keys as a table.
pub fn keys(v: &Value) -> String {
    let mut rows = Vec::new();
    for k in v["keys"].as_array().into_iter().flatten() {
        let scopes: Vec<&str> = k["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // A work key limited to some queues shows them: `work[resize,ocr]`.
        let mut scopes = scopes.join(",");
        if let Some(queues) = k["queues"].as_array() {
            let queues: Vec<&str> = queues.iter().filter_map(Value::as_str).collect();
            scopes = format!("{scopes}[{}]", queues.join(","));
        }
        rows.push(vec![
            k["prefix"].as_str().unwrap_or("?").to_owned(),
            k["tenant"].as_str().unwrap_or("?").to_owned(),
            scopes,
            if k["revoked_at_ms"].is_null() {
                "live"
            } else {
                "revoked"
            }
            .to_owned(),
            k["name"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    table(&["PREFIX", "TENANT", "SCOPES", "STATE", "NAME"], &[], rows)
}

/// Queue stats as a table.
pub fn queues(v: &Value) -> String {
    let rows = v["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            vec![
                q["queue"].as_str().unwrap_or("?").to_owned(),
                q["pending"].to_string(),
                q["scheduled"].to_string(),
                q["running"].to_string(),
                q["dead"].to_string(),
                q["workers"].to_string(),
                q["oldest_pending_age_ms"]
                    .as_u64()
                    .map_or("-".into(), |a| a.to_string()),
            ]
        })
        .collect();
    table(
        &[
            "QUEUE",
            "PENDING",
            "SCHEDULED",
            "RUNNING",
            "DEAD",
            "WORKERS",
            "OLDEST(ms)",
        ],
        &[1, 2, 3, 4, 5, 6],
        rows,
    )
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
    let rows = r["documents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                d["id"].as_str().unwrap_or("?").to_owned(),
                d["status"].as_str().unwrap_or("?").to_owned(),
                d["chunk_count"].to_string(),
                d["name"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    table(&["ID", "STATUS", "CHUNKS", "NAME"], &[2], rows)
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
    let rows = r["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            vec![
                w["queue"].as_str().unwrap_or("?").to_owned(),
                w["worker"].as_str().unwrap_or("?").to_owned(),
                w["heartbeat_age_ms"].to_string(),
                w["running"].as_array().map_or(0, Vec::len).to_string(),
            ]
        })
        .collect();
    table(&["QUEUE", "WORKER", "BEAT(ms)", "RUNNING"], &[2, 3], rows)
}
