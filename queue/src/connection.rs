//! Connections to Redis: one server, or a Redis Cluster.
//!
//! `REDIS_URL` names one server (`redis://`, `rediss://`) or a cluster
//! (`redis+cluster://host:port,host:port,…`, `rediss+cluster://…` for TLS;
//! any node will do, the client learns the rest). [`Redis`] opens either and
//! hands out [`RedisConn`]s, which every part of Hopper uses the same way
//! (`query_async`, `invoke_async`): on a cluster a command or script goes to
//! the node owning its first key's slot, MOVED/ASK are followed, NOSCRIPT
//! reloads the script, and a failover is ridden out by the cluster client's
//! retries. Every key of a queue shares one hash tag (`keys.rs`), so each
//! script and each pipeline on a queue stays in one slot.
//!
//! A URL naming a cluster node as one server, or a single server as a
//! cluster, is refused at start-up with a message saying which.
//!
//! While an operator moves a slot to another master (live resharding,
//! `scripts/cluster-spread`), a command on it is answered `ASK` (its keys
//! moved: the client asks the new master) or `TRYAGAIN` (a script's keys
//! are split between the two, or one it declares does not exist yet —
//! Hopper's scripts declare such keys, so they get `TRYAGAIN` for as long
//! as the slot moves). Either answer means the command did not run, so it
//! is safe to send again; the cluster client does, but only for a few
//! seconds in all (`retries` below), and a slot of many keys takes longer
//! to move. A command on a cluster connection is therefore sent again for up
//! to [`retry_policy::SLOT_MOVE_PATIENCE`] while it is refused so ([`SlotMoveBackoff`]).
//! A pipeline is not (one of its commands may have run before another was
//! refused): the queue's scripts are pipelined one `EVALSHA` per pipeline
//! on a cluster (`QueueClient::eval_durably`), and those are retried there —
//! except with the durability option on, where a batch stays one pipeline
//! ending in one `WAIT` (see there).

use std::time::Duration;

use hopper_shared::retry_policy;

use redis::{
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

use hopper_shared::tls::TlsFiles;
use redis::{ClientTlsConfig, TlsCertificates};

use crate::QueueError;

/// The scheme suffix that marks a cluster URL (`redis+cluster://`).
const CLUSTER_SCHEMES: [&str; 2] = ["redis+cluster://", "rediss+cluster://"];

/// Whether `url` names a Redis Cluster (`redis+cluster://…`).
pub fn is_cluster_url(url: &str) -> bool {
    CLUSTER_SCHEMES.iter().any(|s| url.starts_with(s))
}

/// The node URLs of a cluster URL: `redis+cluster://[user:pass@]a:1,b:2`
/// gives `redis://[user:pass@]a:1` and `redis://[user:pass@]b:2`.
pub fn cluster_nodes(url: &str) -> Result<Vec<String>, QueueError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss://", rest)
    } else if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis://", rest)
    } else {
        return Err(QueueError::Config(format!(
            "not a cluster URL (redis+cluster://host:port,…): {}",
            hopper_shared::config::redact_url(url)
        )));
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}{auth}{h}"))
        .collect();
    if nodes.is_empty() {
        return Err(QueueError::Config(format!(
            "a cluster URL names at least one node (redis+cluster://host:port,…): {}",
            hopper_shared::config::redact_url(url)
        )));
    }
    Ok(nodes)
}

/// A Redis to connect to: one server or a cluster.
#[derive(Clone)]
pub enum Redis {
    /// One server.
    Single(Box<Client>),
    /// A Redis Cluster.
    Cluster(Box<ClusterClient>, Vec<String>),
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Redis::Single(_) => f.write_str("Redis::Single"),
            Redis::Cluster(..) => f.write_str("Redis::Cluster"),
        }
    }
}

