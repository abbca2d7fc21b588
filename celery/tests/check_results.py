"""Check Hopper's Celery result metas with the real client (`AsyncResult`).

Run by `celery/tests/results.rs` (through `HOPPER_CELERY_PYTHON`, a Python with
the pinned celery[redis]); that test has already written each meta with SETEX
under its result key. This script reads, from stdin, a JSON list of cases:

    {"task_id": str, "status": "SUCCESS" | "FAILURE" | "REVOKED",
     "name": str | null,                      # result_extended: AsyncResult.name
     "result": <any>,                         # SUCCESS: what .get() returns
     "raises": "module.Class", "message": str}  # otherwise: what .get() raises

and checks `.status`, `.ready()`, `.successful()`, `.date_done`, `.name` and
`.get(timeout=…)` for each, printing one line per case. Exit status 1 when any
case fails, 2 on bad usage.

    python check_results.py <result backend URL> <result_backend global_keyprefix>
"""

from __future__ import annotations

import datetime
import importlib
import json
import sys
from typing import Any

from celery import Celery
from celery.result import AsyncResult

TIMEOUT_S = 10.0


class _Never(Exception):
    """Raised by nothing: what a case expecting a value catches."""


def resolve(qualified: str) -> type[BaseException]:
    """The exception class named `module.Class`."""
    module, _, name = qualified.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise TypeError(f"{qualified} is not an exception class")
    return cls


def check(app: Celery, case: dict[str, Any]) -> list[str]:
    """Every way `case`'s result differs from what it expects (empty: none)."""
    problems: list[str] = []
    result = AsyncResult(case["task_id"], app=app)
    status = case["status"]
    if result.status != status:
        problems.append(f"status {result.status!r}, expected {status!r}")
    if not result.ready():
        problems.append("not ready")
    if result.successful() != (status == "SUCCESS"):
        problems.append(f"successful() is {result.successful()}")
    if not isinstance(result.date_done, datetime.datetime):
        problems.append(f"date_done {result.date_done!r} is not a datetime")
    if case.get("name") is not None and result.name != case["name"]:
        problems.append(f"name {result.name!r}, expected {case['name']!r}")
    expected = case.get("raises")
    # Only the expected class is caught: any other exception is a failure
    # whose traceback says more than a line could.
    catch = resolve(expected) if expected is not None else _Never
    try:
        value = result.get(timeout=TIMEOUT_S)
    except catch as error:
        if type(error) is not catch:
            problems.append(
                f"get() raised {type(error).__module__}.{type(error).__qualname__},"
                f" expected {expected}"
            )
        elif (error.args[0] if error.args else "") != case["message"]:
            problems.append(f"message {error.args!r}, expected {case['message']!r}")
    else:
        if expected is not None:
            problems.append(f"get() returned {value!r}, expected {expected}")
        elif value != case["result"]:
            problems.append(f"get() returned {value!r}, expected {case['result']!r}")
    return problems


def main() -> int:
    """Check every case from stdin; 0 when all pass."""
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    url, prefix = sys.argv[1], sys.argv[2]
    app = Celery("check_results", broker=url, backend=url)
    app.conf.update(
        result_backend_transport_options={"global_keyprefix": prefix},
        result_extended=True,
        accept_content=["json"],
        result_accept_content=["json"],
    )
    cases: list[dict[str, Any]] = json.load(sys.stdin)
    failed = 0
    for case in cases:
        problems = check(app, case)
        failed += bool(problems)
        verdict = "ok" if not problems else "FAILED: " + "; ".join(problems)
        print(f"{case['task_id']}: {verdict}")
    app.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
