"""`ctx.report(fraction, message)`: its checks (no server), and a report from a
Python worker reaching `GET /v1/jobs/{id}` and the job's event stream
(`GET /v1/jobs/{id}/events`) against the real API, Redis and Postgres."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hopper import Client, JobContext
from hopper._work import ClaimedJob

from .conftest import Hopper


def context(sent: list[str]) -> JobContext:
    job = ClaimedJob("j1", "q", {}, 1, 3, "l1", None, None, None, None, None)
    return JobContext(job, sent.append)


def test_report_sends_the_standard_shape_clamped() -> None:
    sent: list[str] = []
    ctx = context(sent)
    ctx.report(0.25, "a quarter")
    ctx.report(3, "over")
    ctx.report(-1.5)
    assert [json.loads(s) for s in sent] == [
        {"fraction": 0.25, "message": "a quarter"},
        {"fraction": 1.0, "message": "over"},
        {"fraction": 0.0, "message": ""},
    ]


@pytest.mark.parametrize(
    ("fraction", "message", "error"),
    [
        (math.nan, "x", ValueError),
        ("0.5", "x", TypeError),
        (True, "x", TypeError),
        (0.5, 7, TypeError),
    ],
)
def test_report_refuses_what_is_no_fraction_or_message(
    fraction: object, message: object, error: type[Exception]
) -> None:
    sent: list[str] = []
    with pytest.raises(error):
        context(sent).report(fraction, message)  # type: ignore[arg-type]
    assert sent == []


def read_events(url: str, until: str | None = None, within: float = 30.0) -> list[tuple[str, Any]]:
    """Reads the job event stream at `url` until an event named `until` (or,
    without one, until the server ends the stream); the events, as (name, data)."""
    events: list[tuple[str, Any]] = []
    deadline = time.monotonic() + within
    with httpx.stream("GET", url, timeout=within) as res:
        assert res.status_code == 200, res.read()
        assert res.headers["content-type"].startswith("text/event-stream")
        name = "message"
        for line in res.iter_lines():
            assert time.monotonic() < deadline, f"not over within {within} s: {events}"
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                if name == until:
                    return events
                name = "message"
    assert until is None, f"the stream ended without `{until}`: {events}"
    return events


def test_a_report_reaches_the_job_and_its_event_stream(hopper: Hopper, tmp_path: Path) -> None:
    hopper.start_api()
    hopper.start_py_worker(target="tests.sample_progress:worker")
    with Client(hopper.url) as client:
        half = client.submit(
            "py-report",
            {"dir": str(tmp_path), "name": "half", "fraction": 0.5, "message": "half way"},
        ).id
        over = client.submit(
            "py-report",
            {"dir": str(tmp_path), "name": "over", "fraction": 7, "message": "too far"},
        ).id
        deadline = time.monotonic() + 30
        while not (client.job(half).progress and client.job(over).progress):
            assert time.monotonic() < deadline, "no progress shown"
            time.sleep(0.02)
        running = client.job(half)
        assert running.state == "running"
        assert running.progress == {"fraction": 0.5, "message": "half way"}
        assert client.job(over).progress == {"fraction": 1.0, "message": "too far"}

        events = read_events(f"{hopper.url}/v1/jobs/{half}/events", until="progress")
        name, first = events[0]
        assert name == "state"
        assert first["state"] == "running", first
        assert first["attempt"] == 1, first
        assert first["worker"], first
        assert events[-1] == (
            "progress",
            {
                "progress": {"fraction": 0.5, "message": "half way"},
                "fraction": 0.5,
                "message": "half way",
            },
        )
        (tmp_path / "half.release").touch()
        (tmp_path / "over.release").touch()
        # Followed to the end: the stream closes after the final state.
        events = read_events(f"{hopper.url}/v1/jobs/{half}/events")
        assert events[-1] == (
            "state",
            {
                "state": "succeeded",
                "attempt": 1,
                "worker": first["worker"],
                "result": {"reported": 0.5},
            },
        )
        assert client.wait(over, timeout=30).state == "succeeded"
