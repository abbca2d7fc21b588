"""The Python worker against the real API, Redis and Postgres: tasks from
`sample_tasks.py` served by `python -m hopper worker` processes, submitted over
HTTP, their outcomes read back through the SDK and the `hopper` CLI.

Running jobs are steered through files (see `sample_tasks.py`), and every
wait polls a condition (a job's state, a log line, a file) with a deadline."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from hopper import Client, Forbidden, InvalidArgs, Job, NotFound

from .conftest import Hopper

T = TypeVar("T")

#: Leases short enough that a killed worker's jobs come back within seconds.
FAST_LEASE = {"HOPPER_HEARTBEAT_MS": "200", "HOPPER_LEASE_MS": "1500"}


def poll(what: str, probe: Callable[[], T | None], within: float = 30.0) -> T:
    """`probe()` again until it returns something not None; fails after `within` s."""
    deadline = time.monotonic() + within
    while True:
        got = probe()
        if got is not None:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        time.sleep(0.02)


def started(folder: Path, name: str, attempt: int) -> int | None:
    """The pid of the worker that started attempt `attempt` of hold job `name`."""
    marker = folder / f"{name}.started.{attempt}"
    return int(marker.read_text()) if marker.exists() and marker.read_text() else None


def hold(client: Client, folder: Path, name: str) -> str:
    return client.submit("py-hold", {"dir": str(folder), "name": name}).id


def test_a_python_task_runs_in_the_python_worker_and_the_cli_shows_its_result(
    hopper: Hopper,
) -> None:
    hopper.start_api()
    proc = hopper.start_py_worker()
    with Client(hopper.url) as client:
        sync_id = client.submit("py-echo", {"message": "hello from a python task"}).id
        async_id = client.submit("py-async-echo", {"message": "and from asyncio"}).id
        job = client.wait(sync_id, timeout=30)
        async_job = client.wait(async_id, timeout=30)
    assert job.state == "succeeded", job
    assert job.result["message"] == "hello from a python task"
    assert job.result["attempt"] == 1
    assert job.result["pid"] == proc.pid
    assert async_job.state == "succeeded", async_job
    assert async_job.result == {"message": "and from asyncio", "attempt": 1, "job": async_id}
    shown = json.loads(hopper.cli("--json", "jobs", "show", sync_id))
    assert shown["state"] == "succeeded"
    assert shown["result"]["message"] == "hello from a python task"


def test_the_declared_schema_guards_submissions(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_py_worker()
    with Client(hopper.url) as client, pytest.raises(InvalidArgs) as caught:
        client.submit("py-echo", {"message": 42})
    assert "message" in (caught.value.field or caught.value.detail), caught.value


def test_many_jobs_all_complete_through_batched_acks(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_py_worker("--concurrency", "16")
    with Client(hopper.url) as client:
        ids = client.submit_many("py-echo", [{"message": str(i)} for i in range(1_000)])
        client.wait(ids[-1], timeout=60)
        jobs = [client.job(i) for i in ids[::50]]
    assert {j.state for j in jobs} == {"succeeded"}
    assert all(j.result["message"] == str(i * 50) for i, j in enumerate(jobs))


def test_a_python_worker_killed_mid_job_loses_nothing(hopper: Hopper, tmp_path: Path) -> None:
    hopper.start_api(**FAST_LEASE)
    first = hopper.start_py_worker()
    with Client(hopper.url) as client:
        holds = [hold(client, tmp_path, f"h{i}") for i in range(3)]
        echoes = client.submit_many("py-echo", [{"message": str(i)} for i in range(50)])
        for name in ("h0", "h1", "h2"):
            assert poll(f"{name} started", partial(started, tmp_path, name, 1)) == first.pid
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        for i in range(3):
            (tmp_path / f"h{i}.release").touch()
        second = hopper.start_py_worker()
        done = [client.wait(i, timeout=60) for i in holds + echoes]
    assert {j.state for j in done} == {"succeeded"}, [j for j in done if j.state != "succeeded"]
    for job in done[:3]:
        # The killed attempt was recovered from its lease and ran again, once, elsewhere.
        assert job.result == {"pid": second.pid, "attempt": 2}, job
        assert job.attempts == 2
        assert [a.outcome for a in job.history] == ["worker_lost", "succeeded"]
    assert [j.result["message"] for j in done[3:]] == [str(i) for i in range(50)]


def test_a_failing_task_is_retried_then_dead_lettered_with_its_traceback(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_py_worker()
    with Client(hopper.url) as client:
        failing = client.submit("py-fail", {}).id
        permanent = client.submit("py-permanent", {}).id
        job = client.wait(failing, timeout=30)
        refused = client.wait(permanent, timeout=30)
        dead = client.dead("py-fail")
    assert job.state == "dead", job
    assert job.attempts == 3
    assert job.error is not None
    assert job.error.startswith("Traceback (most recent call last):"), job.error
    assert "in always_fails" in job.error
    assert job.error.rstrip().endswith("ValueError: boom on attempt 3"), job.error
    assert [a.attempt for a in job.history] == [1, 2, 3]
    assert "ValueError: boom on attempt 1" in (job.history[0].error or "")
    assert [j.id for j in dead.jobs] == [failing]
    assert refused.state == "dead", refused
    assert refused.attempts == 1
    assert refused.error is not None
    assert "Permanent: this input can never work" in refused.error


def test_a_result_json_cannot_carry_fails_the_attempt_naming_its_type(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_py_worker()
    with Client(hopper.url) as client:
        job = client.wait(client.submit("py-set", {}).id, timeout=30)
    assert job.state == "dead", job
    assert job.attempts == 2
    assert job.result is None
    assert job.error == "result is not JSON-serialisable: set"


def test_the_soft_limit_raises_the_cancel_flag_and_the_task_returns_early(
    hopper: Hopper,
) -> None:
    hopper.start_api()
    hopper.start_py_worker()
    with Client(hopper.url) as client:
        job = client.wait(client.submit("py-soft", {}).id, timeout=30)
    assert job.state == "succeeded", job
    assert job.result["stopped"] is True
    assert 250 <= job.result["ran_ms"] < 15_000, job.result


def test_the_server_fails_an_attempt_past_its_hard_limit(hopper: Hopper) -> None:
    hopper.start_api(**FAST_LEASE)
    proc = hopper.start_py_worker()
    with Client(hopper.url) as client:
        sync_id = client.submit("py-hard", {"seconds": 3}).id
        async_id = client.submit("py-async-hard", {"seconds": 30}).id
        jobs = [client.wait(i, timeout=30) for i in (sync_id, async_id)]
        # The thread ran on past the limit; what it returned then changed nothing.
        hopper.wait_for_log(proc, f"job {sync_id} ended after its lease was lost")
        hopper.wait_for_log(proc, f"job {async_id} ended after its lease was lost")
        after = [client.job(i) for i in (sync_id, async_id)]
    for job in [*jobs, *after]:
        assert job.state == "dead", job
        assert job.attempts == 1
        assert job.result is None
        assert job.error, job


def test_progress_shows_on_the_running_job(hopper: Hopper, tmp_path: Path) -> None:
    hopper.start_api()
    hopper.start_py_worker()
    with Client(hopper.url) as client:
        job_id = hold(client, tmp_path, "p")

        def progress() -> Job | None:
            job = client.job(job_id)
            return job if job.progress else None

        running = poll("progress shown", progress)
        assert running.state == "running"
        assert running.progress == {"stage": "holding", "attempt": 1}
        (tmp_path / "p.release").touch()
        assert client.wait(job_id, timeout=30).state == "succeeded"


def test_sigterm_lets_the_running_job_finish_and_claims_nothing_more(
    hopper: Hopper, tmp_path: Path
) -> None:
    hopper.start_api()
    proc = hopper.start_py_worker()
    with Client(hopper.url) as client:
        running = hold(client, tmp_path, "t")
        poll("t started", partial(started, tmp_path, "t", 1))
        proc.send_signal(signal.SIGTERM)
        hopper.wait_for_log(proc, "no more claims")
        later = client.submit("py-echo", {"message": "after the signal"}).id
        assert proc.poll() is None, "the worker left before its job finished"
        (tmp_path / "t.release").touch()
        assert proc.wait(timeout=30) == 0, hopper.log_of(proc)
        finished = client.job(running)
        waiting = client.job(later)
    assert finished.state == "succeeded", finished
    assert finished.result == {"pid": proc.pid, "attempt": 1}
    assert waiting.state == "pending", waiting
    assert waiting.attempts == 0


def test_a_second_schema_under_the_same_version_refuses_to_start(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_py_worker()
    other = hopper.start_py_worker(target="tests.sample_conflict:worker", ready=False)
    assert other.wait(timeout=30) == 1
    log = hopper.log_of(other)
    assert "schema_conflict" in log, log
    assert "py-echo" in log, log


def key(hopper: Hopper, tenant: str, scopes: str, *extra: str) -> str:
    out = hopper.cli("keys", "create", "--tenant", tenant, "--scopes", scopes, *extra)
    found = re.search(r"hop_\S+", out)
    assert found, out
    return found.group(0)


def test_a_work_key_serves_its_tenant_and_only_its_queues(hopper: Hopper) -> None:
    hopper.start_api(HOPPER_AUTH="keys")
    work = key(hopper, "acme", "work", "--queues", "py-echo")
    submit = key(hopper, "acme", "submit,read")
    other = key(hopper, "globex", "submit,read")
    proc = hopper.start_py_worker("--queues", "py-echo", HOPPER_API_KEY=work)
    with Client(hopper.url, api_key=submit) as client:
        job = client.wait(client.submit("py-echo", {"message": "for acme"}).id, timeout=30)
    assert job.state == "succeeded", job
    assert job.result["tenant"] == "acme"
    assert job.result["pid"] == proc.pid
    # py-echo was declared over HTTP by acme: private to acme.
    with Client(hopper.url, api_key=other) as client, pytest.raises((NotFound, Forbidden)):
        client.submit("py-echo", {"message": "for globex"})
    # The key may not serve py-hold: the worker cannot declare it and says why.
    refused = hopper.start_py_worker("--queues", "py-hold", HOPPER_API_KEY=work, ready=False)
    assert refused.wait(timeout=30) == 1
    assert "403" in hopper.log_of(refused), hopper.log_of(refused)
