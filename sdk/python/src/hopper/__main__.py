"""`python -m hopper worker module:attribute [--concurrency N]`: runs a `Worker`.

Imports `module` (the current directory first on the path, as `python -m`
does), takes its `attribute` (a `hopper.Worker`), and runs it until SIGTERM
or SIGINT; the exit code is the worker's (0 after a clean stop). A worker
that cannot start (its tasks conflict with declared ones, the key is refused)
exits 1 with the server's message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import HopperError
from .worker import Worker


def load(target: str) -> Worker:
    """The `Worker` named by `module:attribute`."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"hopper worker: expected module:attribute, got {target!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not f"{module_name}.".startswith(f"{e.name}."):
            raise  # something the module imports is missing: its traceback helps
        raise SystemExit(
            f"hopper worker: no module named {module_name!r} (run from the folder that "
            "holds it, or set PYTHONPATH)"
        ) from e
    worker = getattr(module, attr, None)
    if not isinstance(worker, Worker):
        raise SystemExit(
            f"hopper worker: {target} is not a hopper.Worker ({type(worker).__name__})"
        )
    return worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hopper", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run a hopper.Worker")
    w.add_argument("target", help="module:attribute of the Worker, e.g. tasks:worker")
    w.add_argument("--concurrency", type=int, help="jobs of each task run at once")
    w.add_argument("--queues", help="comma-separated tasks to serve (default: all)")
    w.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    worker = load(args.target)
    if args.concurrency is not None:
        worker.set_concurrency(args.concurrency)
    if args.queues:
        worker.queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    try:
        return worker.run()
    except HopperError as e:
        print(f"hopper worker: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"hopper worker: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
