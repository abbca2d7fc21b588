"""A worker declaring `py-echo` version 1 with another schema than
`sample_tasks.py`: the server must refuse it (409 schema_conflict)."""

from __future__ import annotations

from typing import Any

from hopper import JobContext, Worker

worker = Worker()


@worker.task("py-echo", schema={"type": "object", "required": ["text"]})
def echo(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Another echo, with another schema under the same version."""
    return dict(args)
