# scripts/lib/redis_cluster.sh - a real local Redis Cluster for Hopper's cluster tests: 6 nodes of
# Debian's redis-server on loopback ports $HOPPER_CLUSTER_PORT..+5 (default 7101-7106), 3 masters
# with one replica each, AOF on, cluster-node-timeout 2 s (a dead master's replica is promoted in
# a few seconds). Data and logs under $HOPPER_CACHE/redis-cluster/<port>. Idempotent: running nodes
# are kept, a cluster already formed is not formed again. Only nodes we started (pid files) are
# ever stopped. The cluster's URL for Hopper: $HOPPER_CLUSTER_URL (scripts/env.sh).
# shellcheck shell=bash

CLUSTER_DIR="$HOPPER_CACHE/redis-cluster"
CLUSTER_FIRST_PORT=${HOPPER_CLUSTER_PORT:-7101}
CLUSTER_NODE_TIMEOUT_MS=2000

cluster_ports() { local i; for i in 0 1 2 3 4 5; do echo $((CLUSTER_FIRST_PORT + i)); done; }

# cluster_node_pid PORT: pid of the node we started on PORT, if it is still running.
cluster_node_pid() {
  local f="$CLUSTER_DIR/$1/redis.pid" p
  [ -f "$f" ] || return 0
  p=$(cat "$f" 2>/dev/null || true)
  [[ ${p:-} =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = redis-server ] && echo "$p"
  return 0
}

cluster_cli() { timeout 5 redis-cli -h 127.0.0.1 -p "$1" "${@:2}" 2>/dev/null; }
cluster_node_ping() { [ "$(cluster_cli "$1" ping)" = PONG ]; }
cluster_state_ok() { cluster_cli "$1" cluster info | tr -d '\r' | grep -qx 'cluster_state:ok'; }

# cluster_node_up PORT: starts the node on PORT unless one of ours answers there.
cluster_node_up() {
  local port=$1 dir="$CLUSTER_DIR/$1"
  if cluster_node_ping "$port"; then
    [ -n "$(cluster_node_pid "$port")" ] ||
      [ "$(cluster_cli "$port" config get cluster-enabled | tail -n 1)" = yes ] ||
      die "port $port answers as a Redis that is not a cluster node"
    return 0
  fi
  if tcp_open "$port"; then
    die "port $port is in use by $(port_owner "$port" || echo 'a process') (HOPPER_CLUSTER_PORT moves the cluster)"
  fi
  mkdir -p "$dir"
  # 9>&-: the daemon must not inherit scripts/setup's lock fd.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout "$CLUSTER_NODE_TIMEOUT_MS" --appendonly yes --save "" \
    --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null 9>&- ||
    die "redis-server failed to start on $port, see $dir/redis.log"
  for _ in $(seq 50); do cluster_node_ping "$port" && break; sleep 0.1; done
  cluster_node_ping "$port" || die "cluster node on $port does not answer, see $dir/redis.log"
}

# cluster_form: starts the 6 nodes on $CLUSTER_FIRST_PORT.. (data under $CLUSTER_DIR), forms
# the cluster unless it is formed, and waits until every node says cluster_state:ok. A private
# cluster (scripts/bench/cluster's failover round) sets both variables first, in a subshell.
cluster_form() {
  local port nodes=()
  for port in $(cluster_ports); do
    cluster_node_up "$port"
    nodes+=("127.0.0.1:$port")
  done
  if ! cluster_state_ok "$CLUSTER_FIRST_PORT"; then
    local known; known=$(cluster_cli "$CLUSTER_FIRST_PORT" cluster info | tr -d '\r' |
      sed -n 's/^cluster_known_nodes://p')
    if [ "${known:-1}" = 1 ]; then
      say "forming the cluster: 3 masters, 3 replicas (${nodes[*]})"
      redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$CLUSTER_DIR/create.log" 2>&1 ||
        { tail -n 5 "$CLUSTER_DIR/create.log" >&2; die "redis-cli --cluster create failed, see $CLUSTER_DIR/create.log"; }
    fi
  fi
  for _ in $(seq 150); do
    local all=1
    for port in $(cluster_ports); do cluster_state_ok "$port" || { all=0; break; }; done
    [ "$all" = 1 ] && break
    sleep 0.1
  done
  for port in $(cluster_ports); do
    cluster_state_ok "$port" || die "the cluster is not ok on node $port (redis-cli -p $port cluster info)"
  done
}

redis_cluster_up() {
  redis_install
  cluster_form
  say "cluster ok on 127.0.0.1:$CLUSTER_FIRST_PORT-$((CLUSTER_FIRST_PORT + 5)); HOPPER_CLUSTER_URL=$HOPPER_CLUSTER_URL"
}

# redis_cluster_stop: stops the nodes we started (their data stays: a restart rejoins them).
redis_cluster_stop() {
  local port p
  for port in $(cluster_ports); do
    p=$(cluster_node_pid "$port")
    [ -n "$p" ] || continue
    kill -TERM "$p"
    for _ in $(seq 100); do [ -n "$(cluster_node_pid "$port")" ] || break; sleep 0.1; done
    [ -z "$(cluster_node_pid "$port")" ] || die "cluster node $port (pid $p) did not stop"
    say "stopped cluster node $port (pid $p)"
  done
}

redis_cluster_status() {
  local port up=0
  for port in $(cluster_ports); do cluster_node_ping "$port" && up=$((up + 1)); done
  if [ "$up" = 6 ] && cluster_state_ok "$CLUSTER_FIRST_PORT"; then
    echo "ok: 6 nodes on 127.0.0.1:$CLUSTER_FIRST_PORT-$((CLUSTER_FIRST_PORT + 5))"
  else
    echo "not ready: $up of 6 nodes answer on 127.0.0.1:$CLUSTER_FIRST_PORT-$((CLUSTER_FIRST_PORT + 5))"
    return 1
  fi
}

