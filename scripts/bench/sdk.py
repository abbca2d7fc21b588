"""The Python half of scripts/bench/sdk: measures the SDK's client and worker against a running API.

  sdk.py enqueue --api URL --jobs N      submit_many of N noop jobs, one JSON line:
                                         {"py_enqueue_jobs_per_s": ...}
  sdk.py drain --api URL --jobs N [--concurrency C]
                                         N py-noop jobs queued first, then one Python worker
                                         process (`python -m hopper worker sdk:worker`) drains
                                         them with late acks: {"py_drain_jobs_per_s": ...}
  sdk.py latency --api URL [--rate R --seconds S]
                                         py-stamp jobs submitted at a steady R/s carrying the
                                         time they were sent; the task returns now - sent:
                                         {"py_start_p50_ms": ..., "py_start_p99_ms": ...}
  sdk.py report FILE...                  the benchmark's last line: every run's JSON merged

This module is also the benchmark's worker (`worker` below): `sdk.py drain` and
`sdk.py latency` start it as a separate process with this directory on the path.
Run it with the SDK's venv ($HOPPER_CACHE/venv-sdk, scripts/setup sdk), which has `hopper`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hopper import Client, JobContext, Worker
from hopper._work import declare

HERE = Path(__file__).resolve().parent

worker = Worker(max_claim=200)


@worker.task("py-noop")
def noop(args: dict[str, Any], ctx: JobContext) -> None:
    """Does nothing: what is measured is the worker around it."""


@worker.task("py-stamp")
def stamp(args: dict[str, Any], ctx: JobContext) -> dict[str, float]:
    """How long after it was sent this job started, in ms (and when, for the breakdown)."""
    now_ms = time.time() * 1000
    return {"start_ms": now_ms - float(args["sent_ms"]), "at_ms": now_ms}


def enqueue(api: str, jobs: int) -> dict[str, float]:
    """Jobs per second of one `submit_many` call (its batching included)."""
    payloads: list[dict[str, object]] = [{} for _ in range(jobs)]
    with Client(api, timeout=120.0) as client:
        client.submit_many("noop", payloads[:10])  # connection and first-request costs
        started = time.perf_counter()
        ids = client.submit_many("noop", payloads)
        took = time.perf_counter() - started
    assert len(ids) == jobs, f"{len(ids)} ids for {jobs} jobs"
    return {"py_enqueue_jobs_per_s": round(jobs / took, 1)}


class WorkerProcess:
    """`python -m hopper worker sdk:worker` against `api`, stopped with SIGTERM."""

    def __init__(self, api: str, concurrency: int, log: Path) -> None:
        self.log = log
        env = {**os.environ, "HOPPER_API_URL": api, "PYTHONPATH": str(HERE)}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "hopper", "worker", "sdk:worker"),
                    *("--concurrency", str(concurrency), "--log-level", "WARNING"),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"the Python worker exited: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        if code != 0:
            raise SystemExit(f"the Python worker ended with {code}: {self.log.read_text()[-2000:]}")


def declare_tasks(client: Client) -> None:
    """Declares the benchmark's tasks before any worker runs, so jobs can queue."""
    client._send(declare([t.spec for t in worker.tasks.values()]))


def queue_left(client: Client, queue: str) -> int:
    """Jobs of `queue` not finished yet (pending, scheduled, running)."""
    answer = client._http.get("/v1/queues")
    answer.raise_for_status()
    body = answer.json()
    queues = body["queues"] if isinstance(body, dict) else body
    for q in queues:
        if q.get("queue", q.get("kind")) == queue:
            return int(q["pending"]) + int(q["scheduled"]) + int(q["running"])
    raise SystemExit(f"queue {queue} missing from GET /v1/queues: {body}")


