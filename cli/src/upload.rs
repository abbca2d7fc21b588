//! `hopper documents upload`: uploads files, then follows each document's
//! progress stream (SSE) with a progress bar until it is ready or failed.

use std::path::PathBuf;

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::{api::Api, output, sse::EventReader};

/// Uploads `files`; with `wait`, follows each to its end.
pub async fn run(
    api: &Api,
    json: bool,
    files: &[PathBuf],
    set: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    let mut uploaded = Vec::new();
    for f in files {
        let r = api.upload(f, set).await?;
        uploaded.push((f.display().to_string(), r));
    }
    if !wait {
        let all: Vec<Value> = uploaded.iter().map(|(_, r)| r.clone()).collect();
        return output::print(json, &Value::Array(all), || {
            uploaded
                .iter()
                .map(|(f, r)| format!("{f}: {}\n", r["document_id"].as_str().unwrap_or("?")))
                .collect()
        });
    }
    let bars = MultiProgress::with_draw_target(if json {
        indicatif::ProgressDrawTarget::hidden()
    } else {
        indicatif::ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} chunks {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut tasks = Vec::new();
    for (file, r) in uploaded {
        let id = r["document_id"].as_str().unwrap_or_default().to_owned();
        let bar = bars.add(
            ProgressBar::new(0)
                .with_style(style.clone())
                .with_prefix(file),
        );
        let res = api.events(&id).await?;
        let api = api.clone();
        tasks.push(tokio::spawn(
            async move { follow(&api, &id, res, bar).await },
        ));
    }
    let mut finals = Vec::new();
    for t in tasks {
        finals.push(t.await??);
    }
    let failed = finals.iter().filter(|d| d["status"] != "ready").count();
    output::print(json, &Value::Array(finals.clone()), || {
        finals.iter().map(output::document).collect()
    })?;
    if failed > 0 {
        bail!("{failed} document(s) failed");
    }
    Ok(())
}

/// Reads `progress` events until `ready` or `failed`; returns the last. A
/// stream that ends with a `reconnect` event (its lifetime cap) is opened
/// again.
async fn follow(
    api: &Api,
    id: &str,
    res: reqwest::Response,
    bar: ProgressBar,
) -> anyhow::Result<Value> {
    let mut events = EventReader::new(res);
    let mut last = Value::Null;
    let mut reconnect = false;
    loop {
        let Some(event) = events.next().await? else {
            if !std::mem::take(&mut reconnect) {
                break;
            }
            events = EventReader::new(api.events(id).await?);
            continue;
        };
        if event.name == "reconnect" {
            reconnect = true;
            continue;
        }
        let Ok(doc) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        bar.set_length(doc["chunks_total"].as_u64().unwrap_or(0));
        bar.set_position(doc["chunks_embedded"].as_u64().unwrap_or(0));
        bar.set_message(doc["status"].as_str().unwrap_or("").to_owned());
        let done = doc["status"] == "ready" || doc["status"] == "failed";
        last = doc;
        if done {
            bar.finish();
            return Ok(last);
        }
    }
    bail!("the progress stream ended early (last: {last})")
}
