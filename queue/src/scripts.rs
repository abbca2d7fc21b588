//! The Lua scripts of the queue, loaded once and run by SHA (redis-rs falls
//! back to EVAL and reloads them after a Redis restart).
//!
//! Each script is `lua/prelude.lua` (what more than one script does, written
//! once: Redis' clock, the fence, history, tenant counts, re-queueing,
//! finishing a job as cancelled or dead, retention, pushing a job) followed
//! by the script's own file. They are plain scripts rather than a Redis 7
//! function library (`FUNCTION LOAD`): a library would have to be loaded on
//! every node of a cluster, and again after a restart or failover, before
//! the first call; a script a node lacks is loaded by the call that finds
//! it missing.
//!
//! The key rule: every key a script touches is declared in KEYS, never
//! built inside Lua (a cluster-aware proxy, or a future Redis, refuses a
//! script that does). Every key of one queue shares its hash tag, so a
//! script stays in one slot either way; the rule is about declaring them.
//! Where a script acts on ids the caller names (ack, release, dead, …) the
//! caller passes their job hashes in KEYS. Where the ids are found in Redis
//! (a dead worker's in-flight set, entries past retention, the oldest
//! pending job) the work is split: the caller reads them first (a plain
//! read, or a script touching only queue-level keys), then the script that
//! acts gets their keys in KEYS and checks again, atomically, what the
//! reading found (still a member, still that old); where the reading went
//! stale it refuses and the caller reads again (`deregister.lua`,
//! `recover.lua`; `push.lua` when a unique job's holder is not the one
//! named), or leaves the rest for its next call (`trim.lua`, the
//! retention of `ack.lua`, whose next call forgets what this one found).
//!
//! Strict mode (`HOPPER_LUA_STRICT_KEYS=1` in the process, read once; set
//! by `scripts/test`): each script runs behind `lua/strict_keys.lua`, which
//! wraps `redis.call` and `redis.pcall` and raises
//! `undeclared key <k> in <script>` for a key not in KEYS (and an error for
//! a command it has not classified). Without the variable the scripts are
//! their files and keep their SHA.
//!
//! The claim is the hot path, and two steps, one round trip more per batch
//! (never per job): `claim.lua` takes ids out of the ready structures
//! (due, parked, pending lists) into the worker's in-flight set touching
//! only queue-level keys; `claim_start.lua` gets their job hashes and
//! starts, re-queues, parks or expires each, atomically, while the id is
//! still in the set. An id taken and not started is never lost: whoever
//! hands the set back (recover, deregister, reconcile) re-queues it.

use std::sync::LazyLock;

use redis::Script;

/// Every script of the queue.
pub(crate) struct Scripts {
    pub push: Script,
    pub push_batch: Script,
    pub claim: Script,
    pub claim_start: Script,
    pub ack: Script,
    pub fail: Script,
    pub recover: Script,
    pub release: Script,
    pub stats: Script,
    pub cancel: Script,
    pub dead: Script,
    pub heartbeat: Script,
    pub deregister: Script,
    pub reconcile: Script,
    pub held: Script,
    pub trim: Script,
    pub declare: Script,
    pub progress: Script,
    pub intake: Script,
    pub outbox_done: Script,
    pub fire: Script,
    pub schedule_set: Script,
    pub workflow_create: Script,
    pub workflow_step: Script,
    pub workflow_queued: Script,
    pub workflow_cancel: Script,
    pub partitions: Script,
}

const PRELUDE: &str = include_str!("../lua/prelude.lua");
const WORKFLOW_LIB: &str = include_str!("../lua/workflow_lib.lua");
const STRICT_KEYS: &str = include_str!("../lua/strict_keys.lua");

/// Whether this process runs the queue's scripts in strict mode
/// (`HOPPER_LUA_STRICT_KEYS=1`, read once): each script checks that every
/// key it touches is declared in KEYS (`lua/strict_keys.lua`).
pub(crate) static STRICT: LazyLock<bool> =
    LazyLock::new(|| std::env::var("HOPPER_LUA_STRICT_KEYS").is_ok_and(|v| v == "1"));

