"""`Worker`: Python functions served as Hopper tasks over the HTTP worker protocol.

A `Worker` collects tasks with `@worker.task("name", schema=…)` on plain or
`async` functions taking `(args, ctx)`. `run()` declares them
(`POST /v1/work/tasks`; a schema conflict ends it with the server's message),
then claims jobs, runs sync functions in a pool of threads and async ones on
the asyncio loop, heartbeats every lease it holds and reports outcomes in
batches (`_runner.py` holds that machinery). Delivery is late-acknowledged:
a job counts as done only once the server accepted its result, so a worker
that dies mid-job loses nothing (its leases run out and the jobs run again).
Write tasks to be idempotent by `ctx.id`.

A task raising fails the attempt with the traceback text and is retried with
the task's backoff until `max_attempts`, then dead-lettered; raising
`Permanent` dead-letters it at once. A result JSON cannot carry fails the
attempt naming its type. `ctx.cancelled()` turns true when the soft limit
passes or the job is cancelled: the function should stop early. The server
fails an attempt past its hard limit whatever the function does (an async
function is cancelled then; a thread cannot be, it runs on and its result is
refused). SIGTERM or SIGINT stops claiming, lets running jobs finish within
`grace_s`, sends their outcomes and returns 0; a second signal exits at once.

Tasks declared over HTTP belong to the key's tenant: only that tenant may
submit them. Run it with `python -m hopper worker mymodule:worker`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from . import _work

if TYPE_CHECKING:
    from ._runner import Runner

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("hopper.worker")

DEFAULT_URL = "http://127.0.0.1:8080"


class Permanent(Exception):
    """Raise from a task to fail its job for good: no retry, straight to the
    dead letters (reason `permanent`)."""


class JobContext:
    """What a running task knows about its job, and its two ways to talk back:
    `cancelled()` (stop early: soft limit passed or cancellation asked) and
    progress: `report(fraction, message)` in the standard shape, or any
    JSON object with `progress(...)`."""

    __slots__ = (
        "_flag",
        "_report",
        "attempt",
        "enqueued_at_ms",
        "id",
        "max_attempts",
        "queue",
        "request_id",
        "tenant",
    )

    def __init__(
        self,
        job: _work.ClaimedJob,
        report: Callable[[str], None],
    ) -> None:
        self.id = job.id
        self.queue = job.queue
        self.attempt = job.attempt
        self.max_attempts = job.max_attempts
        self.tenant = job.tenant
        self.request_id = job.request_id
        self.enqueued_at_ms = job.enqueued_at_ms
        self._flag = threading.Event()
        self._report = report

    def cancelled(self) -> bool:
        """Whether the job should stop now: its soft limit passed, someone
        cancelled it, or the worker lost its lease."""
        return self._flag.is_set()

    def wait_cancelled(self, timeout: float) -> bool:
        """Blocks (a sync task's sleep) until cancelled or `timeout` s passed;
        whether it was cancelled."""
        return self._flag.wait(timeout)

    def progress(self, value: Mapping[str, Any]) -> None:
        """Reports progress (a JSON object up to 16 KiB), shown by
        `GET /v1/jobs/{id}`. Never blocks: the newest value is sent in the
        background. `TypeError` for what JSON cannot carry, `ValueError` when too big."""
        encoded = _work.encode_json(dict(value))
        if len(encoded.encode()) > _work.MAX_PROGRESS_BYTES:
            raise ValueError(
                f"progress is {len(encoded.encode())} bytes, over {_work.MAX_PROGRESS_BYTES}"
            )
        self._report(encoded)

    def report(self, fraction: float, message: str = "") -> None:
        """Reports progress in the standard shape, `{"fraction": f, "message": m}`,
        which `hopper submit --wait`, `hopper jobs show --follow`, the dashboard
        and `GET /v1/jobs/{id}/events` show as a bar: `fraction` is how much is
        done, from 0 to 1 (clamped into that range), `message` what the task is
        doing. Never blocks, like `progress`. `ValueError` for NaN, `TypeError`
        for a fraction that is not a number or a message that is not a string."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TypeError(f"fraction must be a number, not {type(fraction).__name__}")
        if not isinstance(message, str):
            raise TypeError(f"message must be a string, not {type(message).__name__}")
        if math.isnan(fraction):
            raise ValueError("fraction must be a number from 0 to 1, not NaN")
        self.progress({"fraction": min(1.0, max(0.0, float(fraction))), "message": message})

    def _cancel(self) -> None:
        self._flag.set()

    def __repr__(self) -> str:
        return f"JobContext(id={self.id!r}, queue={self.queue!r}, attempt={self.attempt})"


@dataclass
class Task:
    """One function served under a task name, and what is declared about it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    spec: _work.TaskSpec
    #: Jobs of this task this process runs at once (None: the declared setting).
    concurrency: int | None


class Worker:
    """Serves the functions registered with `task` over the HTTP worker protocol.

    `url` and `key` default to `HOPPER_API_URL` and `HOPPER_API_KEY`; the key
    needs the `work` scope. `queues` limits the tasks served to these names
    (None: all registered). `grace_s` is how long a stop waits for running
    jobs; `max_claim` caps one claim's jobs; completes and fails are sent
    together once `flush_max` are pending or `flush_ms` after the first.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        queues: Sequence[str] | None = None,
        *,
        grace_s: float = 30.0,
        claim_wait_ms: int = _work.MAX_WAIT_MS,
        max_claim: int = 200,
        flush_ms: float = 5.0,
        flush_max: int = 500,
    ) -> None:
        self.url = url or os.environ.get("HOPPER_API_URL") or DEFAULT_URL
        self.key = key if key is not None else os.environ.get("HOPPER_API_KEY")
        self.queues = list(queues) if queues is not None else None
        self.grace_s = grace_s
        self.claim_wait_ms = claim_wait_ms
        self.max_claim = max(1, min(_work.MAX_CLAIM, max_claim))
        self.flush_ms = flush_ms
        self.flush_max = flush_max
        self.tasks: dict[str, Task] = {}
        self._runner: Runner | None = None
        self._stop_asked = False

    def task(
        self,
        name: str,
        *,
        schema: Mapping[str, Any] | None = None,
        version: int = 1,
        concurrency: int | None = None,
        max_attempts: int | None = None,
        soft_limit_ms: int | None = None,
        hard_limit_ms: int | None = None,
        backoff_base_ms: int | None = None,
        backoff_max_ms: int | None = None,
        retention_ms: int | None = None,
        rate_limit: str | None = None,
        tenant_concurrency: int | None = None,
        description: str | None = None,
        params: Sequence[str] | None = None,
    ) -> Callable[[F], F]:
        """Registers `fn(args, ctx)` (sync or async) as task `name`. `schema`
        (JSON Schema of the args) and the settings given are declared; the
        rest come from the server's defaults. `params` names the arguments
        in positional order, so a Celery producer's `add.delay(2, 3)` arrives
        as `{"a": 2, "b": 3}` with `params=["a", "b"]` (without it, Celery
        messages arrive as `{"args": [...], "kwargs": {...}}`). Returns `fn`
        unchanged. `rate_limit` (`"20/s"`, `"600/m"`, `"1000/h"`) caps the
        task's job starts across every worker (a token bucket the server
        checks when it hands out jobs); `tenant_concurrency` caps how many
        of one tenant's jobs of the task run at once across every worker
        (the others wait in the queue, holding no worker slot)."""
        if name in self.tasks:
            raise ValueError(f"task {name!r} is registered twice")
        if version < 1:
            raise ValueError("version must be at least 1")
        given = {
            "concurrency": concurrency,
            "max_attempts": max_attempts,
            "soft_limit_ms": soft_limit_ms,
            "hard_limit_ms": hard_limit_ms,
            "backoff_base_ms": backoff_base_ms,
            "backoff_max_ms": backoff_max_ms,
            "retention_ms": retention_ms,
            "tenant_concurrency": tenant_concurrency,
        }
        settings: dict[str, int | str] = {k: v for k, v in given.items() if v is not None}
        if rate_limit is not None:
            settings["rate_limit"] = rate_limit

        def register(fn: F) -> F:
            doc = inspect.getdoc(fn)
            spec = _work.TaskSpec(
                name=name,
                version=version,
                schema=schema,
                settings=settings,
                description=description or (doc.splitlines()[0] if doc else None),
                params=tuple(params) if params is not None else None,
            )
            self.tasks[name] = Task(
                name=name,
                fn=fn,
                is_async=inspect.iscoroutinefunction(fn),
                spec=spec,
                concurrency=concurrency,
            )
            return fn

        return register

    def set_concurrency(self, n: int) -> None:
        """Runs up to `n` jobs of every task at once in this process (the
        declared settings are unchanged)."""
        if n < 1:
            raise ValueError("concurrency must be at least 1")
        for task in self.tasks.values():
            task.concurrency = n

    def served(self) -> list[Task]:
        """The tasks this worker serves (`queues` applied)."""
        if self.queues is None:
            return list(self.tasks.values())
        unknown = [q for q in self.queues if q not in self.tasks]
        if unknown:
            raise ValueError(f"no task registered for queue(s) {', '.join(unknown)}")
        return [self.tasks[q] for q in self.queues]

    async def serve(self) -> int:
        """Runs until `stop()`: declares, claims, runs, reports. Returns 0
        when every job it took finished and was reported, 1 when the grace
        period ran out first (those jobs come back when their leases do).
        Raises `HopperError` when the tasks cannot be declared or the key is refused."""
        from ._runner import Runner

        self._runner = Runner(self, self.served())
        if self._stop_asked:
            self._runner.stop()
        return await self._runner.serve()

    def stop(self) -> None:
        """Stops claiming and lets running jobs finish (within `grace_s`).
        Safe from any thread and from a signal handler."""
        self._stop_asked = True
        if self._runner is not None:
            self._runner.stop()

    def run(self) -> int:
        """Blocking `serve()` with SIGTERM/SIGINT handled: the first stops
        gracefully, a second exits the process at once. Returns the exit code."""
        return asyncio.run(self._run_with_signals())

    async def _run_with_signals(self) -> int:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)

        def on_signal(signum: int) -> None:
            if self._stop_asked:
                log.warning("second %s: exiting now", signal.Signals(signum).name)
                logging.shutdown()
                os._exit(128 + signum)
            log.info(
                "%s: no more claims; waiting up to %g s for running jobs",
                signal.Signals(signum).name,
                self.grace_s,
            )
            self.stop()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal, int(sig))
        try:
            return await self.serve()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