impl Redis {
    /// The Redis `url` names (not connected yet), over TLS with `tls`'s
    /// files for a `rediss://` URL (the system's roots when it names no CA).
    pub fn open(url: &str, tls: &TlsFiles) -> Result<Self, QueueError> {
        let certs = if tls.is_empty() {
            None
        } else {
            let pem = tls
                .read()
                .map_err(|e| QueueError::Config(format!("Redis TLS (HOPPER_REDIS_TLS_*): {e}")))?;
            Some(TlsCertificates {
                client_tls: pem.client.map(|(client_cert, client_key)| ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
                root_cert: pem.ca,
            })
        };
        if is_cluster_url(url) {
            let nodes = cluster_nodes(url)?;
            let mut builder = ClusterClient::builder(nodes.clone())
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(5))
                .retries(8)
                .min_retry_wait(50)
                .max_retry_wait(1_000);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            Ok(Redis::Cluster(Box::new(builder.build()?), nodes))
        } else {
            Ok(Redis::Single(Box::new(match certs {
                Some(certs) => Client::build_with_tls(url, certs)?,
                None => Client::open(url)?,
            })))
        }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(..))
    }

    /// The shared connection: reconnects by itself, cheap to clone. Checks
    /// that the server is what the URL says (one server, or a cluster).
    pub async fn shared(&self) -> Result<RedisConn, QueueError> {
        let mut conn = match self {
            Redis::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(3);
                RedisConn::Managed(client.get_connection_manager_with_config(config).await?)
            }
            Redis::Cluster(client, nodes) => {
                refuse_a_single_server(nodes).await?;
                RedisConn::Cluster(client.get_async_connection().await.map_err(|e| {
                    if e.to_string().contains("cluster support disabled") {
                        not_a_cluster()
                    } else {
                        e.into()
                    }
                })?)
            }
        };
        // One server answers a string; a cluster, a map of its masters' answers.
        let info: Value = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn)
            .await?;
        let cluster = says_cluster_enabled(&info);
        match (self.is_cluster(), cluster) {
            (false, true) => Err(QueueError::Config(
                "REDIS_URL names a node of a Redis Cluster as a single server: name the \
                 cluster as redis+cluster://host:port,host:port,…"
                    .into(),
            )),
            (true, false) => Err(not_a_cluster()),
            _ => Ok(conn),
        }
    }

    /// A connection of its own for blocking commands (BLPOP), whose
    /// response timeout allows a block of `block`.
    pub async fn dedicated(&self, block: Duration) -> Result<RedisConn, QueueError> {
        let timeout = block + Duration::from_secs(5);
        match self {
            Redis::Single(client) => {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(timeout));
                Ok(RedisConn::Multiplexed(
                    client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?,
                ))
            }
            Redis::Cluster(client, _) => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(timeout);
                Ok(RedisConn::Cluster(
                    client.get_async_connection_with_config(cfg).await?,
                ))
            }
        }
    }
}

/// A cluster URL naming a server that is not a cluster node.
fn not_a_cluster() -> QueueError {
    QueueError::Config(
        "REDIS_URL names a cluster (redis+cluster://) but the server is not a cluster node \
         (cluster_enabled:0): use redis://host:port"
            .into(),
    )
}

/// Refuses at once a cluster URL whose first answering node is one server
/// (the cluster client would retry its slot discovery for minutes first).
/// Nodes that cannot be reached or read in the clear are left to the
/// cluster client.
async fn refuse_a_single_server(nodes: &[String]) -> Result<(), QueueError> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    for node in nodes {
        let Ok(client) = Client::open(node.as_str()) else {
            continue;
        };
        let Ok(mut conn) = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
        else {
            continue;
        };
        let Ok(info) = redis::cmd("INFO")
            .arg("cluster")
            .query_async::<Value>(&mut conn)
            .await
        else {
            continue;
        };
        return if says_cluster_enabled(&info) {
            Ok(())
        } else {
            Err(not_a_cluster())
        };
    }
    Ok(())
}

