"""Workflows through the SDK: the builders' JSON, then against the real API and
`echo` worker — a chord whose body gets its members' results in order, the
errors a bad workflow maps to, listing, and cancelling a running workflow."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from hopper import (
    AsyncClient,
    Client,
    InvalidArgs,
    NotFound,
    Workflow,
    WorkflowView,
    chain,
    chord,
    group,
    task,
)

from .conftest import Hopper

T = TypeVar("T")


def test_builders_produce_the_documented_json() -> None:
    flow = Workflow(
        chain(
            task("echo", {"message": "a"}),
            group(task("echo", {"message": "b"}, max_attempts=2), task("noop")),
            chord(
                [task("echo", {"message": "c"})],
                task("echo", {"message": "d"}, input="parts"),
            ),
        ),
        name="nightly",
        on_failure="continue",
    )
    assert flow.to_json() == {
        "name": "nightly",
        "on_failure": "continue",
        "root": {
            "chain": [
                {"task": "echo", "args": {"message": "a"}},
                {
                    "group": [
                        {"task": "echo", "args": {"message": "b"}, "max_attempts": 2},
                        {"task": "noop", "args": {}},
                    ]
                },
                {
                    "chord": {
                        "header": [{"task": "echo", "args": {"message": "c"}}],
                        "body": {"task": "echo", "args": {"message": "d"}, "input": "parts"},
                    }
                },
            ]
        },
    }
    assert Workflow(task("noop")).to_json() == {
        "on_failure": "stop",
        "root": {"task": "noop", "args": {}},
    }


def test_builders_refuse_what_is_not_a_workflow() -> None:
    with pytest.raises(TypeError, match=r"chain\[1\] is a dict"):
        chain(task("echo"), {"task": "echo"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="body"):
        chord([task("echo")], "echo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_failure"):
        Workflow(task("echo"), on_failure="retry")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_attempts"):
        task("echo", max_attempts=0)


def echo_chord(n: int) -> Workflow:
    """`n` echo members side by side, then an echo body given their results."""
    return Workflow(
        chord(
            [task("echo", {"message": f"m{i}", "sleep_ms": 50 * (n - i)}) for i in range(n)],
            task("echo", {"message": "body"}),
        ),
        name="fan-in",
    )


def test_a_chord_of_echoes_gives_its_body_the_results_in_order(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_worker("echo", HOPPER_QUEUE_ECHO_CONCURRENCY="8")
    with Client(hopper.url) as client:
        submitted = client.submit_workflow(echo_chord(3))
        assert submitted.state == "running"
        assert submitted.name == "fan-in"
        assert [n.index for n in submitted.nodes] == [0, 1, 2, 3]
        assert submitted.nodes[3].deps == [0, 1, 2]
        assert submitted.nodes[3].path == "root.chord.body"

        done = client.wait_workflow(submitted.id, timeout=30)
        assert done.state == "succeeded", done
        assert done.finished_at_ms is not None
        assert done.counts == {"succeeded": 4}
        assert {n.state for n in done.nodes} == {"succeeded"}
        # Members finish in reverse (shorter sleeps last), the input keeps their order.
        body_input = done.result["input"]
        assert [r["message"] for r in body_input] == ["m0", "m1", "m2"]
        assert done.result["message"] == "body"
        body_job = client.job(done.nodes[3].job_id)
        assert body_job.args["input"] == body_input
        assert body_job.result == done.result

        listed = client.workflows(limit=5)
        assert [w.id for w in listed] == [submitted.id]
        assert listed[0].state == "succeeded"
        assert listed[0].nodes == []


async def test_the_async_client_runs_a_chain_and_lists_newest_first(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_worker("echo")
    async with AsyncClient(hopper.url) as client:
        first = await client.submit_workflow(task("echo", {"message": "alone"}))
        second = await client.submit_workflow(
            chain(task("echo", {"message": "one"}), task("echo", {"message": "two"}))
        )
        done = await client.wait_workflow(second.id, timeout=30, poll=0.2)
        assert done.state == "succeeded", done
        assert done.result["message"] == "two"
        assert done.result["input"]["message"] == "one"
        assert (await client.wait_workflow(first.id, timeout=30)).state == "succeeded"
        listed = await client.workflows()
        assert [w.id for w in listed] == [second.id, first.id]
        assert [w.id for w in await client.workflows(limit=1)] == [second.id]


def test_a_bad_workflow_raises_invalid_args_naming_its_json_path(hopper: Hopper) -> None:
    hopper.start_api()
    with Client(hopper.url) as client:
        # The second step is given the first one's result in `input`: it cannot set it too.
        bad = chain(task("echo", {"message": "a"}), task("echo", {"message": "b", "input": 1}))
        with pytest.raises(InvalidArgs) as caught:
            client.submit_workflow(bad)
        assert caught.value.status == 422
        assert caught.value.code == "invalid_workflow"
        assert caught.value.field == "root.chain[1].args.input"

        # The raw JSON is checked the same way.
        with pytest.raises(InvalidArgs) as caught:
            client.submit_workflow({"root": {"chain": []}})
        assert caught.value.field == "root.chain"

        # A task's own arguments are checked against its definition, node by node.
        with pytest.raises(InvalidArgs) as caught:
            client.submit_workflow(
                group(task("echo", {"message": "ok"}), task("echo", {"message": 42}))
            )
        assert caught.value.code == "invalid_args"
        assert caught.value.field == "root.group[1].args.message"

        with pytest.raises(NotFound) as missing:
            client.submit_workflow(chain(task("echo", {"message": "a"}), task("no-such-task")))
        assert missing.value.code == "unknown_task"
        assert missing.value.field == "root.chain[1].task"
        assert "echo" in missing.value.known

        with pytest.raises(NotFound) as missing:
            client.workflow("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
        assert missing.value.code == "workflow_not_found"
        assert client.workflows() == []


def test_cancelling_a_running_workflow_cancels_its_job_and_skips_the_rest(
    hopper: Hopper,
) -> None:
    hopper.start_api()
    hopper.start_worker("echo")
    with Client(hopper.url) as client:
        flow = client.submit_workflow(
            chain(
                task("echo", {"message": "long", "sleep_ms": 60_000}),
                task("echo", {"message": "never"}),
            )
        )
        first_job = flow.nodes[0].job_id
        wait_until(lambda: client.job(first_job).state == "running", "the first step to run")
        with pytest.raises(TimeoutError, match="not over"):
            client.wait_workflow(flow.id, timeout=0.3)

        cancelled = client.cancel_workflow(flow.id)
        assert (cancelled.id, cancelled.state_before, cancelled.state) == (
            flow.id,
            "running",
            "cancelled",
        )
        over = client.wait_workflow(flow.id, timeout=10)
        assert over.state == "cancelled"
        assert over.nodes[1].state == "skipped"
        # The running job stops at its worker's next heartbeat.
        assert client.wait(first_job, timeout=20).state == "cancelled"
        settled = wait_until(
            lambda: settled_view(client.workflow(flow.id)), "the first node to be cancelled"
        )
        assert settled.nodes[0].state == "cancelled"
        again = client.cancel_workflow(flow.id)
        assert (again.state_before, again.state) == ("cancelled", "cancelled")


def settled_view(view: WorkflowView) -> WorkflowView | None:
    """`view` once none of its nodes is waiting or queued."""
    return view if all(n.state not in ("waiting", "queued") for n in view.nodes) else None


def wait_until(check: Callable[[], T | None], what: str, within: float = 20.0) -> T:
    """Polls `check()` until it answers something true; that answer."""
    deadline = time.monotonic() + within
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
