//! `hopper workflows submit|list|show|cancel`: workflows (DAGs of jobs:
//! chains, groups, chords) through the API.
//!
//! `submit` posts a workflow read from a JSON file, or `-` for stdin
//! (`POST /v1/workflows`; the API checks every node and answers the JSON
//! path it refuses) and prints its id. `list` prints the tenant's newest
//! workflows with their progress; `show` draws one as text: a header line,
//! then one line per node in index order, indented by its depth in the DAG
//! (a node waiting for nothing is at depth 0, any other one level below the
//! deepest node it waits for), with its state, place in the submitted JSON,
//! job and the nodes it waits for; `cancel` stops one. `--json` prints the
//! API's answers.

use std::{fmt::Write, io::Read};

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::{
    api::{Api, segment},
    output,
};

/// Node states in the order a workflow moves through them.
const NODE_STATES: [&str; 6] = [
    "waiting",
    "queued",
    "succeeded",
    "dead",
    "cancelled",
    "skipped",
];
/// Longest error text shown on a node's line.
const ERROR_CHARS: usize = 120;
/// Longest result text shown under a succeeded workflow.
const RESULT_CHARS: usize = 400;

/// The `workflows` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Submit a workflow from a JSON file (`-`: stdin), e.g.
    /// `{"root": {"chain": [{"task": "echo", "args": {"message": "a"}},
    /// {"task": "echo", "args": {"message": "b"}}]}}`. Prints its id.
    Submit {
        /// The JSON file of the workflow, or `-` to read stdin.
        file: String,
    },
    /// This key's tenant's newest workflows, with their progress.
    List {
        /// Most workflows listed (1-100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One workflow: its state and every node's, drawn as its DAG.
    Show {
        /// The workflow's id.
        id: String,
    },
    /// Cancel a workflow: nodes not started are skipped, running jobs
    /// cancelled.
    Cancel {
        /// The workflow's id.
        id: String,
    },
}

/// Runs one `workflows` subcommand.
pub async fn run(api: &Api, json: bool, command: WorkflowsCommand) -> anyhow::Result<()> {
    match command {
        WorkflowsCommand::Submit { file } => {
            let body = read_spec(&file)?;
            let w = api.post_json("/v1/workflows", &body).await?;
            output::print(json, &w, || {
                format!("{}\n", w["id"].as_str().unwrap_or("?"))
            })
        }
        WorkflowsCommand::List { limit } => {
            let r = api.get(&format!("/v1/workflows?limit={limit}")).await?;
            output::print(json, &r, || table(&r))
        }
        WorkflowsCommand::Show { id } => {
            let w = api.get(&path(&id)).await?;
            output::print(json, &w, || draw(&w))
        }
        WorkflowsCommand::Cancel { id } => {
            let r = api
                .post_json(&format!("{}/cancel", path(&id)), &json!({}))
                .await?;
            output::print(json, &r, || {
                format!(
                    "{id}: {} (was {})\n",
                    r["state"].as_str().unwrap_or("?"),
                    r["state_before"].as_str().unwrap_or("?")
                )
            })
        }
    }
}

/// The API path of workflow `id`.
fn path(id: &str) -> String {
    format!("/v1/workflows/{}", segment(id))
}

/// The workflow's JSON from `file`, or stdin for `-`.
fn read_spec(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the workflow from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    serde_json::from_str(&text).context("the workflow is not valid JSON")
}

