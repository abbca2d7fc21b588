"""The Python tasks the worker tests run: `python -m hopper worker tests.sample_tasks:worker`.

The failing tasks retry after 10-50 ms, so the tests stay short. The tests
steer running jobs through files, not sleeps: `hold` writes
`<dir>/<name>.started.<attempt>` (its pid inside) and finishes once
`<dir>/<name>.release` exists, so a test knows a job is mid-run and decides
when it ends.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from hopper import JobContext, Permanent, Worker

worker = Worker()


@worker.task(
    "py-echo",
    schema={
        "type": "object",
        "properties": {"message": {"type": "string"}},
        "required": ["message"],
    },
    concurrency=4,
)
def echo(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Answers its message with the attempt, the tenant and the pid that ran it."""
    return {
        "message": args["message"],
        "attempt": ctx.attempt,
        "tenant": ctx.tenant,
        "pid": os.getpid(),
    }


@worker.task("py-async-echo")
async def async_echo(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """The same, on the event loop."""
    await asyncio.sleep(0)
    return {"message": args["message"], "attempt": ctx.attempt, "job": ctx.id}


@worker.task("py-hold", concurrency=4)
def hold(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Marks itself started, reports progress, and runs until released."""
    folder, name = Path(args["dir"]), args["name"]
    (folder / f"{name}.started.{ctx.attempt}").write_text(str(os.getpid()))
    ctx.progress({"stage": "holding", "attempt": ctx.attempt})
    while not (folder / f"{name}.release").exists():
        if ctx.wait_cancelled(0.02):
            break
    return {"pid": os.getpid(), "attempt": ctx.attempt}


@worker.task("py-fail", max_attempts=3, backoff_base_ms=10, backoff_max_ms=50)
def always_fails(args: dict[str, Any], ctx: JobContext) -> None:
    """Raises every time."""
    raise ValueError(f"boom on attempt {ctx.attempt}")


@worker.task("py-permanent", max_attempts=3, backoff_base_ms=10, backoff_max_ms=50)
def refuses(args: dict[str, Any], ctx: JobContext) -> None:
    """Raises `Permanent`: no retry."""
    raise Permanent("this input can never work")


@worker.task("py-set", max_attempts=2, backoff_base_ms=10, backoff_max_ms=50)
def returns_a_set(args: dict[str, Any], ctx: JobContext) -> dict[str, set[int]]:
    """Returns what JSON cannot carry."""
    return {"ids": {1, 2, 3}}


@worker.task("py-soft", soft_limit_ms=300, hard_limit_ms=20_000, max_attempts=1)
def stops_at_soft_limit(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Works until told to stop, then returns what it did."""
    started = time.monotonic()
    stopped = ctx.wait_cancelled(15.0)
    return {"stopped": stopped, "ran_ms": round((time.monotonic() - started) * 1000)}


@worker.task("py-hard", soft_limit_ms=200, hard_limit_ms=600, max_attempts=1)
def ignores_the_limits(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Runs past its hard limit whatever the flag says."""
    time.sleep(float(args.get("seconds", 2.0)))
    return {"finished": True}


@worker.task("py-async-hard", soft_limit_ms=200, hard_limit_ms=600, max_attempts=1)
async def async_ignores_the_limits(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """The same on the event loop (cancelled there at the hard limit)."""
    await asyncio.sleep(float(args.get("seconds", 2.0)))
    return {"finished": True}