/// The script `name` made of `parts` (the prelude, a library, its file),
/// in strict mode when the process asked for it.
fn build(name: &str, parts: &[&str]) -> Script {
    let text = parts.concat();
    if *STRICT {
        strict_keys_script(name, &text)
    } else {
        Script::new(&text)
    }
}

/// `text` (a whole script) in strict mode: `lua/strict_keys.lua` in front
/// of it, so that a command naming a key not in KEYS raises
/// `undeclared key <key> in <name>`, and a command the checker does not
/// know raises `unclassified command <cmd> in <name>`. What strict mode runs
/// for each queue script, exposed so that tests can prove the check on a
/// script of their own.
pub fn strict_keys_script(name: &str, text: &str) -> Script {
    debug_assert!(!name.contains(['\'', '\\', '\n']));
    Script::new(&format!(
        "local STRICT_SCRIPT = '{name}'\n{STRICT_KEYS}{text}"
    ))
}

macro_rules! script {
    ($name:literal) => {
        build(
            $name,
            &[PRELUDE, include_str!(concat!("../lua/", $name, ".lua"))],
        )
    };
}

/// A workflow script: the prelude, `lua/workflow_lib.lua`, then the file.
macro_rules! workflow_script {
    ($name:literal) => {
        build(
            $name,
            &[
                PRELUDE,
                WORKFLOW_LIB,
                include_str!(concat!("../lua/", $name, ".lua")),
            ],
        )
    };
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    push: script!("push"),
    push_batch: script!("push_batch"),
    claim: script!("claim"),
    claim_start: script!("claim_start"),
    ack: script!("ack"),
    fail: script!("fail"),
    recover: script!("recover"),
    release: script!("release"),
    stats: script!("stats"),
    cancel: script!("cancel"),
    dead: script!("dead"),
    heartbeat: script!("heartbeat"),
    deregister: script!("deregister"),
    reconcile: script!("reconcile"),
    held: script!("held"),
    trim: script!("trim"),
    declare: script!("declare"),
    progress: script!("progress"),
    intake: script!("intake"),
    outbox_done: script!("outbox_done"),
    fire: script!("fire"),
    schedule_set: script!("schedule_set"),
    workflow_create: workflow_script!("workflow_create"),
    workflow_step: workflow_script!("workflow_step"),
    workflow_queued: workflow_script!("workflow_queued"),
    workflow_cancel: workflow_script!("workflow_cancel"),
    // Touches no job: needs nothing of the prelude.
    partitions: build("partitions", &[include_str!("../lua/partitions.lua")]),
});

/// The name (its file's stem) and SHA-1 — the hash `EVALSHA` and `SLOWLOG`
/// name it by — of every queue script: how a benchmark attributes Redis'
/// time to scripts.
pub fn script_hashes() -> Vec<(&'static str, String)> {
    let s = &*SCRIPTS;
    [
        ("push", &s.push),
        ("push_batch", &s.push_batch),
        ("claim", &s.claim),
        ("claim_start", &s.claim_start),
        ("ack", &s.ack),
        ("fail", &s.fail),
        ("recover", &s.recover),
        ("release", &s.release),
        ("stats", &s.stats),
        ("cancel", &s.cancel),
        ("dead", &s.dead),
        ("heartbeat", &s.heartbeat),
        ("deregister", &s.deregister),
        ("reconcile", &s.reconcile),
        ("held", &s.held),
        ("trim", &s.trim),
        ("declare", &s.declare),
        ("progress", &s.progress),
        ("intake", &s.intake),
        ("outbox_done", &s.outbox_done),
        ("fire", &s.fire),
        ("schedule_set", &s.schedule_set),
        ("workflow_create", &s.workflow_create),
        ("workflow_step", &s.workflow_step),
        ("workflow_queued", &s.workflow_queued),
        ("workflow_cancel", &s.workflow_cancel),
        ("partitions", &s.partitions),
    ]
    .into_iter()
    .map(|(name, script)| (name, script.get_hash().to_owned()))
    .collect()
}
