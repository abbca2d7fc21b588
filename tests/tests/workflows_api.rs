//! Workflows over HTTP (`/v1/workflows`), against the real API and real
//! echo workers: a chain passes each result on, a chord's body gets its
//! members' results in order, what submission refuses and the JSON path it
//! names, tenants, cancelling, and both failure policies. (The fan-in's own
//! guarantees — exactly-once counting, repairs — are
//! `queue/tests/workflows.rs`'.)

use std::time::{Duration, Instant};

use hopper_shared::tasks::TaskDefinition;
use hopper_tests::TestEnv;
use serde_json::{Value, json};

/// How long a test waits for a workflow or a job to reach a state.
const WITHIN: Duration = Duration::from_secs(30);

/// An echo task node.
fn echo(message: &str) -> Value {
    json!({"task": "echo", "args": {"message": message}})
}

/// An echo node that fails its only attempt.
fn failing(message: &str) -> Value {
    json!({"task": "echo", "args": {"message": message, "fail": "boom"}, "max_attempts": 1})
}

/// Submits `body` (asserting 201); answers the workflow as created.
async fn submit(env: &TestEnv, body: &Value) -> Value {
    let (s, w) = env.post("/v1/workflows", body).await;
    assert_eq!(s, 201, "{body} → {w}");
    w
}

