"""The worker's pieces that need no server: how results are encoded (and
refused, naming the type), how a failure's traceback reads, and the checks
`Worker.task` and `JobContext.progress` make on their input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from hopper import JobContext, Worker
from hopper.__main__ import load
from hopper._runner import MAX_ERROR_CHARS, error_text
from hopper._work import ClaimedJob, NotSerialisable, complete, encode_result


class Thing:
    """Not JSON."""


def refusal(value: object) -> str:
    with pytest.raises(NotSerialisable) as caught:
        encode_result(value)
    return str(caught.value)


def test_results_are_compact_json_text() -> None:
    value = {"a": [1, 2.5, None, True], "b": {"c": "é"}}
    assert json.loads(encode_result(value)) == value
    assert encode_result(None) == "null"
    assert " " not in encode_result({"a": [1, 2]})


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({1, 2}, "set"),
        ({"nested": [1, {"deep": b"bytes"}]}, "bytes"),
        (Thing(), "tests.test_worker_units.Thing"),
        ([1, frozenset()], "frozenset"),
    ],
)
def test_a_result_json_cannot_carry_is_refused_naming_its_type(value: object, named: str) -> None:
    assert refusal(value) == f"result is not JSON-serialisable: {named}"


def test_nan_and_infinities_are_refused() -> None:
    assert refusal(math.nan) == "result is not JSON-serialisable: float nan"
    assert refusal({"x": [math.inf]}) == "result is not JSON-serialisable: float"


def test_a_batch_of_results_is_one_json_document() -> None:
    call = complete([("lease-1", encode_result({"n": 1})), ('le"ase', encode_result([None]))])
    assert call.content is not None
    assert json.loads(call.content) == {
        "results": [{"lease": "lease-1", "result": {"n": 1}}, {"lease": 'le"ase', "result": [None]}]
    }


def broken(depth: int) -> None:
    if depth == 0:
        raise KeyError("missing")
    broken(depth - 1)


def test_error_text_is_the_traceback_python_prints() -> None:
    try:
        broken(2)
    except KeyError as e:
        text = error_text(e)
    assert text.startswith("Traceback (most recent call last):")
    assert text.count("in broken") == 3
    assert text.endswith("KeyError: 'missing'")


def shout(text: str) -> None:
    raise RuntimeError(text)


def test_a_huge_error_text_keeps_both_ends() -> None:
    try:
        shout("head " + "x" * (3 * MAX_ERROR_CHARS) + " tail")
    except RuntimeError as e:
        text = error_text(e)
    assert len(text) < MAX_ERROR_CHARS + 100
    assert text.startswith("Traceback")
    assert text.endswith(" tail")
    assert "characters cut" in text


def test_a_task_name_registered_twice_is_refused() -> None:
    worker = Worker("http://127.0.0.1:1")

    @worker.task("resize")
    def resize(args: dict[str, Any], ctx: JobContext) -> None:
        """Resizes."""

    with pytest.raises(ValueError, match="registered twice"):
        worker.task("resize")(resize)
    assert worker.tasks["resize"].spec.description == "Resizes."
    assert not worker.tasks["resize"].is_async
    worker.queues = ["resize", "crop"]
    with pytest.raises(ValueError, match="crop"):
        worker.served()


def test_declared_settings_hold_only_what_the_task_sets() -> None:
    worker = Worker("http://127.0.0.1:1")

    @worker.task("thumb", version=2, schema={"type": "object"}, max_attempts=7)
    async def thumb(args: dict[str, Any], ctx: JobContext) -> None:
        return None

    spec = worker.tasks["thumb"].spec.to_json()
    assert spec == {
        "name": "thumb",
        "version": 2,
        "schema": {"type": "object"},
        "settings": {"max_attempts": 7},
    }
    assert worker.tasks["thumb"].is_async


def test_a_rate_limit_is_declared_as_given() -> None:
    worker = Worker("http://127.0.0.1:1")

    @worker.task("crawl", rate_limit="10/s")
    def crawl(args: dict[str, Any], ctx: JobContext) -> None:
        return None

    spec = worker.tasks["crawl"].spec.to_json()
    assert spec["settings"] == {"rate_limit": "10/s"}


def test_a_tenant_concurrency_limit_is_declared_as_given() -> None:
    worker = Worker("http://127.0.0.1:1")

    @worker.task("render", tenant_concurrency=3)
    def render(args: dict[str, Any], ctx: JobContext) -> None:
        return None

    spec = worker.tasks["render"].spec.to_json()
    assert spec["settings"] == {"tenant_concurrency": 3}


def context(sent: list[str]) -> JobContext:
    job = ClaimedJob("j1", "q", {}, 1, 3, "l1", None, None, None, None, None)
    return JobContext(job, sent.append)


def test_progress_must_be_json_and_small() -> None:
    sent: list[str] = []
    ctx = context(sent)
    ctx.progress({"done": 3, "of": 10})
    assert sent == ['{"done":3,"of":10}']
    with pytest.raises(TypeError, match="set"):
        ctx.progress({"ids": {1}})
    with pytest.raises(ValueError, match="over 16384"):
        ctx.progress({"blob": "x" * 20_000})
    assert len(sent) == 1
    assert not ctx.cancelled()


def test_the_command_line_names_what_it_cannot_load() -> None:
    assert isinstance(load("tests.sample_tasks:worker"), Worker)
    for target, says in [
        ("tests.sample_tasks", "expected module:attribute"),
        ("tests.sample_tasks:nothing", "is not a hopper.Worker"),
        ("no_such.module:worker", "no module named 'no_such.module'"),
    ]:
        with pytest.raises(SystemExit, match=says):
            load(target)
