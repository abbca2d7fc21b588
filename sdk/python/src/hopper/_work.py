"""The HTTP worker protocol (`/v1/work/*`) as calls and shapes, for `Worker`.

A remote worker declares its tasks (`POST /v1/work/tasks`), long-polls for
jobs (`claim`), keeps the leases of the jobs it holds alive in one batched
`heartbeat`, and reports outcomes in batches (`complete`, `fail`) and
progress (`progress`). Each function here builds one `Call` (`_calls.py`);
the runtime in `_runner.py` sends them. Results are encoded here, once, in
the thread that produced them: `encode_result` refuses what JSON cannot
carry and names the type, and the batch bodies splice the encoded results
in without encoding them again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ._calls import Call

#: Most jobs one claim may ask for (the API's bound).
MAX_CLAIM = 500
#: Longest long-poll the API allows, in ms.
MAX_WAIT_MS = 30_000
#: Largest progress document the API keeps, in bytes.
MAX_PROGRESS_BYTES = 16 * 1024
#: How much longer than its long-poll a claim may take before the client gives up, in s.
CLAIM_SLACK_S = 10.0


class NotSerialisable(TypeError):
    """A value that JSON cannot carry; the message names its type."""


def _type_name(value: object) -> str:
    kind = type(value)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _refuse(value: object) -> NoReturn:
    raise NotSerialisable(_type_name(value))


def encode_json(value: object) -> str:
    """`value` as compact JSON text; `NotSerialisable` naming the first type
    JSON cannot carry (a set, bytes, an object, NaN or an infinity)."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_refuse)
    except ValueError as e:  # NaN or an infinity (allow_nan=False)
        raise NotSerialisable(f"float {value!r}" if isinstance(value, float) else "float") from e


def encode_result(value: object) -> str:
    """A task's result as JSON text, or `NotSerialisable("result is not
    JSON-serialisable: <type>")`."""
    try:
        return encode_json(value)
    except NotSerialisable as e:
        raise NotSerialisable(f"result is not JSON-serialisable: {e}") from None
    except RecursionError:
        raise NotSerialisable(
            f"result is not JSON-serialisable: {_type_name(value)} nests too deep"
        ) from None


@dataclass(frozen=True)
class TaskSpec:
    """What a worker declares about one task (`POST /v1/work/tasks`).
    `settings` holds only the fields the task sets; the server fills the rest."""

    name: str
    version: int = 1
    schema: Mapping[str, Any] | None = None
    settings: Mapping[str, int | str] | None = None
    description: str | None = None
    params: Sequence[str] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.schema is not None:
            body["schema"] = dict(self.schema)
        if self.settings:
            body["settings"] = dict(self.settings)
        if self.description is not None:
            body["description"] = self.description
        if self.params is not None:
            body["params"] = list(self.params)
        return body


@dataclass(frozen=True)
class Declared:
    """The server's definition of a declared task (a `TaskDefinition`)."""

    name: str
    version: int
    settings: dict[str, int | str]
    tenant: str | None
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Declared:
        return cls(
            name=str(d["name"]),
            version=int(d.get("version", 1)),
            settings={k: int(v) for k, v in (d.get("settings") or {}).items() if v is not None},
            tenant=d.get("tenant"),
            raw=d,
        )


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """One job handed to this worker by a claim, with the lease that fences its outcome."""

    id: str
    queue: str
    args: Any
    attempt: int
    max_attempts: int
    lease: str
    soft_limit_ms: int | None
    hard_limit_ms: int | None
    enqueued_at_ms: int | None
    tenant: str | None
    request_id: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClaimedJob:
        return cls(
            id=str(d["id"]),
            queue=str(d["queue"]),
            args=d.get("args"),
            attempt=int(d.get("attempt", 1)),
            max_attempts=int(d.get("max_attempts", 1)),
            lease=str(d["lease"]),
            soft_limit_ms=d.get("soft_limit_ms") or None,
            hard_limit_ms=d.get("hard_limit_ms") or None,
            enqueued_at_ms=d.get("enqueued_at_ms"),
            tenant=d.get("tenant"),
            request_id=d.get("request_id"),
        )


