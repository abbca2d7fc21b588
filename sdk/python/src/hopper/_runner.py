"""The machinery behind `Worker.serve()`: claim, run, heartbeat, report.

Everything is driven from one asyncio loop:

* the claim loop long-polls `/v1/work/claim` on every served queue for as
  many jobs as there are free slots (a task's slots are its concurrency),
  each job becoming a `_Held` kept until the server answered its outcome.
  One claim covers all queues, so one task may get more jobs than its own
  free slots: those wait here (heartbeated) for a slot of their task, and
  the process never holds more jobs than its slots together;
* sync functions run in a pool of daemon threads (as many as the sync
  tasks' slots together), async ones as asyncio tasks; a thread hands its
  outcome back through a deque and one coalesced loop wake-up;
* the heartbeat loop renews every held lease in one call per period,
  drops the jobs the server says are lost and raises the cancel flag of the
  ones it asks to stop; a sweep every 50 ms raises it locally at the soft
  limit and lets go of a job at its hard limit (the server fails it);
* the flush loop sends completes and fails in batches: whatever gathered
  while the previous batch was on the wire, at least `flush_ms` apart
  unless `flush_max` are pending; a batch the server could not take is sent
  again after a pause (the leases stay heartbeated meanwhile).

Stopping ends the claim loop, waits up to the grace period for running jobs
and for their outcomes to be answered, then closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import queue
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import _work
from ._async import AsyncClient
from .errors import Forbidden, HopperError, InvalidArgs, Unauthorized, Unavailable
from .worker import JobContext, Permanent, Task

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("hopper.worker")

#: Longest error text sent for a failed attempt (its head and tail are kept).
MAX_ERROR_CHARS = 32 * 1024
#: Pause after a claim or flush the server could not answer, doubling up to the max, in s.
FIRST_PAUSE_S = 0.2
MAX_PAUSE_S = 5.0
#: How long the claim loop lets running jobs finish before claiming for fewer
#: than half its slots (one claim per batch, not one per job), in s.
GATHER_S = 0.001
#: How often soft and hard limits are checked, in s.
LIMITS_TICK_S = 0.05


def error_text(e: BaseException) -> str:
    """The traceback of `e` as Python prints it (without the runner's own
    frame), cut to `MAX_ERROR_CHARS` keeping both ends."""
    tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
    text = "".join(traceback.format_exception(type(e), e, tb)).rstrip("\n")
    if len(text) > MAX_ERROR_CHARS:
        half = MAX_ERROR_CHARS // 2
        text = f"{text[:half]}\n[… {len(text) - 2 * half} characters cut …]\n{text[-half:]}"
    return text


class _Slots:
    """How many jobs of one task this process holds before they finish, and
    the ones claimed beyond its concurrency waiting for a slot."""

    __slots__ = ("backlog", "running", "size", "task")

    def __init__(self, task: Task, size: int) -> None:
        self.task = task
        self.size = size
        self.running = 0
        self.backlog: collections.deque[_Held] = collections.deque()

    @property
    def free(self) -> int:
        return self.size - self.running - len(self.backlog)


class _Held:
    """A claimed job: its context, when its limits pass (loop time), whether
    it ran, and whether the worker still speaks for it (`lost`: the server
    took the lease back)."""

    __slots__ = ("ctx", "finished", "hard_at", "job", "lost", "slots", "soft_at", "work")

    def __init__(self, job: _work.ClaimedJob, slots: _Slots, ctx: JobContext) -> None:
        self.job = job
        self.slots = slots
        self.ctx = ctx
        self.lost = False
        self.soft_at = math.inf
        self.hard_at = math.inf
        self.finished = False
        self.work: asyncio.Task[None] | None = None


#: What a finished run reports: the job, then ("ok", result JSON) or ("error", text, retryable).
_Outcome = tuple[_Held, str, str, bool]


def failure(held: _Held, e: BaseException) -> _Outcome:
    """The outcome of a run that raised `e`: its traceback, retryable unless
    `Permanent`; a result JSON cannot carry is named by its type alone."""
    if isinstance(e, _work.NotSerialisable):
        return (held, "error", str(e), True)
    return (held, "error", error_text(e), not isinstance(e, Permanent))


class _Pool:
    """Daemon threads running sync tasks (daemons: a stuck task cannot keep
    the process alive once the worker gave up on it)."""

    def __init__(self, size: int) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[_Held], None], _Held] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._loop, name=f"hopper-task-{i}", daemon=True)
            for i in range(size)
        ]
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, held = item
            fn(held)

    def submit(self, fn: Callable[[_Held], None], held: _Held) -> None:
        self._queue.put((fn, held))

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


class Runner:
    """One serving run of a `Worker` (see the module docs)."""

    def __init__(self, worker: Worker, tasks: list[Task]) -> None:
        if not tasks:
            raise ValueError("the worker has no tasks to serve")
        self._w = worker
        self._tasks = tasks
        self._slots: dict[str, _Slots] = {}
        self._held: dict[str, _Held] = {}
        self._worker_id: str | None = None
        self._heartbeat_s = 1.0  # the server's, from the first claim on
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        # Outcomes from threads: appended there, drained on the loop.
        self._inbox: collections.deque[_Outcome] = collections.deque()
        self._inbox_signalled = False
        self._completes: list[tuple[_Held, str]] = []
        self._failures: list[tuple[_Held, str, bool]] = []
        self._progress: dict[str, tuple[_Held, str]] = {}
        self._pool: _Pool | None = None
        self._fatal: BaseException | None = None
        self._capacity = 0

    # ---- life cycle ---------------------------------------------------------

    def stop(self) -> None:
        """Asks the run to stop (from any thread)."""
        self._stopping = True
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(event.set)

    async def serve(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._changed = asyncio.Event()
        self._outcomes_waiting = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._progress_waiting = asyncio.Event()
        if self._stopping:
            self._stop_event.set()
        self._http = AsyncClient(self._w.url, self._w.key)
        try:
            return await self._serve()
        finally:
            await self._http.close()
            if self._pool is not None:
                self._pool.close()

    async def _declare(self) -> list[_work.Declared] | None:
        """Declares the tasks, waiting out an API that is not up yet (None:
        stopped meanwhile); a refusal (409 conflict, 403, 422) is raised."""
        pause = FIRST_PAUSE_S
        while True:
            try:
                return await self._http._send(_work.declare([t.spec for t in self._tasks]))
            except Unavailable as e:
                log.warning("cannot declare the tasks yet (%s); again in %.1f s", e, pause)
            assert self._stop_event is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), pause)
            if self._stopping:
                return None
            pause = min(MAX_PAUSE_S, pause * 2)

    async def _serve(self) -> int:
        declared = await self._declare()
        if declared is None:
            return 0
        settings = {d.name: d.settings for d in declared}
        for task in self._tasks:
            declared_size = settings.get(task.name, {}).get("concurrency")
            size = task.concurrency or (declared_size if isinstance(declared_size, int) else 1)
            self._slots[task.name] = _Slots(task, size)
        self._capacity = sum(s.size for s in self._slots.values())
        threads = sum(s.size for s in self._slots.values() if not s.task.is_async)
        if threads:
            self._pool = _Pool(threads)
        log.info(
            "serving %s on %s",
            ", ".join(f"{n} (concurrency {s.size})" for n, s in self._slots.items()),
            self._w.url,
        )
        loops = [
            self._spawn(self._heartbeat_loop(), "heartbeat"),
            self._spawn(self._flush_loop(), "flush"),
            self._spawn(self._progress_loop(), "progress"),
            self._spawn(self._limits_loop(), "limits"),
        ]
        claimer = self._spawn(self._claim_loop(), "claim")
        assert self._stop_event is not None
        await self._stop_event.wait()
        claimer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await claimer
        if self._fatal is not None:
            for t in loops:
                t.cancel()
            raise self._fatal
        code = await self._drain()
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        return code

    def _spawn(self, loop: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Starts one of the run's loops; one that dies of a bug stops the run with its error."""

        def died(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("the %s loop failed", name, exc_info=task.exception())
                self._fatal = self._fatal or task.exception()
                self.stop()

        task = asyncio.create_task(loop, name=f"hopper-{name}")
        task.add_done_callback(died)
        return task

    def _busy(self) -> int:
        """Jobs this worker still speaks for: waiting, running, or with an
        outcome not yet answered (a lost job is the server's again)."""
        return len(self._held)

    async def _drain(self) -> int:
        """After the claims stopped: waits up to the grace period until every
        job ran and its outcome was answered."""
        deadline = time.monotonic() + self._w.grace_s
        self._flush_now.set()
        while self._busy():
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "grace period over with %d job(s) unfinished; their leases bring them back",
                    self._busy(),
                )
                return 1
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        log.info("stopped: every job finished and was reported")
        return 0

    # ---- claiming and running -----------------------------------------------

    async def _claim_loop(self) -> None:
        pause = FIRST_PAUSE_S
        queues = list(self._slots)
        while not self._stopping:
            free = sum(max(0, s.free) for s in self._slots.values())
            if free <= 0:
                self._changed.clear()
                await self._changed.wait()
                continue
            if free < self._capacity // 2 and self._busy() > 0:
                # Jobs are finishing: a moment more lets one claim bring a batch.
                await asyncio.sleep(GATHER_S)
                free = sum(max(0, s.free) for s in self._slots.values())
            want = min(self._w.max_claim, free)
            call = _work.claim(queues, want, self._w.claim_wait_ms, self._worker_id)
            try:
                claimed = await self._http._send(call)
            except (Unauthorized, Forbidden, InvalidArgs) as e:
                log.error("claim refused: %s", e)
                self._fatal = e
                self.stop()
                return
            except HopperError as e:
                log.warning("claim failed (%s); again in %.1f s", e, pause)
                await asyncio.sleep(pause)
                pause = min(MAX_PAUSE_S, pause * 2)
                continue
            pause = FIRST_PAUSE_S
            if claimed.worker != self._worker_id:
                if self._worker_id is not None:
                    log.warning(
                        "the server replaced worker id %s by %s", self._worker_id, claimed.worker
                    )
                self._worker_id = claimed.worker
            self._heartbeat_s = max(0.05, claimed.heartbeat_ms / 1000)
            for job in claimed.jobs:
                self._take(job)

    def _take(self, job: _work.ClaimedJob) -> None:
        slots = self._slots.get(job.queue)
        if slots is None:  # not asked for; give it back as a failed attempt
            log.error("claim returned job %s of queue %s, not served here", job.id, job.queue)
            ctx = JobContext(job, lambda _: None)
            held = _Held(job, next(iter(self._slots.values())), ctx)
            self._held[job.lease] = held
            self._failures.append((held, f"worker does not serve queue {job.queue}", True))
            self._outcomes_waiting.set()
            return
        held = _Held(job, slots, JobContext(job, lambda p: self._post_progress(held, p)))
        self._held[job.lease] = held
        assert self._loop is not None
        now = self._loop.time()
        if job.soft_limit_ms:
            held.soft_at = now + job.soft_limit_ms / 1000
        if job.hard_limit_ms:
            held.hard_at = now + job.hard_limit_ms / 1000
        if slots.running < slots.size:
            self._start(held)
        else:
            slots.backlog.append(held)

    def _start(self, held: _Held) -> None:
        held.slots.running += 1
        if held.slots.task.is_async:
            held.work = asyncio.create_task(self._run_async(held))
        else:
            assert self._pool is not None
            self._pool.submit(self._run_sync, held)

    def _run_sync(self, held: _Held) -> None:
        """In a pool thread: runs the function, encodes its result, posts the outcome."""
        try:
            value = held.slots.task.fn(held.job.args, held.ctx)
            outcome: _Outcome = (held, "ok", _work.encode_result(value), True)
        except BaseException as e:
            outcome = failure(held, e)
        self._inbox.append(outcome)
        if not self._inbox_signalled:
            self._inbox_signalled = True
            loop = self._loop
            assert loop is not None
            with contextlib.suppress(RuntimeError):  # the loop closed: the lease brings it back
                loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        self._inbox_signalled = False
        inbox = self._inbox
        while inbox:
            self._finished(*inbox.popleft())

    async def _run_async(self, held: _Held) -> None:
        try:
            value = await held.slots.task.fn(held.job.args, held.ctx)
            outcome: _Outcome = (held, "ok", _work.encode_result(value), True)
        except asyncio.CancelledError:
            outcome = (held, "error", "cancelled by the worker (hard limit)", True)
            held.lost = True
        except Exception as e:
            outcome = failure(held, e)
        self._finished(*outcome)

    def _finished(self, held: _Held, kind: str, text: str, retryable: bool) -> None:
        """A run ended: frees its slot (starting a waiting job) and queues its outcome."""
        held.finished = True
        slots = held.slots
        slots.running -= 1
        while slots.backlog:
            waiting = slots.backlog.popleft()
            if not waiting.lost:  # a lost one is the server's again: not run here
                self._start(waiting)
                break
        self._progress.pop(held.job.lease, None)
        if held.lost:
            log.info("job %s ended after its lease was lost; outcome dropped", held.job.id)
        elif kind == "ok":
            self._completes.append((held, text))
        else:
            if retryable:
                log.info("job %s attempt %d failed", held.job.id, held.job.attempt)
            self._failures.append((held, text, retryable))
        if len(self._completes) + len(self._failures) >= self._w.flush_max:
            self._flush_now.set()
        self._outcomes_waiting.set()
        self._changed.set()

    async def _limits_loop(self) -> None:
        """Every tick: raises the cancel flag of jobs past their soft limit and
        lets go of those past their hard limit (one sweep, not a timer per job)."""
        assert self._loop is not None
        while True:
            await asyncio.sleep(LIMITS_TICK_S)
            now = self._loop.time()
            for held in list(self._held.values()):
                if held.finished:
                    continue
                if now >= held.hard_at:
                    self._hard_limit(held)
                elif now >= held.soft_at and not held.ctx.cancelled():
                    held.ctx._cancel()

    def _hard_limit(self, held: _Held) -> None:
        """The hard limit passed: the server fails the attempt; this worker
        stops speaking for the job (and cancels it when it is async)."""
        log.warning("job %s passed its hard limit; the server fails the attempt", held.job.id)
        self._lose(held)
        if held.work is not None:
            held.work.cancel()

    def _lose(self, held: _Held) -> None:
        held.lost = True
        held.ctx._cancel()
        self._held.pop(held.job.lease, None)
        self._changed.set()

    # ---- heartbeats ---------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            if self._worker_id is None:  # no claim answered yet: no id, no period
                await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(self._heartbeat_s)
            try:
                beat = await self._http._send(_work.heartbeat(self._worker_id, list(self._held)))
            except HopperError as e:
                log.warning("heartbeat failed: %s", e)
                continue
            for lease in beat.lost:
                held = self._held.get(lease)
                if held is not None:
                    log.warning("job %s: lease lost (recovered or cancelled)", held.job.id)
                    self._lose(held)
            for lease in beat.cancel:
                held = self._held.get(lease)
                if held is not None:
                    held.ctx._cancel()

    # ---- outcomes -----------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._outcomes_waiting.wait()
            if not self._flush_now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_now.wait(), self._w.flush_ms / 1000)
            if not self._stopping:
                self._flush_now.clear()
            self._outcomes_waiting.clear()
            n = self._w.flush_max
            completes = [(h, r) for h, r in self._completes[:n] if not h.lost]
            failures = [(h, e, r) for h, e, r in self._failures[:n] if not h.lost]
            del self._completes[:n], self._failures[:n]
            if self._completes or self._failures:
                self._outcomes_waiting.set()
            sent = await asyncio.gather(
                self._send_completes(completes), self._send_failures(failures)
            )
            if not all(sent):
                await asyncio.sleep(FIRST_PAUSE_S)

    async def _send_completes(self, items: list[tuple[_Held, str]]) -> bool:
        if not items:
            return True
        call = _work.complete([(h.job.lease, r) for h, r in items])
        try:
            statuses = await self._http._send(call)
        except HopperError as e:
            if e.status in (0, 500, 502, 503, 504, 429):
                log.warning("complete of %d job(s) failed (%s); sending again", len(items), e)
                self._completes[:0] = items
                self._outcomes_waiting.set()
                return False
            if len(items) > 1:  # one result the server refuses: find it
                half = len(items) // 2
                a = await self._send_completes(items[:half])
                b = await self._send_completes(items[half:])
                return a and b
            held = items[0][0]
            self._failures.append((held, f"the server refused the result: {e}", True))
            self._outcomes_waiting.set()
            return True
        self._settled([h for h, _ in items], statuses, "completed")
        return True

    async def _send_failures(self, items: list[tuple[_Held, str, bool]]) -> bool:
        if not items:
            return True
        call = _work.fail([(h.job.lease, e, r) for h, e, r in items])
        try:
            statuses = await self._http._send(call)
        except HopperError as e:
            log.warning("fail of %d job(s) not sent (%s); sending again", len(items), e)
            self._failures[:0] = items
            self._outcomes_waiting.set()
            return False
        self._settled([h for h, _, _ in items], statuses, "failed")
        return True

    def _settled(self, helds: list[_Held], statuses: list[_work.ItemStatus], what: str) -> None:
        for i, held in enumerate(helds):
            status = statuses[i].status if i < len(statuses) else "unknown"
            if status in ("stale", "unknown"):
                log.warning(
                    "job %s: outcome refused (%s lease); the server keeps its own",
                    held.job.id,
                    status,
                )
            self._held.pop(held.job.lease, None)
        self._changed.set()

    # ---- progress -----------------------------------------------------------

    def _post_progress(self, held: _Held, encoded: str) -> None:
        """From the task (any thread): keeps the newest progress for sending."""
        self._progress[held.job.lease] = (held, encoded)
        loop = self._loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._progress_waiting.set)

    async def _progress_loop(self) -> None:
        while True:
            await self._progress_waiting.wait()
            self._progress_waiting.clear()
            batch, self._progress = self._progress, {}
            await asyncio.gather(
                *(self._send_progress(h, p) for h, p in batch.values() if not h.lost)
            )

    async def _send_progress(self, held: _Held, encoded: str) -> None:
        try:
            await self._http._send(_work.progress(held.job.lease, encoded))
        except HopperError as e:
            log.warning("progress of job %s not sent: %s", held.job.id, e)
