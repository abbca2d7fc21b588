"""Harness of the Celery bridge tests: one isolated Hopper and one Celery producer per test.

Each `hopper` fixture gets its own Redis key prefix (`t-<id>`), Postgres schema
(`t_<id>`) and API port, like `sdk/python/tests/conftest.py` (same approach,
no import across). The Celery side is isolated the same way: the producer
(the real, pinned `celery` package) uses kombu's `global_keyprefix`
`c-<id>:` for the broker (Redis DB 0) and for the result backend (Redis DB 1),
and the bridge — `target/debug/hopper-worker` with `HOPPER_CELERY_QUEUES` — is
told the same prefixes. Python SDK workers run `python -m hopper worker
sdk_tasks:worker` from this folder. Every wait polls a condition with a bound;
teardown stops exactly the processes started here (by pid), deletes the keys
of both prefixes and drops the schema. The binaries come from
`cargo build --workspace --bins` (run by `scripts/test` first).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
from celery import Celery

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = ROOT / "target" / "debug"

T = TypeVar("T")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_db_url(url: str, db: int) -> str:
    """`url` (a redis:// URL, with or without a database) pointed at database `db`."""
    head, _, tail = url.rstrip("/").rpartition("/")
    base = head if tail.isdigit() and head.count("/") >= 2 else url.rstrip("/")
    return f"{base}/{db}"


def wait_until(
    what: str, probe: Callable[[], T | None], within: float = 30.0, every: float = 0.05
) -> T:
    """Polls `probe` until it returns something other than None/False; fails naming
    `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(every)


class Hopper:
    """One isolated Hopper plus the Celery prefixes it shares with its producer."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
        self.broker_url = redis_db_url(self.redis_url, 0)
        self.result_url = redis_db_url(self.redis_url, 1)
        #: kombu's and celery's `global_keyprefix` (broker and result backend alike).
        self.celery_prefix = f"c-{self.id}:"
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": os.environ.get(
                "DATABASE_URL", "postgresql://postgres:postgres@127.0.0.1:5433/hopper"
            ),
            "HOPPER_KEY_PREFIX": f"t-{self.id}",
            "HOPPER_DB_SCHEMA": f"t_{self.id}",
            "HOPPER_AUTH": "open",
            "RUST_LOG": "info,tokio_postgres=warn",
        }
        self.url = ""
        self.dir = Path(tempfile.mkdtemp(prefix=f"hopper-celery-{self.id}-"))
        self._procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._apps: list[Celery] = []

    # --- processes -------------------------------------------------------------------------

    def _spawn(
        self, name: str, cmd: list[str], extra: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.dir / f"{name}-{len(self._procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, env={**self.env, **extra}, stdout=subprocess.DEVNULL, stderr=out, cwd=cwd
            )
        self._procs.append((proc, log))
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        """Everything `proc` (started here) wrote to stderr so far."""
        log = next(log for p, log in self._procs if p is proc)
        return log.read_text(errors="replace")

    def _ready(self, url: str, proc: subprocess.Popen[bytes], within: float = 60.0) -> None:
        def probe() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{self.logs()}")
            try:
                return httpx.get(f"{url}/health/ready", timeout=2).is_success
            except httpx.TransportError:
                return False

        wait_until(f"{url}/health/ready", probe, within)

    def start_api(self, **extra: str) -> str:
        """Starts `hopper-api` on a free port (env `extra` added); its URL, once ready."""
        addr = f"127.0.0.1:{free_port()}"
        proc = self._spawn(
            "hopper-api", [str(BIN / "hopper-api")], {"HOPPER_API_ADDR": addr, **extra}
        )
        self.url = f"http://{addr}"
        self._ready(self.url, proc)
        return self.url

    def bridge_env(self, **extra: str) -> dict[str, str]:
        """The variables that turn the Celery bridge on in `hopper-worker`, for this
        test's prefixes (`extra` added or overriding)."""
        return {
            "HOPPER_CELERY_QUEUES": "celery",
            "HOPPER_CELERY_BROKER_PREFIX": self.celery_prefix,
            "HOPPER_CELERY_RESULT_URL": self.result_url,
            "HOPPER_CELERY_RESULT_PREFIX": self.celery_prefix,
            **extra,
        }

    def start_bridge(self, queues: str = "echo", **extra: str) -> subprocess.Popen[bytes]:
        """Starts `hopper-worker` serving the built-in `queues` with the Celery bridge on
        (intake of kombu queue `celery`, results to DB 1); waits until it is ready."""
        addr = f"127.0.0.1:{free_port()}"
        proc = self._spawn(
            "hopper-worker",
            [str(BIN / "hopper-worker"), "--device", "cpu"],
            {
                "HOPPER_QUEUES": queues,
                "HOPPER_WORKER_METRICS_ADDR": addr,
                **self.bridge_env(**extra),
            },
        )
        self._ready(f"http://{addr}", proc, within=120.0)
        return proc

    def start_py_worker(
        self, target: str = "sdk_tasks:worker", cwd: Path = HERE, **extra: str
    ) -> subprocess.Popen[bytes]:
        """Starts `python -m hopper worker <target>` (from `cwd`, this folder unless
        given) against the API; waits until it declared its tasks and serves."""
        proc = self._spawn(
            "python-worker",
            [sys.executable, "-m", "hopper", "worker", target],
            {"HOPPER_API_URL": self.url, "HOPPER_CELERY_TEST_DIR": str(self.dir), **extra},
            cwd=cwd,
        )

        def serving() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{self.logs()}")
            return "serving " in self.log_of(proc)

        wait_until("the Python worker to serve", serving, within=60.0)
        return proc

    # --- Celery producer -------------------------------------------------------------------

    def celery(self, **conf: object) -> Celery:
        """A Celery producer app for this test: broker DB 0, result backend DB 1, both
        under `celery_prefix`, JSON only (`conf` added). Closed at teardown."""
        app = Celery(
            f"hopper-test-{self.id}",
            broker=self.broker_url,
            backend=self.result_url,
            set_as_current=False,
        )
        app.conf.update(
            broker_transport_options={"global_keyprefix": self.celery_prefix},
            result_backend_transport_options={"global_keyprefix": self.celery_prefix},
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=False,
            **conf,
        )
        self._apps.append(app)
        return app

    def result_key(self, task_id: str) -> str:
        """The Redis key (DB 1) of a Celery result, as celery names it."""
        return f"{self.celery_prefix}celery-task-meta-{task_id}"

    def results_redis(self) -> redis.Redis:
        """A client of the result backend's database."""
        return redis.Redis.from_url(self.result_url)

    # --- Hopper API ------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any] | None:
        """`GET /v1/jobs/<id>` (a Celery id works as is); None when 404."""
        r = httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=5)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        job: dict[str, Any] = r.json()
        return job

    def wait_job(self, job_id: str, *states: str, within: float = 30.0) -> dict[str, Any]:
        """Polls the job until its state is one of `states`; the job."""

        def probe() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job is not None and job["state"] in states else None

        return wait_until(f"job {job_id} in {states}", probe, within)

    def dead(self, queue: str) -> list[dict[str, Any]]:
        """The dead letters of `queue` (newest first, up to 500)."""
        r = httpx.get(f"{self.url}/v1/queues/{queue}/dead", params={"limit": 500}, timeout=5)
        r.raise_for_status()
        jobs: list[dict[str, Any]] = r.json()["jobs"]
        return jobs

    # --- teardown --------------------------------------------------------------------------

    def logs(self) -> str:
        """The tail of every started process' stderr."""
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            for _, log in self._procs
        )

    def _delete_keys(self, url: str, pattern: str) -> None:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()

    def close(self) -> None:
        """Stops the started processes (SIGTERM, then SIGKILL), closes the producers,
        removes the keys of both prefixes and the schema."""
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for app in self._apps:
            app.close()
        self._delete_keys(self.redis_url, f"{{t-{self.id}:*")
        self._delete_keys(self.broker_url, f"{self.celery_prefix}*")
        self._delete_keys(self.result_url, f"{self.celery_prefix}*")
        subprocess.run(
            [
                str(ROOT / "scripts" / "pg"),
                "psql",
                "-d",
                "hopper",
                "-c",
                f"DROP SCHEMA IF EXISTS t_{self.id} CASCADE",
            ],
            capture_output=True,
            check=False,
        )
        for path in sorted(self.dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        self.dir.rmdir()


@pytest.fixture
def hopper() -> Iterator[Hopper]:
    """An isolated Hopper (nothing started yet). Its process logs are printed at
    teardown, which pytest shows only for a failed test."""
    env = Hopper()
    try:
        yield env
    finally:
        print(env.logs())
        env.close()


@pytest.fixture
def bridged(hopper: Hopper) -> Hopper:
    """The usual set-up: the API, one `hopper-worker` with the bridge on serving `echo`,
    and one Python SDK worker serving `sdk_tasks`."""
    hopper.start_api()
    hopper.start_bridge()
    hopper.start_py_worker()
    return hopper
