"""A Hopper worker SIGKILLed while it runs a Celery-sent job: nothing is lost.

Two Python SDK workers serve the tasks; the one that runs `tasks.hold` is
killed mid-job. Its lease runs out, the job runs again on the other worker,
`.get()` returns the second attempt's result, the result is published exactly
once, and every other task sent around the kill gets its result too. Celery's
own Redis transport would leave that message invisible for its visibility
timeout (an hour by default).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

from conftest import Hopper, wait_until


def test_sigkilled_worker_job_runs_again_and_returns_once(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_bridge()
    workers = {p.pid: p for p in (hopper.start_py_worker(), hopper.start_py_worker())}
    app = hopper.celery()

    task_id = str(uuid.uuid4())
    channel = hopper.result_key(task_id)
    pubsub = hopper.results_redis().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)

    before = [app.send_task("tasks.add", args=[i, 1]) for i in range(10)]
    held = app.send_task("tasks.hold", args=["victim"], task_id=task_id)
    folder = Path(hopper.dir)
    started = folder / "victim.started.1"
    wait_until("the held job to start", started.exists, within=30)
    victim = int(started.read_text())
    assert victim in workers, "the job runs in a worker this test started"
    os.kill(victim, signal.SIGKILL)
    workers[victim].wait(timeout=10)
    (folder / "victim.release").write_text("")
    after = [app.send_task("tasks.add", args=[i, 2]) for i in range(10)]

    value = held.get(timeout=60)
    assert value["attempt"] == 2
    assert value["pid"] != victim
    assert (folder / "victim.started.2").exists()
    assert [r.get(timeout=30) for r in before] == [i + 1 for i in range(10)]
    assert [r.get(timeout=30) for r in after] == [i + 2 for i in range(10)]

    job = hopper.wait_job(task_id, "succeeded")
    assert job["attempts"] == 2

    published: list[dict[str, object]] = []
    deadline = time.monotonic() + 1.0  # a duplicate would follow within the second
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            published.append(json.loads(message["data"]))
    pubsub.close()
    assert [m["status"] for m in published] == ["SUCCESS"], "the result is published once"
