"""Test harness of the SDK: one isolated Hopper per test, like `tests/src/lib.rs`.

Each `hopper` fixture gets its own Redis key prefix (`t-<id>`) and Postgres
schema (`t_<id>`) through the env vars the binaries read, starts the real
`target/debug/hopper-api` and `hopper-worker` on free ports (and Python
workers, `python -m hopper worker tests.sample_tasks:worker`), polls readiness
instead of sleeping, and at the end stops exactly the processes it started
(by pid), deletes its Redis keys and drops its schema. The binaries come from
`cargo build --workspace --bins` (`scripts/test` runs it first).
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
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = ROOT / "target" / "debug"
SDK = ROOT / "sdk" / "python"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Hopper:
    """One isolated Hopper: key prefix, schema, and the processes it started."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.env = {
            **os.environ,
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
            "DATABASE_URL": os.environ.get(
                "DATABASE_URL", "postgresql://postgres:postgres@127.0.0.1:5433/hopper"
            ),
            "HOPPER_KEY_PREFIX": f"t-{self.id}",
            "HOPPER_DB_SCHEMA": f"t_{self.id}",
            "HOPPER_AUTH": "open",
            "RUST_LOG": "info,tokio_postgres=warn",
        }
        self.url = ""
        self._procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._logs = Path(tempfile.mkdtemp(prefix=f"hopper-sdk-{self.id}-"))

    def _spawn(
        self, binary: str, args: list[str], extra: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        return self._spawn_cmd(binary, [str(BIN / binary), *args], extra)

    def _spawn_cmd(
        self, name: str, cmd: list[str], extra: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = self._logs / f"{name}-{len(self._procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                env={**self.env, **extra},
                stdout=subprocess.DEVNULL,
                stderr=out,
                cwd=cwd,
            )
        self._procs.append((proc, log))
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        """Everything `proc` (started here) wrote to stderr so far."""
        log = next(log for p, log in self._procs if p is proc)
        return log.read_text(errors="replace")

    def wait_for_log(self, proc: subprocess.Popen[bytes], text: str, within: float = 30.0) -> None:
        """Polls `proc`'s stderr until it contains `text`; fails if it exits first."""
        deadline = time.monotonic() + within
        while text not in self.log_of(proc):
            if proc.poll() is not None and text not in self.log_of(proc):
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} from {proc.args!r} in {within} s:\n{self.logs()}")
            time.sleep(0.02)

    def start_py_worker(
        self,
        *args: str,
        target: str = "tests.sample_tasks:worker",
        ready: bool = True,
        **extra: str,
    ) -> subprocess.Popen[bytes]:
        """Starts `python -m hopper worker <target> <args>` against this API (from
        sdk/python, so `tests.` imports); waits until it declared its tasks and serves."""
        proc = self._spawn_cmd(
            "python-worker",
            [sys.executable, "-m", "hopper", "worker", target, *args],
            {"HOPPER_API_URL": self.url, **extra},
            cwd=SDK,
        )
        if ready:
            self.wait_for_log(proc, "serving ")
        return proc

    def _ready(self, url: str, proc: subprocess.Popen[bytes], within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).is_success:
                    return
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready in {within} s:\n{self.logs()}")
            time.sleep(0.05)

    def start_api(self, **extra: str) -> str:
        """Starts `hopper-api` on a free port (env `extra` added); its URL, once ready."""
        addr = f"127.0.0.1:{free_port()}"
        proc = self._spawn("hopper-api", [], {"HOPPER_API_ADDR": addr, **extra})
        self.url = f"http://{addr}"
        self._ready(self.url, proc)
        return self.url

    def start_worker(self, queues: str, **extra: str) -> subprocess.Popen[bytes]:
        """Starts `hopper-worker --queues <queues>` and waits until it is ready."""
        addr = f"127.0.0.1:{free_port()}"
        proc = self._spawn(
            "hopper-worker",
            ["--queues", queues, "--device", "cpu"],
            {"HOPPER_WORKER_METRICS_ADDR": addr, **extra},
        )
        self._ready(f"http://{addr}", proc, within=120.0)
        return proc

    def cli(self, *args: str) -> str:
        """Runs the `hopper` CLI against this environment; its stdout (fails on non-zero)."""
        done = subprocess.run(
            [str(BIN / "hopper"), *args],
            env={**self.env, "HOPPER_API_URL": self.url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"hopper {' '.join(args)}: {done.stderr}"
        return done.stdout

    def logs(self) -> str:
        """The tail of every started process' stderr."""
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            for _, log in self._procs
        )

    def close(self) -> None:
        """Stops the started processes (SIGTERM, then SIGKILL), removes keys and schema."""
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        redis_url = self.env["REDIS_URL"]
        keys = subprocess.run(
            ["redis-cli", "-u", redis_url, "--scan", "--pattern", f"{{t-{self.id}:*"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        for i in range(0, len(keys), 500):
            subprocess.run(
                ["redis-cli", "-u", redis_url, "DEL", *keys[i : i + 500]],
                capture_output=True,
                check=False,
            )
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
        for _, log in self._procs:
            log.unlink(missing_ok=True)
        self._logs.rmdir()


@pytest.fixture
def hopper() -> Iterator[Hopper]:
    """An isolated Hopper. Its process logs are printed at teardown, which
    pytest shows only for a failed test."""
    env = Hopper()
    try:
        yield env
    finally:
        print(env.logs())
        env.close()
