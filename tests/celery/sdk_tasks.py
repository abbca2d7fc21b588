"""The Python tasks the Celery tests send to: `python -m hopper worker sdk_tasks:worker`.

They are declared with `params`, the names of Celery's positional arguments in
order, so `add.delay(2, 3)` arrives as `{"a": 2, "b": 3}`. `hold` lets a test
know a job is mid-run and decide when it ends: it writes
`$HOPPER_CELERY_TEST_DIR/<name>.started.<attempt>` (its pid inside) and
finishes once `<name>.release` exists there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hopper import JobContext, Worker

worker = Worker()


@worker.task("tasks.add", params=["a", "b"], concurrency=8)
def add(args: dict[str, Any], ctx: JobContext) -> int:
    """a + b."""
    total: int = args["a"] + args["b"]
    return total


@worker.task("tasks.fail", params=["message"], max_attempts=1)
def fail(args: dict[str, Any], ctx: JobContext) -> None:
    """Raises ValueError(message): the Celery producer gets a ValueError back."""
    raise ValueError(args["message"])


@worker.task("tasks.hold", params=["name"], concurrency=4)
def hold(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Marks itself started and runs until released (at most 60 s)."""
    folder, name = Path(os.environ["HOPPER_CELERY_TEST_DIR"]), args["name"]
    (folder / f"{name}.started.{ctx.attempt}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (folder / f"{name}.release").exists() and time.monotonic() < deadline:
        if ctx.wait_cancelled(0.02):
            break
    return {"name": name, "attempt": ctx.attempt, "pid": os.getpid()}