@dataclass(frozen=True)
class Claimed:
    """A claim's answer: the worker id to use from now on, the heartbeat
    period and lease length, and the jobs (none when the long-poll ran out)."""

    worker: str
    heartbeat_ms: int
    lease_ms: int
    jobs: list[ClaimedJob]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Claimed:
        return cls(
            worker=str(d["worker"]),
            heartbeat_ms=int(d["heartbeat_ms"]),
            lease_ms=int(d["lease_ms"]),
            jobs=[ClaimedJob.from_json(j) for j in d.get("jobs") or []],
        )


@dataclass(frozen=True)
class Beat:
    """A heartbeat's answer: leases no longer held, and jobs asked to stop."""

    lost: frozenset[str]
    cancel: frozenset[str]

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Beat:
        d = d or {}
        return cls(
            lost=frozenset(str(t) for t in d.get("lost") or []),
            cancel=frozenset(str(t) for t in d.get("cancel") or []),
        )


@dataclass(frozen=True, slots=True)
class ItemStatus:
    """What the server did with one outcome of a batch: `completed` (or
    `failed`), `stale` (the lease had moved on) or `unknown`."""

    id: str | None
    status: str


def _statuses(d: object) -> list[ItemStatus]:
    items = d.get("results") if isinstance(d, dict) else None
    return [ItemStatus(i.get("id"), str(i.get("status"))) for i in items or []]


#: Outcome answers: 200 all done, 409 some stale, 404 some unknown; the body is per item.
OUTCOME_ANSWERS = frozenset({404, 409})


def declare(tasks: Sequence[TaskSpec]) -> Call[list[Declared]]:
    """`POST /v1/work/tasks` (declaring twice is the same: retryable)."""
    return Call(
        "POST",
        "/v1/work/tasks",
        lambda d: [Declared.from_json(t) for t in d["tasks"]],
        json={"tasks": [t.to_json() for t in tasks]},
        retryable=True,
    )


def claim(queues: Sequence[str], max_jobs: int, wait_ms: int, worker: str | None) -> Call[Claimed]:
    """`POST /v1/work/claim`: long-polls up to `wait_ms` for up to `max_jobs`.
    Not retried by the client: the runtime's claim loop decides."""
    body: dict[str, Any] = {
        "queues": list(queues),
        "max_jobs": max(1, min(MAX_CLAIM, max_jobs)),
        "wait_ms": max(0, min(MAX_WAIT_MS, wait_ms)),
    }
    if worker is not None:
        body["worker"] = worker
    return Call(
        "POST",
        "/v1/work/claim",
        Claimed.from_json,
        json=body,
        timeout=body["wait_ms"] / 1000 + CLAIM_SLACK_S,
    )


def heartbeat(worker: str, leases: Sequence[str]) -> Call[Beat]:
    """`POST /v1/work/heartbeat` for every lease held, in one call."""
    return Call(
        "POST",
        "/v1/work/heartbeat",
        Beat.from_json,
        json={"worker": worker, "leases": list(leases)},
        retryable=True,
    )


def complete(results: Sequence[tuple[str, str]]) -> Call[list[ItemStatus]]:
    """`POST /v1/work/complete` for `(lease, result JSON text)` pairs; the
    results are spliced in as encoded by `encode_result`."""
    items = ",".join(
        f'{{"lease":{json.dumps(lease)},"result":{result}}}' for lease, result in results
    )
    return Call(
        "POST",
        "/v1/work/complete",
        _statuses,
        content=f'{{"results":[{items}]}}'.encode(),
        answers=OUTCOME_ANSWERS,
        retryable=True,
    )


def fail(failures: Sequence[tuple[str, str, bool]]) -> Call[list[ItemStatus]]:
    """`POST /v1/work/fail` for `(lease, error text, retryable)` triples."""
    return Call(
        "POST",
        "/v1/work/fail",
        _statuses,
        json={
            "failures": [
                {"lease": lease, "error": error, "retryable": retryable}
                for lease, error, retryable in failures
            ]
        },
        answers=OUTCOME_ANSWERS,
        retryable=True,
    )


def progress(lease: str, encoded: str) -> Call[None]:
    """`POST /v1/work/progress` with an encoded progress document."""
    return Call(
        "POST",
        "/v1/work/progress",
        lambda _: None,
        content=f'{{"lease":{json.dumps(lease)},"progress":{encoded}}}'.encode(),
        answers=OUTCOME_ANSWERS,
        retryable=True,
    )