def drain(api: str, jobs: int, concurrency: int, log: Path) -> dict[str, float]:
    """Jobs per second one worker process takes from queued to acknowledged:
    from the first job's start to the last job's finish (their records:
    the finish is stamped when the server took the result, before the ack)."""
    with Client(api, timeout=120.0) as client:
        declare_tasks(client)
        ids = client.submit_many("py-noop", [{} for _ in range(jobs)])
        assert queue_left(client, "py-noop") == jobs
        proc = WorkerProcess(api, concurrency, log)
        deadline = time.monotonic() + 600
        while queue_left(client, "py-noop") > 0:
            proc.check()
            if time.monotonic() > deadline:
                raise SystemExit("the Python worker did not drain the queue in 600 s")
            time.sleep(0.05)
        proc.stop()
        first = [client.job(i) for i in ids[:20]]
        last = [client.job(i) for i in ids[-200:]]
    assert all(j.state == "succeeded" for j in first + last)
    started_ms = min(j.started_at_ms or 0 for j in first)
    ended_ms = max(j.finished_at_ms or 0 for j in last)
    return {"py_drain_jobs_per_s": round(jobs * 1000 / (ended_ms - started_ms), 1)}


def latency(api: str, rate: float, seconds: float, log: Path) -> dict[str, float]:
    """Start latency at a steady submission rate: each job carries the time it
    was sent, the task answers how long after that it started."""
    with Client(api, timeout=30.0) as client:
        declare_tasks(client)
        proc = WorkerProcess(api, 8, log)
        # Warm up: the worker is serving once a first job came back.
        client.wait(client.submit("py-stamp", {"sent_ms": time.time() * 1000}).id, timeout=60)
        ids: list[str] = []
        total = int(rate * seconds)
        begin = time.perf_counter()
        for n in range(total):
            pause = begin + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            ids.append(client.submit("py-stamp", {"sent_ms": time.time() * 1000}).id)
        proc.check()
        took = [client.wait(i, timeout=60) for i in ids]
        proc.stop()
    assert all(j.state == "succeeded" for j in took)
    # Where the time goes (stderr): submission (sent -> queued), the queue
    # (queued -> claimed, server clock) and the worker (claimed -> running).
    for part, xs in (
        ("submit", [j.enqueued_at_ms - j.args["sent_ms"] for j in took]),
        ("queued", [(j.started_at_ms or 0) - j.enqueued_at_ms for j in took]),
        ("claim to start", [j.result["at_ms"] - (j.started_at_ms or 0) for j in took]),
    ):
        xs.sort()
        p50, p99 = statistics.median(xs), xs[int(len(xs) * 0.99)]
        print(f"[bench]   {part}: p50 {p50:.1f} ms, p99 {p99:.1f} ms", file=sys.stderr)
    ms = sorted(float(j.result["start_ms"]) for j in took)
    return {
        "py_start_p50_ms": round(statistics.median(ms), 2),
        "py_start_p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "py_start_rate_per_s": rate,
    }


def report(files: list[str]) -> dict[str, Any]:
    """The benchmark's JSON: the runs' numbers, medians of the repeated ones."""
    runs: dict[str, list[float]] = {}
    for f in files:
        for k, v in json.loads(Path(f).read_text().strip().splitlines()[-1]).items():
            runs.setdefault(k, []).append(float(v))
    out: dict[str, Any] = {}
    for k, values in runs.items():
        out[k] = max(values) if k == "py_drain_jobs_per_s" else statistics.median(values)
    out["runs"] = runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enqueue")
    e.add_argument("--api", required=True)
    e.add_argument("--jobs", type=int, default=20_000)
    d = sub.add_parser("drain")
    d.add_argument("--api", required=True)
    d.add_argument("--jobs", type=int, default=20_000)
    d.add_argument("--concurrency", type=int, default=32)
    d.add_argument("--log", type=Path, default=Path("/dev/null"))
    la = sub.add_parser("latency")
    la.add_argument("--api", required=True)
    la.add_argument("--rate", type=float, default=200.0)
    la.add_argument("--seconds", type=float, default=10.0)
    la.add_argument("--log", type=Path, default=Path("/dev/null"))
    r = sub.add_parser("report")
    r.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.command == "enqueue":
        print(json.dumps(enqueue(args.api, args.jobs)))
    elif args.command == "drain":
        print(json.dumps(drain(args.api, args.jobs, args.concurrency, args.log)))
    elif args.command == "latency":
        print(json.dumps(latency(args.api, args.rate, args.seconds, args.log)))
    else:
        print(json.dumps(report(args.files)))


if __name__ == "__main__":
    main()
