//! Which Hopper task runs a Celery task, and with which arguments.
//!
//! A Celery message names its task (`tasks.add`) and carries `[args, kwargs]`;
//! a Hopper task has a name ([`QueueName`]) and takes one JSON value. [`Routes`]
//! maps names (`HOPPER_CELERY_ROUTES=proj.tasks.Add=add,…`; by default a task
//! keeps its name when that is a valid Hopper task name), and [`arguments`]
//! maps the call: onto the task's declared parameter names when it has them
//! (`{"x": 1, "y": 2}`), else to `{"args": [...], "kwargs": {...}}`.

use std::collections::HashMap;

use hopper_shared::QueueName;
use serde_json::{Map, Value};

use crate::envelope::{Refusal, RefusalReason};

/// The variable holding the name table.
pub const ROUTES_VAR: &str = "HOPPER_CELERY_ROUTES";

/// Celery task names mapped to Hopper tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    table: HashMap<String, QueueName>,
}

/// A bad `HOPPER_CELERY_ROUTES` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ROUTES_VAR}: entry {entry:?} {problem} (expected `celery.name=hopper-task,…`)")]
pub struct RoutesError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Routes {
    /// Parses `celery.name=hopper-task,…` (spaces around names and empty
    /// entries between commas are ignored; unset or empty = no table).
    pub fn parse(spec: &str) -> Result<Self, RoutesError> {
        let mut table = HashMap::new();
        for entry in spec.split(',') {
            if entry.trim().is_empty() {
                continue;
            }
            let error = |problem: String| RoutesError {
                entry: entry.trim().to_owned(),
                problem,
            };
            let Some((celery, hopper)) = entry.split_once('=') else {
                return Err(error("has no `=`".into()));
            };
            let (celery, hopper) = (celery.trim(), hopper.trim());
            if celery.is_empty() {
                return Err(error("names no Celery task".into()));
            }
            let task = QueueName::new(hopper)
                .map_err(|e| error(format!("maps to an invalid Hopper task name: {e}")))?;
            if table.insert(celery.to_owned(), task).is_some() {
                return Err(error(format!("maps `{celery}` a second time")));
            }
        }
        Ok(Self { table })
    }

    /// The Hopper task of the Celery task `celery_name`: its entry in the
    /// table, else the same name when it is a valid Hopper task name.
    ///
    /// Whether that task is declared is for the caller to check (refusing
    /// with [`Refusal::unknown_task`] when not).
    pub fn task_for(&self, celery_name: &str) -> Result<QueueName, Refusal> {
        if let Some(task) = self.table.get(celery_name) {
            return Ok(task.clone());
        }
        QueueName::new(celery_name).map_err(|_| {
            let mut refusal = Refusal::unknown_task(celery_name);
            refusal.detail = format!(
                "task `{celery_name}` is not a valid Hopper task name: map it with \
                 {ROUTES_VAR}={celery_name}=<task>"
            );
            refusal
        })
    }

    /// Whether no name is mapped.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// The Hopper arguments of a Celery call.
///
/// With `params` (the task's parameter names in positional order): an
/// object `{params[i]: args[i]} ∪ kwargs`; more positional arguments than
/// parameters, or a keyword also given positionally, is refused
/// ([`RefusalReason::BadArguments`]). Missing arguments are left to the
/// task's schema. Without `params`: `{"args": [...], "kwargs": {...}}`.
pub fn arguments(
    params: Option<&[String]>,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Value, Refusal> {
    let Some(params) = params else {
        return Ok(serde_json::json!({ "args": args, "kwargs": kwargs }));
    };
    if args.len() > params.len() {
        return Err(Refusal::new(
            RefusalReason::BadArguments,
            format!(
                "{} positional arguments given but the task takes {} ({})",
                args.len(),
                params.len(),
                params.join(", ")
            ),
        ));
    }
    let mut object: Map<String, Value> = params.iter().cloned().zip(args.iter().cloned()).collect();
    for (name, value) in kwargs {
        if object.contains_key(name) {
            return Err(Refusal::new(
                RefusalReason::BadArguments,
                format!("argument `{name}` given both positionally and by keyword"),
            ));
        }
        object.insert(name.clone(), value.clone());
    }
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_parse_and_map() {
        let routes = Routes::parse(" proj.tasks.Add = add , ,legacy:thing=other-task").unwrap();
        assert_eq!(routes.task_for("proj.tasks.Add").unwrap(), "add");
        assert_eq!(routes.task_for("legacy:thing").unwrap(), "other-task");
        // Not in the table: the same name when valid.
        assert_eq!(routes.task_for("tasks.add").unwrap(), "tasks.add");
        let refusal = routes.task_for("Proj.Upper").unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::UnknownTask);
        assert!(
            refusal
                .detail
                .contains("HOPPER_CELERY_ROUTES=Proj.Upper=<task>")
        );
        assert_eq!(refusal.task.as_deref(), Some("Proj.Upper"));
        assert!(Routes::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_routes_name_the_entry() {
        for (spec, entry, problem) in [
            ("a=b,nothing", "nothing", "no `=`"),
            ("=b", "=b", "no Celery task"),
            ("a=Bad Name", "a=Bad Name", "invalid Hopper task name"),
            ("a=b,a=c", "a=c", "second time"),
        ] {
            let e = Routes::parse(spec).unwrap_err();
            assert_eq!(e.entry, entry);
            assert!(e.problem.contains(problem), "{e}");
            assert!(
                e.to_string().starts_with("HOPPER_CELERY_ROUTES: entry"),
                "{e}"
            );
        }
    }

    #[test]
    fn arguments_with_and_without_params() {
        let kwargs = json!({"y": 5}).as_object().unwrap().clone();
        assert_eq!(
            arguments(None, &[json!(4)], &kwargs).unwrap(),
            json!({"args": [4], "kwargs": {"y": 5}})
        );
        let params = ["x".to_owned(), "y".to_owned(), "z".to_owned()];
        assert_eq!(
            arguments(Some(&params), &[json!(4)], &kwargs).unwrap(),
            json!({"x": 4, "y": 5})
        );
        assert_eq!(
            arguments(Some(&params), &[], &Map::new()).unwrap(),
            json!({})
        );

        let r = arguments(Some(&params), &[json!(1), json!(2)], &kwargs).unwrap_err();
        assert_eq!(r.reason, RefusalReason::BadArguments);
        assert!(r.detail.contains("`y`"), "{}", r.detail);
        let r = arguments(Some(&params[..1]), &[json!(1), json!(2)], &Map::new()).unwrap_err();
        assert_eq!(r.reason, RefusalReason::BadArguments);
        assert!(
            r.detail
                .contains("2 positional arguments given but the task takes 1 (x)"),
            "{}",
            r.detail
        );
    }
}
