//! `hopper tasks list|show|remove`: the task registry through the API.
//!
//! `list` prints every task the key's tenant may see with its live workers
//! and queue depth (`GET /v1/tasks`); `show` one definition with its
//! argument schema as pretty JSON (`GET /v1/tasks/{name}`); `remove` forgets
//! a declaration (`DELETE /v1/tasks/{name}`, admin scope; the queue and its
//! jobs stay) and prints what it removed. `--json` prints the API's answers.

use std::fmt::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::{api::Api, output};

/// The `tasks` subcommands.
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Every task this key's tenant may see, with its workers and queue depth.
    List,
    /// One task: its definition and argument schema.
    Show {
        /// The task's name.
        name: String,
    },
    /// Forget a task's declaration (its queue and jobs stay; a worker that
    /// serves it declares it again when it starts). Asks nothing.
    Remove {
        /// The task's name.
        name: String,
    },
}

/// Runs one `tasks` subcommand.
pub async fn run(api: &Api, json: bool, command: TasksCommand) -> anyhow::Result<()> {
    match command {
        TasksCommand::List => {
            let r = api.get("/v1/tasks").await?;
            output::print(json, &r, || table(&r))
        }
        TasksCommand::Show { name } => {
            let t = api.get(&path(&name)).await?;
            output::print(json, &t, || show(&t))
        }
        TasksCommand::Remove { name } => {
            // Read it first, to say what was removed.
            let t = api.get(&path(&name)).await?;
            api.delete(&path(&name)).await?;
            let removed = json!({ "removed": t });
            output::print(json, &removed, || {
                format!(
                    "removed task {} (version {}, {}, {}); its queue and jobs stay\n",
                    t["name"].as_str().unwrap_or(&name),
                    t["version"],
                    t["runtime"].as_str().unwrap_or("?"),
                    owner(&t)
                )
            })
        }
    }
}

/// The API path of task `name`.
fn path(name: &str) -> String {
    format!("/v1/tasks/{}", crate::api::segment(name))
}

/// Who may submit the task.
fn owner(t: &Value) -> String {
    match t["tenant"].as_str() {
        Some(tenant) => format!("tenant {tenant}"),
        None if t["internal"] == true => "hopper (internal)".into(),
        None => "every tenant".into(),
    }
}

/// The task list as a table.
fn table(r: &Value) -> String {
    let tasks = r["tasks"].as_array().map(Vec::as_slice).unwrap_or_default();
    if tasks.is_empty() {
        return "no tasks\n".into();
    }
    let rows = tasks
        .iter()
        .map(|t| {
            vec![
                t["name"].as_str().unwrap_or("?").to_owned(),
                t["version"].to_string(),
                t["runtime"].as_str().unwrap_or("?").to_owned(),
                t["workers"].to_string(),
                t["pending"].to_string(),
                t["running"].to_string(),
                t["dead"].to_string(),
                owner(t),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "VERSION", "RUNTIME", "WORKERS", "PENDING", "RUNNING", "DEAD", "OWNER",
        ],
        &[1, 3, 4, 5, 6],
        rows,
    )
}

/// One task: its facts, settings and schema.
fn show(t: &Value) -> String {
    let mut s = format!(
        "task {}  version {}  runtime {}  owner {}\n",
        t["name"].as_str().unwrap_or("?"),
        t["version"],
        t["runtime"].as_str().unwrap_or("?"),
        owner(t)
    );
    if let Some(d) = t["description"].as_str() {
        let _ = writeln!(s, "  {d}");
    }
    let _ = writeln!(
        s,
        "  workers {}  pending {}  scheduled {}  running {}  dead {}",
        t["workers"], t["pending"], t["scheduled"], t["running"], t["dead"]
    );
    if let Some(settings) = t["settings"].as_object() {
        let line: Vec<String> = settings.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "  settings: {}", line.join(", "));
    }
    match &t["schema"] {
        Value::Null => s.push_str("  schema: none (any JSON object)\n"),
        schema => {
            let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
            let _ = writeln!(
                s,
                "  schema (digest {}):",
                t["schema_digest"].as_str().unwrap_or("?")
            );
            for line in pretty.lines() {
                let _ = writeln!(s, "    {line}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_detail_name_what_matters() {
        let t = json!({
            "name": "thumbnail", "version": 2, "runtime": "http", "tenant": "acme",
            "workers": 1, "pending": 3, "scheduled": 0, "running": 0, "dead": 4,
            "settings": {"max_attempts": 3},
            "schema": {"type": "object"}, "schema_digest": "ab12"
        });
        let table = table(&json!({ "tasks": [t] }));
        let row = table.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "thumbnail",
                "2",
                "http",
                "1",
                "3",
                "0",
                "4",
                "tenant",
                "acme"
            ]
        );
        let detail = show(&t);
        assert!(detail.contains("\"type\": \"object\""), "{detail}");
        assert!(detail.contains("max_attempts 3"), "{detail}");
        assert_eq!(path("a b/c"), "/v1/tasks/a%20b%2Fc");
    }
}
