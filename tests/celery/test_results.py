"""Unchanged Celery producer code against Hopper workers: what `.get()` returns.

A real `celery` 5.7 producer sends with `send_task`, `delay` and `apply_async`;
the bridge (`hopper-worker` with `HOPPER_CELERY_QUEUES`) takes the messages in,
Hopper workers run them (a Python SDK task, the Rust `echo`), and the Celery
result written back is what `AsyncResult.get()` / `.status` / `.ready()` read.
Without the bridge no result ever comes: every test here fails on its wait.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from celery.exceptions import TaskRevokedError

from conftest import Hopper, wait_until


def test_send_task_returns_the_python_task_result(bridged: Hopper) -> None:
    """send_task by name → the SDK task `tasks.add` (params a, b) → SUCCESS with 5,
    written as celery's result backend writes it (key, fields, TTL)."""
    app = bridged.celery()
    result = app.send_task("tasks.add", args=[2], kwargs={"b": 3})
    assert result.get(timeout=30) == 5
    assert result.status == "SUCCESS"
    assert result.ready()

    key = bridged.result_key(result.id)
    results = bridged.results_redis()
    meta = json.loads(results.get(key) or b"{}")
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == 5
    assert meta["task_id"] == result.id
    assert meta["children"] == []
    assert meta["traceback"] is None
    assert meta["date_done"]
    ttl = results.ttl(key)
    assert 0 < ttl <= 86400

    job = bridged.job(result.id)
    assert job is not None, "GET /v1/jobs/<celery id> resolves the Celery id"
    assert job["kind"] == "tasks.add"
    assert job["state"] == "succeeded"
    assert job["args"] == {"a": 2, "b": 3}


def test_delay_of_a_producer_side_task(bridged: Hopper) -> None:
    """The producer declares the task's signature (its body never runs there) and calls
    `.delay` like any Celery code base does."""
    app = bridged.celery()

    @app.task(name="tasks.add")  # type: ignore[untyped-decorator]
    def add(a: int, b: int) -> int:
        raise AssertionError("runs on a Hopper worker, never in the producer")

    results = [add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]


def test_rust_task_result(bridged: Hopper) -> None:
    """A built-in Rust task (`echo`), called with keyword arguments only."""
    app = bridged.celery()
    result = app.send_task("echo", kwargs={"message": "hi"})
    value = result.get(timeout=30)
    assert value["message"] == "hi"
    assert result.status == "SUCCESS"


def test_apply_async_countdown_and_priority(hopper: Hopper) -> None:
    """countdown → the job waits (scheduled) and runs after it; a priority more urgent
    than HOPPER_CELERY_DEFAULT_PRIORITY (Redis: a lower number) → a `high` job."""
    hopper.start_api()
    hopper.start_bridge(HOPPER_CELERY_DEFAULT_PRIORITY="5")
    hopper.start_py_worker()
    app = hopper.celery()

    sent_ms = time.time() * 1000
    later = app.send_task("tasks.add", args=[1, 2], countdown=2, priority=9)
    urgent = app.send_task("tasks.add", args=[3, 4], priority=0)

    assert urgent.get(timeout=30) == 7
    assert hopper.job(urgent.id)["priority"] == "high"  # type: ignore[index]

    job = hopper.wait_job(later.id, "scheduled", "succeeded", within=10)
    if job["state"] == "scheduled":
        assert job["run_at_ms"] >= sent_ms + 1900
    assert later.get(timeout=30) == 3
    job = hopper.wait_job(later.id, "succeeded")
    assert job["started_at_ms"] >= sent_ms + 1900, "ran before its countdown"
    assert job["priority"] != "high"


def test_failing_task_raises_on_get(bridged: Hopper) -> None:
    """An SDK task raising ValueError → FAILURE; `.get()` raises ValueError with its
    text, the traceback carries Hopper's error."""
    app = bridged.celery()
    result = app.send_task("tasks.fail", args=["bad input 7"])
    with pytest.raises(ValueError, match="bad input 7"):
        result.get(timeout=30)
    assert result.status == "FAILURE"
    assert "bad input 7" in (result.traceback or "")
    job = bridged.job(result.id)
    assert job is not None
    assert job["state"] == "dead"


def test_ignore_result_writes_no_result(bridged: Hopper) -> None:
    """ignore_result: the job runs, no result key is ever written (a later task's
    result, written after it, is there; the ignored one's still is not)."""
    app = bridged.celery()
    ignored = app.send_task("tasks.add", args=[1, 1], ignore_result=True)
    job = bridged.wait_job(ignored.id, "succeeded")
    assert job["result"] == 2
    assert "notify" not in job

    control = app.send_task("tasks.add", args=[2, 2])
    assert control.get(timeout=30) == 4
    results = bridged.results_redis()
    assert results.exists(bridged.result_key(control.id))
    assert not results.exists(bridged.result_key(ignored.id))


def test_expired_message_is_revoked(hopper: Hopper) -> None:
    """A message whose `expires` passed before a worker got to it → the job is
    cancelled with the reason; `.get()` raises TaskRevokedError; the task never ran."""
    hopper.start_api()
    hopper.start_py_worker()
    app = hopper.celery()
    result = app.send_task("tasks.add", args=[1, 2], expires=0.5)
    time.sleep(0.6)  # the expiry itself must pass: nothing to poll
    hopper.start_bridge()

    with pytest.raises(TaskRevokedError):
        result.get(timeout=30)
    assert result.status == "REVOKED"
    job = hopper.wait_job(result.id, "cancelled")
    assert "expired" in (job["error"] or "")
    assert job["result"] is None, "an expired job never runs"


def test_task_id_that_is_not_a_uuid(bridged: Hopper) -> None:
    """Celery lets the producer choose any task id: it still resolves (UUIDv5 in Hopper)
    and the result is written under the id the producer chose."""
    app = bridged.celery()
    task_id = f"report-{uuid.uuid4().hex[:8]}"
    result = app.send_task("tasks.add", args=[20, 22], task_id=task_id)
    assert result.get(timeout=30) == 42
    assert bridged.results_redis().exists(bridged.result_key(task_id))
    job = wait_until("the job by its Celery id", lambda: bridged.job(task_id))
    assert job["state"] == "succeeded"
