"""What the bridge refuses, loudly: never a silent drop.

A message the bridge cannot run — a task no one declared, a pickled body, a
canvas (chain) — ends as a dead letter of the intake task `celery.intake`
whose error names the problem, and (unless ignore_result) as a FAILURE result,
so the producer's `.get()` raises instead of waiting for ever.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import chain
from celery.exceptions import NotRegistered

from conftest import Hopper, wait_until

INTAKE = "celery.intake"


def dead_letter_of(hopper: Hopper, task_id: str) -> dict[str, Any]:
    """The intake's dead letter carrying the message of Celery task `task_id`."""

    def probe() -> dict[str, Any] | None:
        for job in hopper.dead(INTAKE):
            if task_id in str(job["args"].get("message", "")):
                return job
        return None

    return wait_until(f"a dead letter of {INTAKE} for {task_id}", probe)


def test_unknown_task_is_dead_lettered_by_name(bridged: Hopper) -> None:
    app = bridged.celery()
    result = app.send_task("tasks.nobody_declared", args=[1])
    with pytest.raises(NotRegistered):
        result.get(timeout=30)
    assert result.status == "FAILURE"
    dead = dead_letter_of(bridged, result.id)
    assert "tasks.nobody_declared" in (dead["error"] or "")
    assert "HOPPER_CELERY_ROUTES" in (dead["error"] or ""), "the fix is named"
    assert dead["args"]["source"] == "celery", "the kombu queue it came from"


def test_pickle_message_is_dead_lettered_with_the_reason(bridged: Hopper) -> None:
    app = bridged.celery()
    result = app.send_task("tasks.add", args=[1, 2], serializer="pickle")
    with pytest.raises(ValueError, match="pickle"):
        result.get(timeout=30)
    dead = dead_letter_of(bridged, result.id)
    error = dead["error"] or ""
    assert "pickle" in error
    assert "json" in error, "the fix (task_serializer='json') is named"
    assert bridged.job(result.id) is None, "no job of tasks.add was made"


def test_chain_is_refused(bridged: Hopper) -> None:
    app = bridged.celery()
    last = chain(app.signature("tasks.add", (1, 2)), app.signature("tasks.add", (3,)))()
    first = last
    while first.parent is not None:
        first = first.parent
    assert first.id != last.id
    with pytest.raises(ValueError, match="chain"):
        first.get(timeout=30)
    dead = dead_letter_of(bridged, first.id)
    assert "chain" in (dead["error"] or "")
    assert bridged.job(first.id) is None, "the chain's first task did not run alone"
    assert bridged.job(last.id) is None


def test_refused_ignore_result_message_still_dead_letters(bridged: Hopper) -> None:
    """ignore_result only spares the result: the refusal is still a dead letter, and no
    result key is written."""
    app = bridged.celery()
    result = app.send_task("tasks.nobody_declared", ignore_result=True)
    dead = dead_letter_of(bridged, result.id)
    assert "tasks.nobody_declared" in (dead["error"] or "")
    assert not bridged.results_redis().exists(bridged.result_key(result.id))
