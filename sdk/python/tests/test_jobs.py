"""Jobs through the SDK against the real API and worker: submit, wait, batches,
the errors a bad submission maps to, dead letters and API keys."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import timedelta

import pytest

from hopper import AsyncClient, Client, InvalidArgs, NotFound, Unauthorized

from .conftest import Hopper


def test_echo_job_runs_and_the_cli_shows_its_result(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_worker("echo")
    with Client(hopper.url) as client:
        submitted = client.submit("echo", {"message": "hello from python"})
        assert submitted.created
        job = client.wait(submitted.id, timeout=30)
    assert job.state == "succeeded", job
    assert job.result["message"] == "hello from python"
    assert job.attempts == 1
    shown = json.loads(hopper.cli("--json", "jobs", "show", submitted.id))
    assert shown["id"] == submitted.id
    assert shown["state"] == "succeeded"
    assert shown["result"]["message"] == "hello from python"


def test_submit_many_queues_every_job_and_all_finish(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_worker("noop", HOPPER_QUEUE_NOOP_CONCURRENCY="64")
    with Client(hopper.url) as client:
        ids = client.submit_many("noop", [{} for _ in range(2_000)])
        assert len(set(ids)) == 2_000
        last = client.wait(ids[-1], timeout=60)
        assert last.state == "succeeded"
        states = {client.job(i).state for i in ids[::100]}
    assert states == {"succeeded"}


def test_bad_args_raise_invalid_args_naming_the_field(hopper: Hopper) -> None:
    hopper.start_api()
    with Client(hopper.url) as client, pytest.raises(InvalidArgs) as caught:
        client.submit("echo", {"message": 42})
    assert caught.value.status == 422
    assert caught.value.code == "invalid_args"
    assert caught.value.field == "message"


def test_per_job_overrides_run_the_job_and_bounds_are_named(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_worker("echo")
    with Client(hopper.url) as client:
        submitted = client.submit(
            "echo",
            {"message": "flaky", "fail_attempts": 1},
            hard_limit_ms=10_000,
            soft_limit_ms=5_000,
            backoff_base_ms=10,
            backoff_max_ms=20,
        )
        job = client.wait(submitted.id, timeout=30)
        assert job.state == "succeeded", job
        assert job.attempts == 2
        with pytest.raises(InvalidArgs) as caught:
            client.submit("echo", {"message": "x"}, hard_limit_ms=10**12)
    assert caught.value.status == 422
    assert caught.value.field == "hard_limit_ms"


def test_a_job_is_forgotten_after_its_own_retention(hopper: Hopper) -> None:
    queue = {"HOPPER_QUEUE_ECHO_RETENTION_MS": "60000"}
    hopper.start_api(**queue, HOPPER_RETENTION_SWEEP_MS="200")
    hopper.start_worker("echo", **queue, HOPPER_HEARTBEAT_MS="100", HOPPER_LEASE_MS="1000")
    with Client(hopper.url) as client:
        brief = client.submit(
            "echo", {"message": "brief"}, retention_ms=timedelta(milliseconds=200)
        )
        [batched] = client.submit_many("echo", [{"message": "batched"}], retention_ms=200)
        plain = client.submit("echo", {"message": "plain"})
        for job_id in (brief.id, batched, plain.id):
            assert client.wait(job_id, timeout=30).state == "succeeded"
        # Redis forgets them and the sweep deletes their records: gone, while the
        # queue keeps its other jobs a minute.
        for job_id in (brief.id, batched):
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.job(job_id)
                except NotFound:
                    break
                assert time.monotonic() < deadline, f"{job_id} still kept"
                time.sleep(0.05)
        assert client.job(plain.id).state == "succeeded"
        with pytest.raises(InvalidArgs) as caught:
            client.submit("echo", {"message": "x"}, retention_ms=timedelta(hours=1))
    assert caught.value.status == 422
    assert caught.value.field == "retention_ms"


def test_unknown_task_raises_not_found_listing_known_kinds(hopper: Hopper) -> None:
    hopper.start_api()
    with Client(hopper.url) as client, pytest.raises(NotFound) as caught:
        client.submit("no-such-task", {})
    assert caught.value.code == "unknown_task"
    assert "echo" in caught.value.known
    assert "noop" in caught.value.known


def test_a_failing_job_reaches_the_dead_letters_and_retry_requeues_it(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_worker("echo")
    with Client(hopper.url) as client:
        submitted = client.submit("echo", {"message": "x", "fail": "boom"}, max_attempts=1)
        job = client.wait(submitted.id, timeout=30)
        assert job.state == "dead"
        assert job.error is not None
        assert "boom" in job.error
        dead = client.dead("echo")
        assert dead.total == 1
        assert [j.id for j in dead.jobs] == [submitted.id]
        assert client.retry_dead("echo", [submitted.id]) == 1
        # (Not "no dead letters now": the worker may already have failed it again.)
        again = client.wait(submitted.id, timeout=30)
        assert again.state == "dead"
        # A fresh attempt budget, the history kept: it really ran again.
        assert again.attempts == 1
        assert [a.outcome for a in again.history] == ["dead", "dead"]
        assert client.purge_dead("echo") == 1
        assert client.dead("echo").total == 0


async def test_async_client_submits_and_waits(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_worker("echo")
    async with AsyncClient(hopper.url) as client:
        submitted = await client.submit("echo", {"message": "async"}, idempotency_key="k1")
        repeat = await client.submit("echo", {"message": "async"}, idempotency_key="k1")
        assert repeat.id == submitted.id
        assert not repeat.created
        job = await client.wait(submitted.id, timeout=30)
    assert job.result["message"] == "async"


def test_api_keys_a_created_key_works_and_a_bad_one_is_unauthorized(hopper: Hopper) -> None:
    hopper.start_api(HOPPER_AUTH="keys")
    out = hopper.cli("keys", "create", "--tenant", "acme", "--scopes", "submit,read")
    match = re.search(r"hop_\S+", out)
    assert match, out
    with Client(hopper.url, api_key=match.group(0)) as client:
        submitted = client.submit("noop", {})
        assert client.job(submitted.id).tenant == "acme"
    with Client(hopper.url, api_key="hop_nope_nothing") as bad, pytest.raises(Unauthorized):
        bad.job(submitted.id)
    with Client(hopper.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.submit("noop", {})


async def test_a_unique_job_submitted_concurrently_is_one_job(hopper: Hopper) -> None:
    hopper.start_api()
    async with AsyncClient(hopper.url) as client:
        submitted = await asyncio.gather(
            *(
                client.submit("echo", {"message": "once"}, unique_until_finished=True)
                for _ in range(20)
            )
        )
        assert sum(s.created for s in submitted) == 1
        assert {s.id for s in submitted} == {submitted[0].id}
        keyed = [
            await client.submit(
                "echo", {"message": m}, unique_for_ms=60_000, unique_key="daily-report"
            )
            for m in ("a", "b")
        ]
    assert [k.created for k in keyed] == [True, False]
    assert keyed[0].id == keyed[1].id
