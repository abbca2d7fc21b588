# scripts/lib/redis.sh - Redis for Hopper on 127.0.0.1:6379. Uses a Redis already answering there;
# otherwise installs Debian's redis-server if needed and starts a daemon that keeps no data on disk.
# Only a Redis we started (pid file under $HOPPER_CACHE/redis) is ever stopped by us.
# HOPPER_REDIS_PORT overrides the port (for testing this script).
# shellcheck shell=bash

REDIS_PORT=${HOPPER_REDIS_PORT:-6379}
REDIS_DIR="$HOPPER_CACHE/redis"
REDIS_PIDFILE="$REDIS_DIR/redis-$REDIS_PORT.pid"
REDIS_LOG="$REDIS_DIR/redis-$REDIS_PORT.log"

# redis_ping: true when a Redis answers PING with PONG on 127.0.0.1:$REDIS_PORT.
redis_ping() {
  if have redis-cli; then
    [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
  else   # same check without redis-cli
    ( exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 1
      printf 'PING\r\n' >&3; IFS= read -r -t 3 l <&3 || exit 1; [ "${l%$'\r'}" = +PONG ] ) 2>/dev/null
  fi
}

# redis_ours_pid: pid of the Redis we started, if it is still running.
redis_ours_pid() {
  local p=""
  [ -f "$REDIS_PIDFILE" ] && read -r p <"$REDIS_PIDFILE"
  [[ ${p:-} =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = redis-server ] &&
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && echo "$p"
  return 0
}

# redis_install: Debian's redis-server (apt-get update only when apt does not know the package).
redis_install() {
  have redis-server && return 0
  if ! is_root || ! have apt-get; then
    die "redis-server is not installed (apt-get install -y redis-server, as root)"
  fi
  say "installing redis-server with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show redis-server >/dev/null 2>&1; then apt-get update -qq >/dev/null || true; fi
  if ! apt-get install -y -qq redis-server >/dev/null; then
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq redis-server >/dev/null || die "apt-get install redis-server failed"
  fi
}

# faketime_install: Debian's faketime (libfaketime), which the clock-skew test runs a worker
# under (a clock a minute off must not make live workers look dead).
faketime_install() {
  have faketime && return 0
  if ! is_root || ! have apt-get; then
    die "faketime is not installed (apt-get install -y faketime, as root)"
  fi
  say "installing faketime with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq faketime >/dev/null; then
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq faketime >/dev/null || die "apt-get install faketime failed"
  fi
}

redis_up() {
  faketime_install
  if redis_ping; then return 0; fi
  redis_install
  if redis_ping; then return 0; fi   # the package's own service may have started it
  if tcp_open "$REDIS_PORT"; then
    local who; who=$(port_owner "$REDIS_PORT")
    die "port $REDIS_PORT is in use by ${who:-a process} that does not answer Redis PING"
  fi
  mkdir -p "$REDIS_DIR"
  # 9>&-: the daemon must not inherit scripts/setup's lock fd.
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$REDIS_DIR" --logfile "$REDIS_LOG" --pidfile "$REDIS_PIDFILE" >/dev/null 9>&- ||
    die "redis-server failed to start, see $REDIS_LOG"
  for _ in $(seq 50); do redis_ping && break; sleep 0.1; done
  redis_ping || { tail -n 5 "$REDIS_LOG" >&2; die "redis-server started but does not answer, see $REDIS_LOG"; }
  say "started redis-server on 127.0.0.1:$REDIS_PORT (pid $(redis_ours_pid))"
}

# redis_stop: stop the Redis we started (never one we found running).
redis_stop() {
  local p; p=$(redis_ours_pid)
  if [ -z "$p" ]; then rm -f "$REDIS_PIDFILE"; return 0; fi
  kill -TERM "$p"
  for _ in $(seq 100); do [ -n "$(redis_ours_pid)" ] || break; sleep 0.1; done
  [ -z "$(redis_ours_pid)" ] || die "redis-server pid $p did not stop"
  rm -f "$REDIS_PIDFILE"
  say "stopped redis-server (pid $p)"
}

redis_status() {
  local p; p=$(redis_ours_pid)
  if redis_ping; then
    if [ -n "$p" ]; then echo "running on 127.0.0.1:$REDIS_PORT (started by setup, pid $p)"
    else echo "running on 127.0.0.1:$REDIS_PORT (not started by setup)"; fi
  else
    echo "not running on 127.0.0.1:$REDIS_PORT"; return 1
  fi
}
