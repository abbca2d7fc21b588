"""Typed results of the Hopper API, one dataclass per answer shape.

Field names and types follow the API's OpenAPI document (`GET /openapi.json`,
built from `api/src/openapi.rs`); each `from_json` reads one JSON answer and
tolerates fields added later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Self

JSON = dict[str, Any]

#: States after which a job never changes again.
FINAL_JOB_STATES = frozenset({"succeeded", "dead", "cancelled"})
#: Document statuses after which the pipeline is done with a version.
FINAL_DOCUMENT_STATUSES = frozenset({"ready", "failed"})
#: Workflow states after which a workflow never changes again.
FINAL_WORKFLOW_STATES = frozenset({"succeeded", "failed", "cancelled"})


class FromJson:
    """`from_json` for the dataclasses below: a JSON object's keys become the
    fields of the same name (unknown keys are ignored, a missing required one
    is a `TypeError`); `nested` converts the fields that hold other results."""

    nested: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    @classmethod
    def from_json(cls, d: JSON) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: v for k, v in d.items() if k in names}
        for name, convert in cls.nested.items():
            if kwargs.get(name) is None:
                kwargs.pop(name, None)
            else:
                kwargs[name] = convert(kwargs[name])
        return cls(**kwargs)


def list_of(kind: type[FromJson]) -> Callable[[Any], Any]:
    """A `nested` converter for a JSON array of `kind`."""
    return lambda items: [kind.from_json(x) for x in items]


@dataclass(frozen=True)
class Attempt(FromJson):
    """One finished attempt of a job (`history`)."""

    attempt: int
    outcome: str
    finished_at_ms: int
    started_at_ms: int | None = None
    error: str | None = None
    worker: str | None = None


@dataclass(frozen=True)
class Job(FromJson):
    """A job's record: state, attempts, timings, arguments and result."""

    id: str
    kind: str
    state: str
    attempts: int
    max_attempts: int
    args: Any
    enqueued_at_ms: int
    result: Any = None
    error: str | None = None
    tenant: str | None = None
    worker: str | None = None
    priority: str | None = None
    lease: int | None = None
    run_at_ms: int | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    callback_url: str | None = None
    request_id: str | None = None
    #: The newest progress a running task reported (`ctx.progress`), if any.
    progress: Any = None
    history: list[Attempt] = field(default_factory=list)

    nested: ClassVar[dict[str, Callable[[Any], Any]]] = {"history": list_of(Attempt)}

    @property
    def done(self) -> bool:
        """Whether the job reached a final state (succeeded, dead, cancelled)."""
        return self.state in FINAL_JOB_STATES


@dataclass(frozen=True)
class Submitted(FromJson):
    """The answer to a submission: the job's id, and whether it is new
    (`created` is false when an idempotency key found an earlier job)."""

    id: str
    kind: str
    created: bool


@dataclass(frozen=True)
class Cancelled(FromJson):
    """The answer to a cancellation: the job's state now."""

    id: str
    kind: str
    state: str


@dataclass(frozen=True)
class DeadLetters(FromJson):
    """One page of a queue's dead letters, newest first."""

    queue: str
    total: int
    offset: int
    limit: int
    jobs: list[Job]

    nested: ClassVar[dict[str, Callable[[Any], Any]]] = {"jobs": list_of(Job)}


@dataclass(frozen=True)
class Document(FromJson):
    """A document and where the pipeline is with its current version."""

    id: str
    name: str
    content_type: str
    version: int
    status: str
    chunks_embedded: int
    truncated_chunks: int
    bytes: int
    metadata: Any
    created_at_ms: int
    updated_at_ms: int
    chunks_total: int | None = None
    document_set: str | None = None
    error: str | None = None
    model: str | None = None
    summary: str | None = None

    @property
    def done(self) -> bool:
        """Whether the pipeline finished this version (`ready` or `failed`)."""
        return self.status in FINAL_DOCUMENT_STATUSES


@dataclass(frozen=True)
class DocumentPage(FromJson):
    """One page of the caller's documents."""

    total: int
    offset: int
    limit: int
    documents: list[Document]

    nested: ClassVar[dict[str, Callable[[Any], Any]]] = {"documents": list_of(Document)}


