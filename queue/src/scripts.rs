//! The Lua scripts of the queue, loaded once and run by SHA (redis-rs falls
//! back to EVAL and reloads them after a Redis restart).

use std::sync::LazyLock;

use redis::Script;

/// Every script of the queue.
pub(crate) struct Scripts {
    pub push: Script,
    pub claim: Script,
    pub ack: Script,
    pub fail: Script,
    pub recover: Script,
    pub release: Script,
    pub stats: Script,
    pub cancel: Script,
    pub dead: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    push: Script::new(include_str!("../lua/push.lua")),
    claim: Script::new(include_str!("../lua/claim.lua")),
    ack: Script::new(include_str!("../lua/ack.lua")),
    fail: Script::new(include_str!("../lua/fail.lua")),
    recover: Script::new(include_str!("../lua/recover.lua")),
    release: Script::new(include_str!("../lua/release.lua")),
    stats: Script::new(include_str!("../lua/stats.lua")),
    cancel: Script::new(include_str!("../lua/cancel.lua")),
    dead: Script::new(include_str!("../lua/dead.lua")),
});
