"""The Python half of scripts/bench/celery: the Celery app, producer and measurements.

The same module is the Celery app the real Celery worker runs
(`celery -A celery_bench worker`, from this folder) and the command-line
helper the script calls (`python celery_bench.py <command>`). It never names
the module `celery` (that would shadow the package). Configuration from the
environment (set by scripts/bench/celery):

    BENCH_CELERY_BROKER   broker URL (Redis DB 0)
    BENCH_CELERY_RESULTS  result backend URL (Redis DB 1)
    BENCH_CELERY_PREFIX   kombu/celery global_keyprefix of this run (broker and results)

Commands (each prints one JSON object on its last stdout line):
    produce --jobs N --ids FILE        send N `bench.noop` (json, results on); producer jobs/s
    drained --ids FILE --within S      wait for every result, then the drain rate from the
                                       results' date_done (first to last)
    probe-send                         send `bench.sleep` (a 2 s task); its id
    probe-started --side celery|hopper --id ID --attempt K --within S [--since T --api URL]
                                       wait until attempt K started; with --since, the seconds
                                       from T (Unix s) to that start, or ">S" when not in time
    clean                              delete this run's keys (the prefix) in both databases
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery, Task

BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0")
RESULTS = os.environ.get("BENCH_CELERY_RESULTS", "redis://127.0.0.1:6379/1")
PREFIX = os.environ.get("BENCH_CELERY_PREFIX", "bench-celery:")
PROBE_SLEEP_MS = 2000

app = Celery("bench", broker=BROKER, backend=RESULTS)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
)


def starts_key(task_id: str) -> str:
    """Where the Celery probe task records the start time of each of its runs."""
    return f"{PREFIX}bench-probe-starts:{task_id}"


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    """Nothing (Hopper runs its built-in `noop` under this name)."""


@app.task(name="bench.sleep", bind=True)  # type: ignore[untyped-decorator]
def sleep(self: Task, message: str, sleep_ms: int) -> dict[str, str]:
    """Records its start, then sleeps (Hopper runs its built-in `echo` under this name,
    with the same keyword arguments)."""
    client = redis.Redis.from_url(BROKER)
    client.rpush(starts_key(self.request.id), time.time())
    time.sleep(sleep_ms / 1000)
    return {"message": message}


def result_key(task_id: str) -> str:
    return f"{PREFIX}celery-task-meta-{task_id}"


def produce(jobs: int, ids_file: Path) -> dict[str, Any]:
    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    started = time.perf_counter()
    for task_id in ids:
        app.send_task("bench.noop", task_id=task_id)
    elapsed = time.perf_counter() - started
    ids_file.write_text("\n".join(ids))
    return {
        "producer_jobs_per_s": round(jobs / elapsed),
        "producer_s": round(elapsed, 3),
    }


def drained(ids_file: Path, within: float) -> dict[str, Any]:
    ids = ids_file.read_text().split()
    keys = [result_key(i) for i in ids]
    client = redis.Redis.from_url(RESULTS)
    deadline = time.monotonic() + within
    # The waiting must not load the machine it measures: tasks finish roughly in the order
    # sent, so the keys are checked a chunk at a time, oldest first, and a round stops at the
    # first chunk not yet complete; a complete chunk is never read again until the end.
    chunks = [keys[i : i + 500] for i in range(0, len(keys), 500)]
    while chunks:
        while chunks and client.exists(*chunks[0]) == len(chunks[0]):
            chunks.pop(0)
        if not chunks:
            break
        if time.monotonic() > deadline:
            left = sum(len(c) - client.exists(*c) for c in chunks)
            message = f"{len(keys) - left} of {len(keys)} results after {within} s"
            raise SystemExit(json.dumps({"error": message}))
        time.sleep(0.2)
    metas: list[dict[str, Any]] = []
    for i in range(0, len(keys), 5000):
        metas.extend(json.loads(raw or "{}") for raw in client.mget(keys[i : i + 5000]))
    failed = [m for m in metas if m["status"] != "SUCCESS"]
    if failed:
        raise SystemExit(
            json.dumps({"error": f"{len(failed)} not SUCCESS, e.g. {failed[0]}"})
        )
    done_at = sorted(datetime.fromisoformat(m["date_done"]).timestamp() for m in metas)
    span = done_at[-1] - done_at[0]
    return {
        "drain_jobs_per_s": round((len(done_at) - 1) / span),
        "drain_s": round(span, 3),
    }


def probe_send() -> dict[str, Any]:
    result = app.send_task(
        "bench.sleep", kwargs={"message": "probe", "sleep_ms": PROBE_SLEEP_MS}
    )
    return {"id": result.id}


def start_of(side: str, task_id: str, attempt: int, api: str) -> float | None:
    """Unix seconds at which run `attempt` of the probe started; None while it has not."""
    if side == "celery":
        starts = redis.Redis.from_url(BROKER).lrange(starts_key(task_id), 0, -1)
        return float(starts[attempt - 1]) if len(starts) >= attempt else None
    r = httpx.get(f"{api}/v1/jobs/{task_id}", timeout=5)
    if r.status_code == 404:
        return None
    job = r.json()
    started = job.get("started_at_ms")
    if job["attempts"] >= attempt and started is not None:
        return float(started) / 1000
    return None


def probe_started(
    side: str, task_id: str, attempt: int, within: float, since: float | None, api: str
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (started := start_of(side, task_id, attempt, api)) is None:
        if time.monotonic() > deadline:
            if since is None:
                raise SystemExit(
                    json.dumps({"error": f"attempt {attempt} not started"})
                )
            return {"rerun_s": f">{within:g}"}
        time.sleep(0.05)
    if since is None:
        return {"started": started}
    return {"rerun_s": round(started - since, 2)}


def clean() -> dict[str, Any]:
    deleted = 0
    for url in (BROKER, RESULTS):
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{PREFIX}*", count=1000))
        for i in range(0, len(keys), 500):
            deleted += client.delete(*keys[i : i + 500])
    return {"deleted": deleted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--ids", type=Path, required=True)
    p = sub.add_parser("drained")
    p.add_argument("--ids", type=Path, required=True)
    p.add_argument("--within", type=float, default=600)
    sub.add_parser("probe-send")
    sub.add_parser("clean")
    p = sub.add_parser("probe-started")
    p.add_argument("--side", choices=["celery", "hopper"], required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--attempt", type=int, required=True)
    p.add_argument("--within", type=float, required=True)
    p.add_argument("--since", type=float)
    p.add_argument("--api", default="")
    a = parser.parse_args()
    if a.command == "produce":
        out = produce(a.jobs, a.ids)
    elif a.command == "drained":
        out = drained(a.ids, a.within)
    elif a.command == "probe-send":
        out = probe_send()
    elif a.command == "clean":
        out = clean()
    else:
        out = probe_started(a.side, a.id, a.attempt, a.within, a.since, a.api)
    print(json.dumps(out))
    app.close()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
