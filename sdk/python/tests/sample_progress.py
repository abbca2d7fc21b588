"""The Python task the progress tests run: `python -m hopper worker tests.sample_progress:worker`.

`py-report` reports `ctx.report(fraction, message)` from its arguments, then
runs until `<dir>/<name>.release` exists (steered through files like
`sample_tasks.hold`), so a test reads the report while the job still runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hopper import JobContext, Worker

worker = Worker()


@worker.task("py-report", concurrency=2)
def report(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Reports its fraction and message, then holds until released."""
    folder, name = Path(args["dir"]), args["name"]
    ctx.report(args["fraction"], args["message"])
    while not (folder / f"{name}.release").exists():
        if ctx.wait_cancelled(0.02):
            break
    return {"reported": args["fraction"]}
