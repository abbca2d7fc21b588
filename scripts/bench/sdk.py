"""The Python half of scripts/bench/sdk: measures the SDK's client against a running API.

  sdk.py enqueue --api URL --jobs N   submit_many of N noop jobs, one JSON line:
                                      {"py_enqueue_jobs_per_s": ...}
  sdk.py report RATE RATE RATE        the benchmark's last line: the median of the runs

Run it with the SDK's venv ($HOPPER_CACHE/venv-sdk, scripts/setup sdk), which has `hopper`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from hopper import Client


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


def report(rates: list[float]) -> dict[str, object]:
    """The benchmark's JSON: the median and every run."""
    return {
        "py_enqueue_jobs_per_s": round(statistics.median(rates), 1),
        "py_enqueue_runs": rates,
        "py_drain_jobs_per_s": None,
        "note": "worker-side numbers come with the HTTP worker protocol",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enqueue")
    e.add_argument("--api", required=True)
    e.add_argument("--jobs", type=int, default=20_000)
    r = sub.add_parser("report")
    r.add_argument("rates", type=float, nargs="+")
    args = parser.parse_args()
    if args.command == "enqueue":
        print(json.dumps(enqueue(args.api, args.jobs)))
    else:
        print(json.dumps(report(args.rates)))


if __name__ == "__main__":
    main()
