//! Readiness reports, shared by the API's and the workers' `/health/ready`:
//! one JSON shape, `{status, components: {name: {ok, error?, detail?}}}`.

use serde_json::{Map, Value, json};

/// The outcome of checking one component.
pub type Check = Result<(), String>;

/// The readiness report of `components` (name, outcome) plus informational
/// `details` (name, text); ready when every check passed.
pub fn report(components: &[(&str, &Check)], details: &[(&str, &str)]) -> (bool, Value) {
    let ready = components.iter().all(|(_, c)| c.is_ok());
    let mut map = Map::new();
    for (name, check) in components {
        let v = match check {
            Ok(()) => json!({ "ok": true }),
            Err(e) => json!({ "ok": false, "error": e }),
        };
        map.insert((*name).to_owned(), v);
    }
    for (name, detail) in details {
        map.insert((*name).to_owned(), json!({ "ok": true, "detail": detail }));
    }
    let status = if ready { "ready" } else { "unready" };
    (ready, json!({ "status": status, "components": map }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_component_makes_it_unready_and_names_the_error() {
        let (ready, v) = report(
            &[("redis", &Ok(())), ("postgres", &Err("down".into()))],
            &[],
        );
        assert!(!ready);
        assert_eq!(v["status"], "unready");
        assert_eq!(v["components"]["postgres"]["error"], "down");
        assert_eq!(v["components"]["redis"]["ok"], true);
    }
}