/// Polls `GET /v1/workflows/{id}` until `done(view)`; answers the view.
async fn wait_workflow(env: &TestEnv, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let (s, w) = env.get(&format!("/v1/workflows/{id}")).await;
        assert_eq!(s, 200, "{w}");
        if done(&w) {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "workflow {id} not there in {WITHIN:?}: {w}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the workflow is over (not `running`).
async fn wait_over(env: &TestEnv, id: &str) -> Value {
    wait_workflow(env, id, |w| w["state"] != "running").await
}

/// Each node's job, once final.
async fn node_jobs(env: &TestEnv, w: &Value) -> Vec<Value> {
    let mut jobs = Vec::new();
    for n in w["nodes"].as_array().unwrap() {
        jobs.push(env.wait_final(n["job_id"].as_str().unwrap(), WITHIN).await);
    }
    jobs
}

/// Each node's state, in index order.
fn node_states(w: &Value) -> Vec<&str> {
    w["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_chain_passes_each_result_to_the_next_step() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);

    let body = json!({"name": "three steps", "root": {"chain": [echo("a"), echo("b"), echo("c")]}});
    let res = env
        .http()
        .post(env.url("/v1/workflows"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/workflows/{id}"));
    assert_eq!(created["name"], "three steps");
    assert_eq!(created["on_failure"], "stop");
    assert_eq!(created["tenant"], "default");
    let paths: Vec<&str> = created["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["root.chain[0]", "root.chain[1]", "root.chain[2]"]);
    let deps: Vec<&Value> = created["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["deps"])
        .collect();
    assert_eq!(deps, [&json!([]), &json!([0]), &json!([1])]);
    // Only the first step waits for nothing; the others wait.
    let states = node_states(&created);
    assert!(
        states[0] != "waiting" && states[1..] == ["waiting", "waiting"],
        "{created}"
    );

    let done = wait_over(&env, id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"], json!({"succeeded": 3}), "{done}");
    assert!(done["finished_at_ms"].as_i64().unwrap() >= done["created_at_ms"].as_i64().unwrap());
    let jobs = node_jobs(&env, &done).await;
    for (job, message) in jobs.iter().zip(["a", "b", "c"]) {
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["kind"], "echo");
        assert_eq!(job["result"]["message"], message, "{job}");
    }
    assert!(jobs[0]["args"].get("input").is_none(), "{}", jobs[0]);
    assert!(jobs[0]["result"].get("input").is_none(), "{}", jobs[0]);
    // Each step's input is the previous step's result.
    assert_eq!(jobs[1]["args"]["input"], jobs[0]["result"]);
    assert_eq!(jobs[1]["result"]["input"], jobs[0]["result"]);
    assert_eq!(jobs[2]["result"]["input"], jobs[1]["result"]);
    // The workflow's result: the chain's last step's.
    assert_eq!(done["result"], jobs[2]["result"], "{done}");

    // Listed, newest first, without nodes.
    let second = submit(&env, &json!({"root": echo("later")})).await;
    let (s, list) = env.get("/v1/workflows").await;
    assert_eq!(s, 200, "{list}");
    let ids: Vec<&str> = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second["id"].as_str().unwrap(), id], "{list}");
    assert!(list["workflows"][1].get("nodes").is_none(), "{list}");
    let (_, one) = env.get("/v1/workflows?limit=1").await;
    assert_eq!(one["workflows"].as_array().unwrap().len(), 1, "{one}");
    for bad in ["0", "101"] {
        let (s, b) = env.get(&format!("/v1/workflows?limit={bad}")).await;
        assert_eq!((s, b["field"].as_str()), (422, Some("limit")), "{b}");
    }
    for bad in ["limit=x", "colour=red"] {
        let (s, b) = env.get(&format!("/v1/workflows?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
}

#[tokio::test]
async fn a_chord_body_gets_every_member_result_in_order() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);

    let members: Vec<Value> = (0..5).map(|i| echo(&format!("m{i}"))).collect();
    let created = submit(
        &env,
        &json!({"root": {"chord": {"header": members, "body": echo("body")}}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["nodes"][5]["path"], "root.chord.body");
    assert_eq!(created["nodes"][5]["deps"], json!([0, 1, 2, 3, 4]));

    let done = wait_over(&env, id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"], json!({"succeeded": 6}), "{done}");
    let jobs = node_jobs(&env, &done).await;
    let results: Vec<Value> = jobs[..5].iter().map(|j| j["result"].clone()).collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["message"], format!("m{i}"), "{r}");
    }
    let body = &jobs[5];
    assert_eq!(body["result"]["message"], "body", "{body}");
    assert_eq!(body["result"]["input"], Value::from(results), "{body}");
    assert_eq!(done["result"], body["result"], "{done}");
}

#[tokio::test]
async fn a_thousand_member_chord_is_taken_in_one_request() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    // No worker: the members wait in their queue.
    let members: Vec<Value> = (0..1000)
        .map(|i| echo(&format!("member {i} of the chord")))
        .collect();
    let body = json!({"root": {"chord": {"header": members, "body": echo("sum")}}});
    assert!(body.to_string().len() > 55_000, "about 60 KB");
    let created = submit(&env, &body).await;
    assert_eq!(
        created["counts"],
        json!({"queued": 1000, "waiting": 1}),
        "{}",
        created["counts"]
    );
    assert_eq!(created["nodes"].as_array().unwrap().len(), 1001);
    let (_, echo_queue) = env.queue("echo").await;
    assert_eq!(echo_queue["pending"], 1000, "{echo_queue}");
}

/// What a refused submission answers: status, error code and field.
type Refusal = (u16, &'static str, Option<&'static str>);

#[tokio::test]
async fn refused_workflows_name_the_json_path_and_store_nothing() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;

    let root = |node: Value| json!({ "root": node });
    let chain = |steps: Value| root(json!({ "chain": steps }));
    let workflow = |field: &'static str| (422, "invalid_workflow", Some(field));
    let args = |field: &'static str| (422, "invalid_args", Some(field));
    let cases: Vec<(Value, Refusal)> = vec![
        (json!([echo("a")]), (422, "invalid_workflow", None)),
        (json!("root"), (422, "invalid_workflow", None)),
        (json!({}), workflow("root")),
        (json!({"root": echo("a"), "colour": 1}), workflow("colour")),
        (
            json!({"root": echo("a"), "on_failure": "sometimes"}),
            workflow("on_failure"),
        ),
        (
            json!({"root": echo("a"), "name": "n".repeat(201)}),
            workflow("name"),
        ),
        (chain(json!([])), workflow("root.chain")),
        (root(json!({"group": []})), workflow("root")),
        (root(json!({"spin": [echo("a")]})), workflow("root")),
        (chain(json!([echo("a"), 7])), workflow("root.chain[1]")),
        (root(json!({"task": "Not A Task"})), workflow("root.task")),
        (
            root(json!({"task": "echo", "args": {"message": "a"}, "max_attempts": 0})),
            workflow("root.max_attempts"),
        ),
        (
            root(json!({"task": "echo", "args": {"message": "a"}, "max_attempts": 101})),
            workflow("root.max_attempts"),
        ),
        // A node that gets its upstream results: its args are an object
        // without the input argument.
        (
            chain(json!([echo("a"), {"task": "echo", "args": [1]}])),
            workflow("root.chain[1].args"),
        ),
        (
            chain(json!([echo("a"), {"task": "echo", "args": {"message": "b", "input": 1}}])),
            workflow("root.chain[1].args.input"),
        ),
        // An input argument the task does not take (echo's arguments are
        // closed): refused now, not when the node's turn comes.
        (
            chain(
                json!([echo("a"), {"task": "echo", "args": {"message": "b"}, "input": "inputs"}]),
            ),
            workflow("root.chain[1].input"),
        ),
        // Tasks: known, open to clients.
        (
            chain(json!([{"task": "nope"}, echo("b")])),
            (404, "unknown_task", Some("root.chain[0].task")),
        ),
        (
            root(json!({"group": [echo("a"), {"task": "webhook", "args": {}}]})),
            (422, "internal_kind", Some("root.group[1].task")),
        ),
        // Arguments, checked as a job's, named under the node.
        (
            root(json!({"group": [echo("a"), {"task": "echo", "args": {}}]})),
            args("root.group[1].args.message"),
        ),
        (
            root(json!({"task": "echo", "args": "hi"})),
            (422, "invalid_args", Some("root.args")),
        ),
        (
            root(json!({"chord": {"header": [echo("a")],
                "body": {"task": "echo", "args": {"message": "b", "colour": 1}}}})),
            args("root.chord.body.args.colour"),
        ),
        // The input argument's value is not known yet, but the others are
        // checked as usual.
        (
            chain(json!([echo("a"), {"task": "echo", "args": {"message": 5}}])),
            args("root.chain[1].args.message"),
        ),
        (
            chain(json!([echo("a"), {"task": "echo", "args": {"message": "a\u{0}b"}}])),
            args("root.chain[1].args.message"),
        ),
    ];
    for (body, (status, code, field)) in &cases {
        let (s, b) = env.post("/v1/workflows", body).await;
        assert_eq!(
            (s, b["error"].as_str(), b["field"].as_str()),
            (*status, Some(*code), *field),
            "{body} → {b}"
        );
        assert!(b["detail"].as_str().is_some_and(|d| !d.is_empty()), "{b}");
    }
    let (_, b) = env
        .post("/v1/workflows", &chain(json!([{"task": "nope"}])))
        .await;
    assert!(
        b["known"].as_array().unwrap().contains(&json!("echo")),
        "{b}"
    );

    // Not JSON at all.
    let res = env
        .http()
        .post(env.url("/v1/workflows"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // Nothing refused was stored, and no job was queued.
    let (_, list) = env.get("/v1/workflows").await;
    assert_eq!(list, json!({"workflows": []}));
    let (_, jobs) = env.get("/v1/jobs?queue=echo").await;
    assert_eq!(jobs["jobs"], json!([]), "{jobs}");

    // Unknown and malformed ids.
    let unknown = uuid::Uuid::now_v7();
    for (method, path) in [
        ("GET", format!("/v1/workflows/{unknown}")),
        ("POST", format!("/v1/workflows/{unknown}/cancel")),
    ] {
        let (s, b) = match method {
            "GET" => env.get(&path).await,
            _ => env.post(&path, &json!({})).await,
        };
        assert_eq!(
            (s, b["error"].as_str()),
            (404, Some("workflow_not_found")),
            "{method} {path}: {b}"
        );
    }
    let (s, b) = env.get("/v1/workflows/not-a-uuid").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_id")), "{b}");
    let (s, b) = env
        .post("/v1/workflows/not-a-uuid/cancel", &json!({}))
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_id")), "{b}");

    // A declared task whose schema requires the input argument: the node
    // that gets it passes (its value comes at run time), its other
    // arguments are still checked, and a node with no upstream must give it.
    let queue = hopper_queue::QueueClient::connect(&env.config())
        .await
        .unwrap();
    let mut sum = TaskDefinition::new("sum".parse().unwrap());
    sum.schema = Some(json!({
        "type": "object",
        "required": ["items", "scale"],
        "properties": {"items": {"type": "array"}, "scale": {"type": "number"}}
    }));
    sum.schema_digest = sum.schema_digest();
    queue.declare(&sum).await.unwrap();
    let chord =
        |body: Value| root(json!({"chord": {"header": [echo("a"), echo("b")], "body": body}}));
    let created = submit(
        &env,
        &chord(json!({"task": "sum", "args": {"scale": 2}, "input": "items"})),
    )
    .await;
    assert_eq!(created["nodes"][2]["task"], "sum", "{created}");
    for (body, field) in [
        (
            chord(json!({"task": "sum", "args": {}, "input": "items"})),
            "root.chord.body.args.scale",
        ),
        (
            chord(json!({"task": "sum", "args": {"scale": "x"}, "input": "items"})),
            "root.chord.body.args.scale",
        ),
        (
            root(json!({"task": "sum", "args": {"scale": 2}})),
            "root.args.items",
        ),
    ] {
        let (s, b) = env.post("/v1/workflows", &body).await;
        assert_eq!(
            (s, b["error"].as_str(), b["field"].as_str()),
            (422, Some("invalid_args"), Some(field)),
            "{body} → {b}"
        );
    }
}

#[tokio::test]
async fn a_workflow_over_the_tenants_cap_is_refused_whole() {
    let mut env = TestEnv::new(&[("HOPPER_MAX_PENDING_PER_TENANT", "5")]);
    env.start_api().await;
    let five: Vec<Value> = (0..5).map(|i| echo(&format!("m{i}"))).collect();
    let (s, b) = env
        .post(
            "/v1/workflows",
            &json!({"root": {"chord": {"header": five, "body": echo("body")}}}),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (429, Some("tenant_queue_full")),
        "6 echo jobs over a cap of 5: {b}"
    );
    assert!(
        b["detail"].as_str().unwrap().contains("over its cap of 5"),
        "{b}"
    );
    let (_, list) = env.get("/v1/workflows").await;
    assert_eq!(list["workflows"], json!([]), "nothing stored: {list}");
    let (_, echo_queue) = env.queue("echo").await;
    assert_eq!(echo_queue["pending"], 0, "nothing queued: {echo_queue}");
    // Within the cap it is taken.
    let four: Vec<Value> = (0..4).map(|i| echo(&format!("m{i}"))).collect();
    submit(
        &env,
        &json!({"root": {"chord": {"header": four, "body": echo("body")}}}),
    )
    .await;
}

#[tokio::test]
async fn a_tenant_sees_and_cancels_only_its_own_workflows() {
    let mut env = TestEnv::new(&[("HOPPER_AUTH", "keys")]);
    env.start_api().await;
    let a = env.create_key("tenant-a", "submit,read").await;
    let a_read = env.create_key("tenant-a", "read").await;
    let b = env.create_key("tenant-b", "submit,read,admin").await;
    let operator = env.create_key("default", "read,admin").await;

    env.use_key(Some(&a_read));
    let body = json!({"root": {"chain": [echo("a"), echo("b")]}});
    let (s, _) = env.post("/v1/workflows", &body).await;
    assert_eq!(s, 403, "submitting needs the submit scope");
    env.use_key(Some(&a));
    let created = submit(&env, &body).await;
    assert_eq!(created["tenant"], "tenant-a");
    let id = created["id"].as_str().unwrap();
    let first_job = created["nodes"][0]["job_id"].as_str().unwrap();
    let (s, job) = env.get(&format!("/v1/jobs/{first_job}")).await;
    assert_eq!(
        (s, job["tenant"].as_str()),
        (200, Some("tenant-a")),
        "{job}"
    );
    env.use_key(Some(&a_read));
    let (s, shown) = env.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!((s, &shown["id"]), (200, &created["id"]), "{shown}");
    let (s, _) = env
        .post(&format!("/v1/workflows/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 403, "cancelling needs the submit scope");

    // Another tenant, even with admin: as if it did not exist.
    env.use_key(Some(&b));
    let (_, list) = env.get("/v1/workflows").await;
    assert_eq!(list, json!({"workflows": []}));
    let (s, body) = env.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (404, Some("workflow_not_found"))
    );
    let (s, body) = env
        .post(&format!("/v1/workflows/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (404, Some("workflow_not_found"))
    );
    assert!(!body.to_string().contains("tenant-a"), "{body}");

    // The operator's admin reaches it by id.
    env.use_key(Some(&operator));
    let (s, shown) = env.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!(
        (s, shown["tenant"].as_str()),
        (200, Some("tenant-a")),
        "{shown}"
    );

    // Untouched by the others: still running.
    env.use_key(Some(&a));
    let (_, list) = env.get("/v1/workflows").await;
    assert_eq!(list["workflows"][0]["state"], "running", "{list}");
}

#[tokio::test]
async fn cancelling_stops_the_running_job_and_skips_the_rest() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);

    let slow = json!({"task": "echo", "args": {"message": "slow", "sleep_ms": 30_000}});
    let created = submit(
        &env,
        &json!({"root": {"chain": [slow, echo("b"), echo("c")]}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let first_job = created["nodes"][0]["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + WITHIN;
    loop {
        let (_, job) = env.get(&format!("/v1/jobs/{first_job}")).await;
        if job["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the first step never ran: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (s, r) = env
        .post(&format!("/v1/workflows/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r,
        json!({"id": id, "state_before": "running", "state": "cancelled"})
    );
    let job = env.wait_final(&first_job, WITHIN).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let done = wait_workflow(&env, id, |w| w["finished_at_ms"].is_i64()).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(
        node_states(&done),
        ["cancelled", "skipped", "skipped"],
        "{done}"
    );
    assert!(done.get("result").is_none(), "{done}");
    // The skipped steps never had a job.
    let later = done["nodes"][1]["job_id"].as_str().unwrap();
    let (s, _) = env.get(&format!("/v1/jobs/{later}")).await;
    assert_eq!(s, 404);

    // Cancelling again changes nothing.
    let (s, r) = env
        .post(&format!("/v1/workflows/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["state_before"], "cancelled");
    assert_eq!(r["state"], "cancelled");
}

#[tokio::test]
async fn on_failure_stop_fails_the_workflow_at_the_first_failure() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);

    let slow = json!({"task": "echo", "args": {"message": "slow", "sleep_ms": 30_000}});
    let created = submit(
        &env,
        &json!({"root": {"chain": [{"group": [failing("x"), slow]}, echo("after")]}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let done = wait_workflow(&env, id, |w| w["finished_at_ms"].is_i64()).await;
    assert_eq!(done["state"], "failed", "{done}");
    // The failed member is dead, its running sibling cancelled, the step
    // after them never run.
    assert_eq!(
        node_states(&done),
        ["dead", "cancelled", "skipped"],
        "{done}"
    );
    assert!(
        done["nodes"][0]["error"].as_str().unwrap().contains("boom"),
        "{done}"
    );
    assert!(done.get("result").is_none(), "{done}");
    let dead = env
        .wait_final(done["nodes"][0]["job_id"].as_str().unwrap(), WITHIN)
        .await;
    assert_eq!(
        (dead["state"].as_str(), dead["attempts"].as_u64()),
        (Some("dead"), Some(1))
    );
    let sibling = env
        .wait_final(done["nodes"][1]["job_id"].as_str().unwrap(), WITHIN)
        .await;
    assert_eq!(sibling["state"], "cancelled", "{sibling}");
}

#[tokio::test]
async fn on_failure_continue_gives_the_body_the_failure_in_its_place() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);

    let created = submit(
        &env,
        &json!({
            "on_failure": "continue",
            "root": {"chord": {"header": [echo("a"), failing("b"), echo("c")], "body": echo("sum")}}
        }),
    )
    .await;
    assert_eq!(created["on_failure"], "continue");
    let id = created["id"].as_str().unwrap();
    let done = wait_over(&env, id).await;
    // Over, with one failure: failed, but every other node ran.
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(
        node_states(&done),
        ["succeeded", "dead", "succeeded", "succeeded"]
    );
    assert_eq!(done["counts"], json!({"dead": 1, "succeeded": 3}), "{done}");
    let jobs = node_jobs(&env, &done).await;
    let input = &jobs[3]["result"]["input"];
    assert_eq!(input[0], jobs[0]["result"], "{input}");
    assert_eq!(input[2], jobs[2]["result"], "{input}");
    let failed = &input[1]["failed"];
    assert_eq!(failed["state"], "dead", "{input}");
    assert_eq!(failed["job_id"], jobs[1]["id"], "{input}");
    assert!(
        failed["error"].as_str().unwrap().contains("boom"),
        "{input}"
    );
}
