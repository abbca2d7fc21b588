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

use std::sync::LazyLock;

use redis::Script;

/// Every script of the queue.
pub(crate) struct Scripts {
    pub push: Script,
    pub push_batch: Script,
    pub claim: Script,
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

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../lua/prelude.lua"),
            include_str!(concat!("../lua/", $file))
        ))
    };
}

/// A workflow script: the prelude, `lua/workflow_lib.lua`, then the file.
macro_rules! workflow_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../lua/prelude.lua"),
            include_str!("../lua/workflow_lib.lua"),
            include_str!(concat!("../lua/", $file))
        ))
    };
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    push: script!("push.lua"),
    push_batch: script!("push_batch.lua"),
    claim: script!("claim.lua"),
    ack: script!("ack.lua"),
    fail: script!("fail.lua"),
    recover: script!("recover.lua"),
    release: script!("release.lua"),
    stats: script!("stats.lua"),
    cancel: script!("cancel.lua"),
    dead: script!("dead.lua"),
    heartbeat: script!("heartbeat.lua"),
    deregister: script!("deregister.lua"),
    reconcile: script!("reconcile.lua"),
    held: script!("held.lua"),
    trim: script!("trim.lua"),
    declare: script!("declare.lua"),
    progress: script!("progress.lua"),
    intake: script!("intake.lua"),
    outbox_done: script!("outbox_done.lua"),
    fire: script!("fire.lua"),
    schedule_set: script!("schedule_set.lua"),
    workflow_create: workflow_script!("workflow_create.lua"),
    workflow_step: workflow_script!("workflow_step.lua"),
    workflow_queued: workflow_script!("workflow_queued.lua"),
    workflow_cancel: workflow_script!("workflow_cancel.lua"),
    // Touches no job: needs nothing of the prelude.
    partitions: Script::new(include_str!("../lua/partitions.lua")),
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
