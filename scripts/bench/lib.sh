# scripts/bench/lib.sh - what the service benchmarks (queue, ingest, scale) share: release
# binaries, a key prefix and Postgres schema of their own (bench-<id>), an API port, a log dir,
# open mode without rate limits, and a cleanup that stops every process started, deletes the keys
# and drops the schema.
# Source it after `cd` to the repo root and `. scripts/env.sh`; then start_api, start_worker.
# A benchmark that cannot run ends with bench_fail: {"error": ...} as its last stdout line and a
# non-zero exit (wait_worker_ready does so for a worker that exits at start-up).
# shellcheck shell=bash

say() { echo "[bench] $*" >&2; }
# bench_fail REASON: the reason as the last (JSON) line on stdout, and exit 1.
bench_fail() {
  python3 -c 'import json,sys; print(json.dumps({"error": sys.argv[1]}))' "$*"
  say "$*"
  exit 1
}
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

# Stamped `bench`, not the commit (shared/build.rs): a release stamp that followed HEAD would
# rebuild the whole workspace after every commit.
export HOPPER_GIT_SHA="${HOPPER_GIT_SHA:-bench}"
say "building release binaries"
cargo build --release --quiet -p hopper-api -p hopper-worker -p hopper-extract -p hopper-bench
BIN=$ROOT/target/release
ID=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
export HOPPER_KEY_PREFIX="bench-$ID" HOPPER_DB_SCHEMA="bench_$ID" RUST_LOG=warn
# Benchmarks measure Hopper, not its guards: no API keys, no rate limits (the defaults would
# answer 401 and then 429 long before the queue is the bottleneck).
export HOPPER_AUTH=open HOPPER_RATE_PER_KEY=0 HOPPER_RATE_GLOBAL=0
PORT=$((20000 + 0x$ID % 20000))
export HOPPER_API_ADDR="127.0.0.1:$PORT"
API="http://$HOPPER_API_ADDR"
LOGS=$(mktemp -d)
PIDS=()

bench_cleanup() {
  local rc=$?
  [ "$rc" = 0 ] || { echo "[bench] FAILED; last log lines:" >&2; tail -n 20 "$LOGS"/*.log >&2 || true; }
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$BIN/hopper-bench" clean >/dev/null 2>&1 || true
  scripts/pg psql -d hopper -c "DROP SCHEMA IF EXISTS bench_$ID CASCADE" >/dev/null 2>&1 || true
  rm -rf "$LOGS"
}
trap bench_cleanup EXIT

# start_api: the API on $API, waited for until ready.
start_api() {
  "$BIN/hopper-api" 2>"$LOGS/api.log" & PIDS+=($!)
  for _ in $(seq 200); do curl -fs "$API/health/ready" >/dev/null 2>&1 && return; sleep 0.05; done
  cat "$LOGS/api.log" >&2; exit 1
}
# start_noop_worker CONCURRENCY: one worker process on the noop queue; sets WPID.
start_noop_worker() {
  HOPPER_QUEUE_NOOP_CONCURRENCY=$1 "$BIN/hopper-worker" --queues noop --device cpu \
    2>>"$LOGS/worker.log" & WPID=$!; PIDS+=("$WPID")
}
# wait_worker_ready PID ADDR LOG OUT: waits until the worker PID (HOPPER_WORKER_METRICS_ADDR=ADDR,
# stderr in LOG) has loaded its models, then writes its /health/ready `embedding` component
# (precision, kernels, cpu_bf16 and why) to OUT. A worker that exits first ends the benchmark at
# once with the last line it wrote (its reason); one not ready in 300 s, with that.
wait_worker_ready() {
  local pid=$1 addr=$2 log=$3 out=$4 state
  for _ in $(seq 3000); do
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo gone)
    if [ "$state" = gone ] || [ "$state" = Z ]; then
      bench_fail "hopper-worker exited at start-up: $(grep -v '^[[:space:]]*$' "$log" | tail -n 1)"
    fi
    if curl -fs "http://$addr/health/ready" 2>/dev/null | python3 -c '
import json, sys
e = json.load(sys.stdin)["components"].get("embedding") or {}
sys.exit(0 if e.get("loaded") else 1)' 2>/dev/null; then
      curl -fs "http://$addr/health/ready" |
        python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["components"]["embedding"]))' >"$out"
      return 0
    fi
    sleep 0.1
  done
  bench_fail "hopper-worker not ready after 300 s: $(grep -v '^[[:space:]]*$' "$log" | tail -n 1)"
}
stop() { kill -TERM "$@" 2>/dev/null || true; wait "$@" 2>/dev/null || true; }
# field KEY: KEY of the JSON object on the last line of stdin.
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
bench() { "$BIN/hopper-bench" "$@"; }
