//! A private 6-node Redis Cluster (3 masters, 3 replicas) for tests that
//! kill its nodes: the shared one on 7101-7106 (`scripts/setup
//! redis-cluster`) serves other tests and must stay up. Its nodes run on
//! free loopback ports (each with its cluster bus port, +10000, free too)
//! from a temporary directory, with AOF on and `cluster-node-timeout` 2 s
//! like the shared one (and `repl-diskless-sync-delay` 0, so a node that
//! comes back syncs as a replica at once); every process it started is
//! stopped by its pid and the directory removed when it is dropped.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long a node may be silent before the cluster fails it over.
pub const NODE_TIMEOUT_MS: u64 = 2_000;

/// One node: its port and the process we started there.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Six redis-server processes formed into one cluster.
pub struct PrivateCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

/// A port whose cluster bus port (+10000) is free too.
fn free_node_port() -> u16 {
    loop {
        let port = crate::free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli -p <port> <args>`: its stdout, `None` when it failed.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl PrivateCluster {
    /// Starts six nodes, forms the cluster (`redis-cli --cluster create`,
    /// one replica per master) and waits until every node says
    /// `cluster_state:ok`.
    pub fn start() -> Self {
        Self::start_with(3, 1)
    }

    /// [`Self::start`] with `masters` masters of `replicas` replicas each
    /// (`tests/tests/cluster_spread.rs`: 3 masters, none).
    pub fn start_with(masters: usize, replicas: usize) -> Self {
        let ports: Vec<u16> = (0..masters * (1 + replicas))
            .map(|_| free_node_port())
            .collect();
        let dir = std::env::temp_dir().join(format!("hopper-cluster-{}", ports[0]));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = Self {
            dir,
            nodes: ports
                .iter()
                .map(|&port| Node { port, child: None })
                .collect(),
        };
        for port in ports.clone() {
            cluster.up(port);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed (scripts/setup)");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_ok(&ports, Duration::from_secs(30));
        // `cluster_state:ok` comes before the replicas' first sync: wait for
        // every master's replica, or a WAIT at the start would fall short.
        let deadline = Instant::now() + Duration::from_secs(30);
        while ports
            .iter()
            .filter(|&&p| cluster.connected_replicas(p) >= replicas.min(1))
            .count()
            < masters
        {
            assert!(
                Instant::now() < deadline,
                "the replicas did not sync within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Its URL for Hopper (`redis+cluster://` and every node).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The ports of its nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Starts (or starts again, with its data and `nodes.conf`) the node on
    /// `port` and waits until it answers.
    pub fn up(&mut self, port: u16) {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("cluster node dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--appendonly", "yes", "--save", ""])
            // A node that comes back as a replica syncs at once (Redis' default
            // waits 5 s for more replicas to share one diskless transfer).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup)");
        self.node(port).child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(port, &["ping"]).as_deref().map(str::trim) != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "cluster node {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the node on `port` (no shutdown, no last AOF write).
    pub fn kill(&mut self, port: u16) {
        if let Some(mut child) = self.node(port).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Shuts every node down (`SHUTDOWN`: the AOF is complete) and waits
    /// for their processes: the whole cluster is down.
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            let _ = cli(node.port, &["shutdown"]);
            if let Some(mut child) = node.child.take() {
                let _ = child.wait();
            }
        }
    }

    /// Starts every node again with its data and waits until the cluster
    /// is ok.
    pub fn up_all(&mut self) {
        for port in self.ports() {
            self.up(port);
        }
        self.wait_ok(&self.ports(), Duration::from_secs(30));
    }

    fn node(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`, asked of any live node).
    pub fn slot(&self, key: &str) -> u16 {
        self.ports()
            .into_iter()
            .find_map(|p| cli(p, &["cluster", "keyslot", key]))
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT")
    }

    /// The port of the master serving `slot`, as the live node on `asking`
    /// sees it (`CLUSTER NODES`; a master marked failed does not count).
    pub fn master_of(&self, slot: u16, asking: u16) -> Option<u16> {
        let nodes = cli(asking, &["cluster", "nodes"])?;
        nodes.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                return None;
            }
            let serves = f[8..].iter().any(|range| match range.split_once('-') {
                Some((lo, hi)) => {
                    matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
                }
                None => range.parse::<u16>() == Ok(slot),
            });
            let port = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
            serves.then_some(port)
        })
    }

    /// Waits until the live nodes `ports` all say `cluster_state:ok`.
    pub fn wait_ok(&self, ports: &[u16], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = ports.iter().all(|&p| {
                cli(p, &["cluster", "info"]).is_some_and(|i| i.contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private cluster is not ok on {ports:?} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `slot` is served by a master other than `dead` in the
    /// eyes of every other node, and the cluster is ok again; answers the
    /// new master's port.
    pub fn wait_promoted(&self, slot: u16, dead: u16, within: Duration) -> u16 {
        let live: Vec<u16> = self.ports().into_iter().filter(|&p| p != dead).collect();
        let deadline = Instant::now() + within;
        loop {
            let masters: Vec<Option<u16>> = live.iter().map(|&p| self.master_of(slot, p)).collect();
            if let Some(Some(new)) = masters.first()
                && *new != dead
                && masters.iter().all(|m| *m == Some(*new))
            {
                self.wait_ok(&live, deadline.saturating_duration_since(Instant::now()));
                return *new;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} has no new master within {within:?}: {masters:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many replicas of the master on `port` are online: synced and
    /// streaming, so they can acknowledge a `WAIT` (`INFO replication`).
    pub fn connected_replicas(&self, port: u16) -> usize {
        cli(port, &["info", "replication"]).map_or(0, |info| {
            info.lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .count()
        })
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
