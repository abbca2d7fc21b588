"""The same tasks served by a Hopper Python SDK worker, for the unchanged producers.

Run `python -m hopper worker tasks_hopper:worker` next to a `hopper-worker`
with the Celery bridge on (HOPPER_CELERY_QUEUES=celery). Each task declares
`params`, the Celery signature's positional names, so `embed.delay(3, "…")`
arrives as `{"index": 3, "chunk": "…"}`. The bodies are the Celery ones:
`ingest` still fans out with `.delay` (this process is only a producer there).
"""

from __future__ import annotations

from typing import Any

from celery._state import _set_task_join_will_block
from hopper import JobContext, Worker

import tasks_celery

# What a Celery worker process does at start: results are never waited for here, so the
# producer does not subscribe to every child's result channel.
_set_task_join_will_block(True)

worker = Worker()


@worker.task("docs.ingest", params=["text"], concurrency=4)
def ingest(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    result: dict[str, Any] = tasks_celery.ingest.run(args["text"])
    return result


@worker.task("docs.embed", params=["index", "chunk"], concurrency=8)
def embed(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    result: dict[str, Any] = tasks_celery.embed.run(args["index"], args["chunk"])
    return result


@worker.task("docs.summarize", params=["text"], concurrency=4)
def summarize(args: dict[str, Any], ctx: JobContext) -> str:
    result: str = tasks_celery.summarize.run(args["text"])
    return result