/// Whether an `INFO cluster` answer (or any of a cluster's answers) says
/// `cluster_enabled:1`.
fn says_cluster_enabled(info: &Value) -> bool {
    match info {
        Value::BulkString(b) => String::from_utf8_lossy(b)
            .lines()
            .any(|l| l.trim() == "cluster_enabled:1"),
        Value::VerbatimString { text, .. } => text.lines().any(|l| l.trim() == "cluster_enabled:1"),
        Value::SimpleString(s) => s.lines().any(|l| l.trim() == "cluster_enabled:1"),
        Value::Map(pairs) => pairs.iter().any(|(_, v)| says_cluster_enabled(v)),
        Value::Array(items) => items.iter().any(says_cluster_enabled),
        _ => false,
    }
}

/// Whether `e` says the command's slot is moving to another master, so the
/// command did not run and may be sent again.
pub fn slot_moving(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::TryAgain) | ErrorKind::Server(ServerErrorKind::Ask)
    )
}

/// The waits between the tries of one command whose slot is moving
/// (`retry_policy::slot_moving`: 20 ms doubling to 500 ms, for
/// [`retry_policy::SLOT_MOVE_PATIENCE`] in all).
#[derive(Debug)]
pub(crate) struct SlotMoveBackoff {
    delays: retry_policy::ExponentialBackoff,
}

impl SlotMoveBackoff {
    pub(crate) fn new() -> Self {
        Self {
            delays: retry_policy::BackoffBuilder::build(retry_policy::slot_moving()),
        }
    }

    /// When `e` says the slot is moving and patience is left: waits, then
    /// answers true (send it again). Else false (give `e` to the caller).
    pub(crate) async fn again(&mut self, e: &redis::RedisError) -> bool {
        if !slot_moving(e) {
            return false;
        }
        let Some(pause) = self.delays.next() else {
            return false;
        };
        tracing::debug!(error = %e, "slot moving; sending the command again");
        tokio::time::sleep(pause).await;
        true
    }
}

/// A connection to one server or to a cluster (cheap to clone; clones
/// share it).
#[derive(Clone)]
pub enum RedisConn {
    /// One server, reconnecting by itself.
    Managed(ConnectionManager),
    /// One server, one connection (blocking commands).
    Multiplexed(MultiplexedConnection),
    /// A cluster: a connection per node, routed by slot.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Runs `pipe` and decodes its replies as `T`, for a pipeline whose
    /// commands may name keys of different slots (jobs of several queues,
    /// say) and that ignores no reply: one round trip on one server; on a
    /// cluster, whose pipelines must stay in one slot, each command goes to
    /// its own node, all at once, each sent again while its slot moves
    /// (through this type's `ConnectionLike`, as every single command).
    pub async fn query_spread<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            RedisConn::Cluster(_) => {
                let calls = pipe.cmd_iter().map(|cmd| {
                    let mut c = self.clone();
                    async move { cmd.query_async::<Value>(&mut c).await }
                });
                let replies = futures::future::try_join_all(calls).await?;
                Ok(redis::from_redis_value(Value::Array(replies))?)
            }
            _ => pipe.query_async(&mut self.clone()).await,
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Managed(c) => c.req_packed_command(cmd),
            RedisConn::Multiplexed(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => Box::pin(async move {
                // A refused command did not run: send it again while its
                // slot moves (see the module docs).
                let mut backoff = SlotMoveBackoff::new();
                loop {
                    match c.req_packed_command(cmd).await {
                        Err(e) if backoff.again(&e).await => continue,
                        other => return other,
                    }
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Managed(c) => c.get_db(),
            RedisConn::Multiplexed(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_lists_its_nodes_with_their_credentials() {
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001/").unwrap(),
            ["redis://u:p@10.0.0.1:7000", "redis://u:p@10.0.0.2:7001"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://a:1").unwrap(),
            ["rediss://a:1"]
        );
        assert!(cluster_nodes("redis+cluster://").is_err());
        assert!(cluster_nodes("redis://a:1").is_err());
        assert!(is_cluster_url("redis+cluster://a:1"));
        assert!(!is_cluster_url("redis://a:1"));
    }

    #[test]
    fn a_password_stays_out_of_messages() {
        let e = cluster_nodes("redis+cluster://u:secret@").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