/// `5 nodes: 2 succeeded, 1 queued, 2 waiting` (states in their order).
fn counts(w: &Value) -> String {
    let total: u64 = w["counts"]
        .as_object()
        .map(|c| c.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let parts: Vec<String> = NODE_STATES
        .iter()
        .filter_map(|s| {
            let n = w["counts"][s].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{n} {s}"))
        })
        .collect();
    let noun = if total == 1 { "node" } else { "nodes" };
    format!("{total} {noun}: {}", parts.join(", "))
}

/// `3/5`: nodes over, of all.
fn progress(w: &Value) -> String {
    let over: u64 = ["succeeded", "dead", "cancelled", "skipped"]
        .iter()
        .filter_map(|s| w["counts"][s].as_u64())
        .sum();
    let total: u64 = w["counts"]
        .as_object()
        .map(|c| c.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    format!("{over}/{total}")
}

/// The first line of `text`, at most `max` characters (`…` when cut).
fn short(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max || line.len() < text.trim_end().len() {
        let cut: String = line.chars().take(max).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// The workflow list as a table.
fn table(r: &Value) -> String {
    let workflows = r["workflows"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if workflows.is_empty() {
        return "no workflows\n".into();
    }
    let now = output::now_ms();
    let rows = workflows
        .iter()
        .map(|w| {
            let created = w["created_at_ms"].as_i64().unwrap_or(now);
            vec![
                w["id"].as_str().unwrap_or("?").to_owned(),
                short(w["name"].as_str().unwrap_or("-"), 40),
                w["state"].as_str().unwrap_or("?").to_owned(),
                progress(w),
                format!("{} ago", output::human_ms(now - created)),
            ]
        })
        .collect();
    output::table(&["ID", "NAME", "STATE", "DONE", "CREATED"], &[3, 4], rows)
}

/// Each node's depth: 0 when it waits for nothing, else one more than the
/// deepest node it waits for (nodes wait only for nodes listed before them).
fn depths(nodes: &[Value]) -> Vec<usize> {
    let mut depth: Vec<usize> = Vec::with_capacity(nodes.len());
    for n in nodes {
        let d = n["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .filter_map(|i| depth.get(i as usize).map(|d| d + 1))
            .max()
            .unwrap_or(0);
        depth.push(d);
    }
    depth
}

/// A workflow drawn as text: a header line, then one line per node.
fn draw(w: &Value) -> String {
    let mut out = format!("workflow {}", w["id"].as_str().unwrap_or("?"));
    if let Some(name) = w["name"].as_str() {
        let _ = write!(out, " \"{}\"", short(name, 80));
    }
    let _ = writeln!(
        out,
        "  {}  on_failure {}  {}",
        w["state"].as_str().unwrap_or("?"),
        w["on_failure"].as_str().unwrap_or("stop"),
        counts(w)
    );
    let nodes = w["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let depth = depths(nodes);
    let width = |f: &dyn Fn(&Value) -> usize| nodes.iter().map(f).max().unwrap_or(0);
    let label = |n: &Value| format!("[{}] {}", n["index"], n["task"].as_str().unwrap_or("?"));
    let label_w = width(&|n| label(n).chars().count());
    let path_w = width(&|n| n["path"].as_str().map_or(1, str::len));
    for (i, (n, d)) in nodes.iter().zip(&depth).enumerate() {
        let branch = if i + 1 == nodes.len() {
            "└─"
        } else {
            "├─"
        };
        let job = n["job_id"].as_str().unwrap_or("?");
        let job: String = job.chars().take(8).collect();
        let _ = write!(
            out,
            "{}{branch} {:<label_w$}  {:<9}  {:<path_w$}  job {job}…",
            "   ".repeat(*d + 1),
            label(n),
            n["state"].as_str().unwrap_or("?"),
            n["path"].as_str().unwrap_or("?"),
        );
        let deps: Vec<String> = n["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Value::to_string)
            .collect();
        if !deps.is_empty() {
            let _ = write!(out, "  ← {}", deps.join(","));
        }
        if let Some(e) = n["error"].as_str() {
            let _ = write!(out, "  error: {}", short(e, ERROR_CHARS));
        }
        out.push('\n');
    }
    if let Some(fin) = w["finished_at_ms"].as_i64() {
        let took = fin - w["created_at_ms"].as_i64().unwrap_or(fin);
        let _ = writeln!(out, "  finished in {}", output::human_ms(took));
    }
    if !w["result"].is_null() {
        let _ = writeln!(
            out,
            "  result: {}",
            short(&w["result"].to_string(), RESULT_CHARS)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: u64, task: &str, state: &str, path: &str, deps: Value) -> Value {
        json!({"index": index, "path": path, "task": task, "state": state,
               "job_id": format!("0190abcd-0000-5000-8000-00000000000{index}"), "deps": deps})
    }

    #[test]
    fn show_draws_each_node_by_depth_with_its_state() {
        let mut failed = node(2, "resize", "dead", "root.chain[1].group[1]", json!([0]));
        failed["error"] = json!("boom\nat line 2");
        let w = json!({
            "id": "0190abcd-1111-7000-8000-000000000000", "name": "nightly", "state": "failed",
            "on_failure": "stop", "tenant": "default", "created_at_ms": 1000,
            "finished_at_ms": 2500,
            "counts": {"succeeded": 2, "dead": 1, "skipped": 1},
            "nodes": [
                node(0, "echo", "succeeded", "root.chain[0]", json!([])),
                node(1, "echo", "succeeded", "root.chain[1].group[0]", json!([0])),
                failed,
                node(3, "echo", "skipped", "root.chain[2]", json!([1, 2])),
            ]
        });
        let text = draw(&w);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "workflow 0190abcd-1111-7000-8000-000000000000 \"nightly\"  failed  on_failure stop  \
             4 nodes: 2 succeeded, 1 dead, 1 skipped"
        );
        assert_eq!(
            lines[1],
            "   ├─ [0] echo    succeeded  root.chain[0]           job 0190abcd…"
        );
        assert_eq!(
            lines[2],
            "      ├─ [1] echo    succeeded  root.chain[1].group[0]  job 0190abcd…  ← 0"
        );
        assert_eq!(
            lines[3],
            "      ├─ [2] resize  dead       root.chain[1].group[1]  job 0190abcd…  ← 0  error: boom…"
        );
        assert_eq!(
            lines[4],
            "         └─ [3] echo    skipped    root.chain[2]           job 0190abcd…  ← 1,2"
        );
        assert_eq!(lines[5], "  finished in 1s 500ms");
        assert_eq!(lines.len(), 6, "{text}");
    }

    #[test]
    fn the_list_shows_progress_and_a_result_is_shown() {
        let w = json!({
            "id": "0190abcd-1111-7000-8000-000000000000", "state": "running",
            "on_failure": "continue", "tenant": "default", "created_at_ms": output::now_ms(),
            "counts": {"succeeded": 3, "queued": 1, "waiting": 1}
        });
        let t = table(&json!({ "workflows": [w] }));
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("ID") && lines[0].contains("DONE"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("0190abcd-1111-7000-8000-000000000000  -     running")
                && lines[1].contains("3/5"),
            "{t}"
        );
        assert_eq!(table(&json!({"workflows": []})), "no workflows\n");
        let done = json!({"id": "x", "state": "succeeded", "counts": {"succeeded": 1},
                          "result": {"message": "hi"}, "nodes": []});
        assert!(
            draw(&done).ends_with("  result: {\"message\":\"hi\"}\n"),
            "{}",
            draw(&done)
        );
        assert_eq!(path("a b"), "/v1/workflows/a%20b");
    }
}
