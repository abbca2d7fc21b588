"""The Celery app of the document backend: the producer's configuration, from the environment.

The FastAPI app and every task module import `app` from here. The same file
serves both deployments — Celery workers, or Hopper (the bridge in
`hopper-worker` plus `tasks_hopper.py` on the Python SDK): producers never change.

    CELERY_BROKER_URL       redis://127.0.0.1:6379/0
    CELERY_RESULT_BACKEND   redis://127.0.0.1:6379/1
    CELERY_KEY_PREFIX       kombu/celery `global_keyprefix` (optional; the test isolates with it)
"""

from __future__ import annotations

import os

from celery import Celery

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1")
KEY_PREFIX = os.environ.get("CELERY_KEY_PREFIX", "")

app = Celery("documents", broker=BROKER_URL, backend=RESULT_BACKEND, include=["tasks_celery"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    result_expires=24 * 3600,
)
if KEY_PREFIX:
    app.conf.broker_transport_options = {"global_keyprefix": KEY_PREFIX}
    app.conf.result_backend_transport_options = {"global_keyprefix": KEY_PREFIX}
