"""The sample on Hopper, end to end: the FastAPI app in-process (TestClient), its
unchanged Celery producer, and real Hopper binaries behind it — `hopper-api`, a
`hopper-worker` with the Celery bridge on, and `python -m hopper worker
tasks_hopper:worker` — isolated by key prefix, schema and port with the harness
of `tests/celery` (conftest.py there). Run: `scripts/setup celery`, build the
binaries (`cargo build --workspace --bins`), then
`$HOPPER_CACHE/venv-celery/bin/pytest examples/fastapi-celery`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests" / "celery"))
from conftest import Hopper, wait_until  # noqa: E402  (the Celery tests' harness)

TEXT = (
    "Hopper runs the tasks. The producer does not change. Nothing else to see.\n\n"
    + "A paragraph about queues and workers. " * 12
    + "\n\n"
    + "Another one about results, revocations and dead letters. " * 8
)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Hopper]]:
    """The app's client, with the Hopper side running for this test's prefixes."""
    hopper = Hopper()
    celery_env = {
        "CELERY_BROKER_URL": hopper.broker_url,
        "CELERY_RESULT_BACKEND": hopper.result_url,
        "CELERY_KEY_PREFIX": hopper.celery_prefix,
    }
    modules = ("app", "celery_app", "tasks_celery")
    try:
        hopper.start_api()
        hopper.start_bridge()
        hopper.start_py_worker("tasks_hopper:worker", cwd=HERE, **celery_env)
        for name, value in celery_env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.syspath_prepend(str(HERE))
        for name in modules:
            sys.modules.pop(name, None)
        sample = importlib.import_module("app")
        with TestClient(sample.api) as test_client:
            yield test_client, hopper
        sys.modules["celery_app"].app.close()
    finally:
        print(hopper.logs())
        hopper.close()
        for name in modules:
            sys.modules.pop(name, None)


def test_upload_is_ingested_embedded_and_summarized_by_hopper(
    client: tuple[TestClient, Hopper],
) -> None:
    api, hopper = client
    sent = api.post("/documents", files={"file": ("notes.txt", TEXT.encode(), "text/plain")})
    assert sent.status_code == 202, sent.text
    doc_id = sent.json()["id"]

    def ready() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/documents/{doc_id}").json()
        assert body["status"] != "failed", body
        return body if body["status"] == "ready" else None

    doc = wait_until("the document to be ready", ready, within=60)
    assert doc["chunks"] >= 2
    assert doc["embedded"] == doc["chunks"]
    assert doc["summary"] == "Hopper runs the tasks. The producer does not change."

    job = hopper.job(doc_id)
    assert job is not None, "docs.ingest ran as a Hopper job under its Celery id"
    assert (job["kind"], job["state"]) == ("docs.ingest", "succeeded")
    assert job["args"] == {"text": TEXT}


def test_empty_upload_is_refused(client: tuple[TestClient, Hopper]) -> None:
    api, _ = client
    sent = api.post("/documents", files={"file": ("empty.txt", b"  \n", "text/plain")})
    assert sent.status_code == 422