@dataclass(frozen=True)
class Uploaded(FromJson):
    """The answer to an upload: the document and its `ingest` job."""

    document_id: str
    job_id: str
    status: str


SearchMode = Literal["vector", "keyword", "hybrid"]
"""How a search ranks: by meaning, by keyword (full text), or both fused."""


@dataclass(frozen=True)
class Hit(FromJson):
    """One chunk found by a search: its score (cosine similarity, keyword rank or
    fused score, by the search's mode) and, in hybrid mode, its rank in each list."""

    chunk_id: str
    document_id: str
    document_name: str
    score: float
    text: str
    ordinal: int
    vector_rank: int | None = None
    keyword_rank: int | None = None


@dataclass(frozen=True)
class SearchResult(FromJson):
    """The chunks best matching a query, best first. `model` is `None` in keyword
    mode, which embeds nothing."""

    query: str
    k: int
    model: str | None
    embed_ms: float
    took_ms: float
    hits: list[Hit]
    mode: str = "vector"

    nested: ClassVar[dict[str, Callable[[Any], Any]]] = {"hits": list_of(Hit)}


#: Re-embed states after which a re-embed never changes again.
FINAL_REEMBED_STATES = frozenset({"done", "cancelled"})


@dataclass(frozen=True)
class Reembed(FromJson):
    """A re-embed's progress: a document set's chunks getting vectors of `model`
    (`name@version`) in batches (`embed` jobs) while search answers from `from_model`'s.
    `state` is `running`, `done` (the set uses `model` now) or `cancelled`."""

    id: str
    model: str
    state: str
    batches: int
    batches_done: int
    chunks_total: int
    chunks_done: int
    created_at_ms: int
    from_model: str | None = None
    finished_at_ms: int | None = None

    @property
    def done(self) -> bool:
        """Whether the re-embed is over (done or cancelled)."""
        return self.state in FINAL_REEMBED_STATES


@dataclass(frozen=True)
class DocumentSet(FromJson):
    """A document set and its model: the one its vectors and search's query vector come
    from (`name@version`; `None` until its first vectors when none was asked for), the one
    it had before its last re-embed (`previous_model`, searchable until
    `previous_until_ms`), its counts, and its latest re-embed, running or not."""

    name: str
    documents: int
    chunks: int
    model: str | None = None
    previous_model: str | None = None
    previous_until_ms: int | None = None
    reembed: Reembed | None = None

    nested: ClassVar[dict[str, Callable[[Any], Any]]] = {"reembed": Reembed.from_json}


@dataclass(frozen=True)
class ReembedCancelled(FromJson):
    """The answer to a re-embed's cancellation: the cancelled re-embed (`state` is
    `cancelled`); the set keeps its model."""

    id: str
    state: str


@dataclass(frozen=True)
class NodeView(FromJson):
    """One task node of a workflow: its job and where it stands (`waiting`, `queued`,
    `succeeded`, `dead`, `cancelled` or `skipped`)."""

    index: int
    path: str
    task: str
    state: str
    job_id: str
    deps: list[int] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class WorkflowView(FromJson):
    """A workflow as it stands: its state (`running`, `succeeded`, `failed`, `cancelled`),
    nodes per state, its result once succeeded, and its nodes (left out of listings)."""

    id: str
    state: str
    on_failure: str
    tenant: str
    created_at_ms: int
    counts: dict[str, int] = field(default_factory=dict)
    name: str | None = None
    finished_at_ms: int | None = None
    result: Any = None
    nodes: list[NodeView] = field(default_factory=list)

    nested: ClassVar[dict[str, Callable[[Any], Any]]] = {"nodes": list_of(NodeView)}

    @property
    def done(self) -> bool:
        """Whether the workflow is over (succeeded, failed or cancelled)."""
        return self.state in FINAL_WORKFLOW_STATES


@dataclass(frozen=True)
class WorkflowCancelled(FromJson):
    """The answer to a workflow's cancellation: its state before and now."""

    id: str
    state_before: str
    state: str
