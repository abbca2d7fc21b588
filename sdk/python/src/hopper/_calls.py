"""The API calls as data, shared by `Client` and `AsyncClient`.

Each function here builds one `Call`: the HTTP request (method, path, query,
body, headers), whether it may be sent again after a 429/503 or a lost
connection, and how its answer becomes a typed result. The two clients only
send calls (`_sync.py`, `_async.py`), so request building, retries and error
mapping exist once.
"""

from __future__ import annotations

import json
import mimetypes
import os
import random
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from .errors import error_from_response, retry_after
from .models import (
    Cancelled,
    DeadLetters,
    Document,
    DocumentPage,
    DocumentSet,
    Job,
    Reembed,
    ReembedCancelled,
    SearchMode,
    SearchResult,
    Submitted,
    Uploaded,
    WorkflowCancelled,
    WorkflowView,
)
from .workflows import Chain, Chord, Group, Node, TaskNode, Workflow

T = TypeVar("T")

#: Most jobs one batch request may carry (`api/src/routes/jobs.rs` MAX_BATCH).
MAX_BATCH = 10_000
#: Attempts of a retryable call, the first included.
MAX_ATTEMPTS = 4
#: Longest pause between two attempts, in seconds (a `Retry-After` included).
MAX_BACKOFF_S = 5.0
#: Statuses worth another try of a retryable call.
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, str | int] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    data: Mapping[str, str] | None = None
    retryable: bool = False
    #: A JSON body already encoded (the worker's batched results), instead of `json`.
    content: bytes | None = None
    #: This call's own timeout in seconds (a long-poll outlasts the client's default).
    timeout: float | None = None
    #: Error statuses whose body is still this call's answer (per-item outcomes of a batch).
    answers: frozenset[int] = frozenset()

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """The request, built by `client` (base URL, auth and timeout)."""
        headers = self.headers
        if self.content is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        return client.build_request(
            self.method,
            self.path,
            params=self.params,
            json=self.json,
            content=self.content,
            headers=headers,
            files=self.files,
            data=self.data,
            timeout=self.timeout if self.timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    def read(self, response: httpx.Response) -> T:
        """The typed result of a 2xx answer (or of a status in `answers`); the
        matching `HopperError` otherwise."""
        if response.is_error and response.status_code not in self.answers:
            raise error_from_response(response)
        return self.parse(response.json() if response.content else None)


def pauses() -> Iterator[float]:
    """Backoff before each retry: 0.1 s doubling, with jitter, capped."""
    delay = 0.1
    for _ in range(MAX_ATTEMPTS - 1):
        yield min(MAX_BACKOFF_S, delay * (0.5 + random.random()))
        delay *= 2


def should_retry(call: Call[Any], response: httpx.Response) -> bool:
    """Whether this answer of `call` is worth another try."""
    return call.retryable and response.status_code in RETRY_STATUSES


def pause_for(response: httpx.Response | None, backoff: float) -> float:
    """How long to wait before the next try: the server's `Retry-After` when
    it sent one (capped), else the backoff."""
    if response is not None:
        after = retry_after(response)
        if after is not None:
            return min(MAX_BACKOFF_S, max(after, backoff))
    return backoff


def _given(**options: str | int | None) -> dict[str, str | int]:
    """The query parameters that were given (`None` leaves one out)."""
    return {name: value for name, value in options.items() if value is not None}


def _millis(duration: int | timedelta | None) -> int | None:
    """A duration as whole milliseconds: an int is one already, a `timedelta` is
    converted (rounded down)."""
    if isinstance(duration, timedelta):
        return duration // timedelta(milliseconds=1)
    return duration


def _options(
    delay_ms: int | None,
    priority: str | None,
    max_attempts: int | None,
    callback_url: str | None,
    retention_ms: int | timedelta | None = None,
) -> dict[str, str | int]:
    return _given(
        delay_ms=delay_ms,
        priority=priority,
        max_attempts=max_attempts,
        callback_url=callback_url,
        retention_ms=_millis(retention_ms),
    )


def submit(
    task: str,
    args: Mapping[str, Any],
    *,
    delay_ms: int | None = None,
    priority: str | None = None,
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
    unique_for_ms: int | None = None,
    unique_until_finished: bool = False,
    unique_key: str | None = None,
    hard_limit_ms: int | None = None,
    soft_limit_ms: int | None = None,
    backoff_base_ms: int | None = None,
    backoff_max_ms: int | None = None,
    retention_ms: int | timedelta | None = None,
) -> Call[Submitted]:
    """`POST /v1/jobs/{task}`: retried only under an idempotency key or as a
    unique job (the API then answers a repeat with the first job)."""
    params = _options(delay_ms, priority, max_attempts, callback_url, retention_ms) | _given(
        hard_limit_ms=hard_limit_ms,
        soft_limit_ms=soft_limit_ms,
        backoff_base_ms=backoff_base_ms,
        backoff_max_ms=backoff_max_ms,
        unique_for_ms=unique_for_ms,
        unique_until_finished="true" if unique_until_finished else None,
        unique_key=unique_key,
    )
    unique = unique_for_ms is not None or unique_until_finished
    return Call(
        "POST",
        f"/v1/jobs/{task}",
        Submitted.from_json,
        params=params,
        json=dict(args),
        headers={"Idempotency-Key": idempotency_key} if idempotency_key else None,
        retryable=idempotency_key is not None or unique,
    )


def submit_batches(
    task: str,
    many_args: Sequence[Mapping[str, Any]],
    *,
    delay_ms: int | None = None,
    priority: str | None = None,
    max_attempts: int | None = None,
    callback_url: str | None = None,
    retention_ms: int | timedelta | None = None,
) -> list[Call[list[str]]]:
    """`POST /v1/jobs/{task}/batch`, one call per `MAX_BATCH` jobs (never
    retried: a batch has no idempotency key)."""
    params = _options(delay_ms, priority, max_attempts, callback_url, retention_ms)
    return [
        Call(
            "POST",
            f"/v1/jobs/{task}/batch",
            lambda d: [str(i) for i in d["ids"]],
            params=params,
            json=[dict(a) for a in many_args[i : i + MAX_BATCH]],
        )
        for i in range(0, len(many_args), MAX_BATCH)
    ]


def job(job_id: str) -> Call[Job]:
    """`GET /v1/jobs/{id}`."""
    return Call("GET", f"/v1/jobs/{job_id}", Job.from_json, retryable=True)


def cancel(job_id: str) -> Call[Cancelled]:
    """`POST /v1/jobs/{id}/cancel` (asking twice changes nothing: retryable)."""
    return Call("POST", f"/v1/jobs/{job_id}/cancel", Cancelled.from_json, retryable=True)


def upload(
    source: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    content_type: str | None = None,
    document_set: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Call[Uploaded]:
    """`POST /v1/documents` as a multipart form: a file path or raw bytes."""
    if isinstance(source, bytes):
        body, default_name = source, "document"
    else:
        path = Path(source)
        body, default_name = path.read_bytes(), path.name
    name = name or default_name
    ctype = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    form = {"name": name}
    if document_set is not None:
        form["document_set"] = document_set
    if metadata is not None:
        form["metadata"] = json.dumps(metadata)
    if options is not None:
        form["options"] = json.dumps(options)
    return Call(
        "POST",
        "/v1/documents",
        Uploaded.from_json,
        files={"file": (name, body, ctype)},
        data=form,
    )


def documents(
    *, document_set: str | None = None, offset: int = 0, limit: int = 50
) -> Call[DocumentPage]:
    """`GET /v1/documents`."""
    params: dict[str, str | int] = {"offset": offset, "limit": limit}
    if document_set is not None:
        params["document_set"] = document_set
    return Call("GET", "/v1/documents", DocumentPage.from_json, params=params, retryable=True)


def document(document_id: str) -> Call[Document]:
    """`GET /v1/documents/{id}`."""
    return Call("GET", f"/v1/documents/{document_id}", Document.from_json, retryable=True)


def delete_document(document_id: str) -> Call[None]:
    """`DELETE /v1/documents/{id}` (deleting is idempotent: retryable)."""
    return Call("DELETE", f"/v1/documents/{document_id}", lambda _: None, retryable=True)


def search(
    query: str,
    *,
    k: int | None = None,
    document_set: str | None = None,
    filter: Mapping[str, Any] | None = None,
    model: str | None = None,
    mode: SearchMode | None = None,
    vector_weight: float | None = None,
    keyword_weight: float | None = None,
) -> Call[SearchResult]:
    """`POST /v1/search` (a read: retryable). `mode`: `vector` (by meaning, the
    default), `keyword` (full text: exact identifiers; embeds nothing) or `hybrid`
    (both, fused by reciprocal rank with the two weights)."""
    body: dict[str, Any] = {"query": query}
    if mode is not None:
        body["mode"] = mode
    if vector_weight is not None or keyword_weight is not None:
        weights: dict[str, float] = {}
        if vector_weight is not None:
            weights["vector"] = vector_weight
        if keyword_weight is not None:
            weights["keyword"] = keyword_weight
        body["weights"] = weights
    if k is not None:
        body["k"] = k
    if document_set is not None:
        body["document_set"] = document_set
    if filter is not None:
        body["filter"] = dict(filter)
    if model is not None:
        body["model"] = model
    return Call("POST", "/v1/search", SearchResult.from_json, json=body, retryable=True)


def _set_path(document_set: str) -> str:
    """`/v1/document-sets/{set}` with the name percent-encoded (a set's name may hold
    `/`, spaces or any other character but NUL)."""
    return f"/v1/document-sets/{urllib.parse.quote(document_set, safe='')}"


def document_sets() -> Call[list[DocumentSet]]:
    """`GET /v1/document-sets`: the caller's tenant's sets, by name."""
    return Call(
        "GET",
        "/v1/document-sets",
        lambda d: [DocumentSet.from_json(s) for s in d["sets"]],
        retryable=True,
    )


def document_set(name: str) -> Call[DocumentSet]:
    """`GET /v1/document-sets/{set}` (404 `document_set_not_found`)."""
    return Call("GET", _set_path(name), DocumentSet.from_json, retryable=True)


def reembed(document_set: str, model: str) -> Call[Reembed]:
    """`POST /v1/document-sets/{set}/reembed {"model": …}`: 202 with the re-embed's
    progress. Never retried: a repeat would find the first one running (409)."""
    return Call(
        "POST", f"{_set_path(document_set)}/reembed", Reembed.from_json, json={"model": model}
    )


def cancel_reembed(document_set: str) -> Call[ReembedCancelled]:
    """`POST /v1/document-sets/{set}/reembed/cancel` (404 `reembed_not_found` when none
    runs). Never retried: a repeat after a lost answer would be that 404."""
    return Call("POST", f"{_set_path(document_set)}/reembed/cancel", ReembedCancelled.from_json)


def dead(queue: str, *, offset: int = 0, limit: int = 50) -> Call[DeadLetters]:
    """`GET /v1/queues/{queue}/dead`."""
    return Call(
        "GET",
        f"/v1/queues/{queue}/dead",
        DeadLetters.from_json,
        params={"offset": offset, "limit": limit},
        retryable=True,
    )


def dead_action(queue: str, action: str, ids: Sequence[str] | None) -> Call[int]:
    """`POST /v1/queues/{queue}/dead/{retry|purge}` for `ids`, or all when None;
    the answer is how many jobs it moved."""
    selection: dict[str, Any] = {"all": True} if ids is None else {"ids": list(ids)}
    return Call(
        "POST",
        f"/v1/queues/{queue}/dead/{action}",
        lambda d: int(d["count"]),
        json=selection,
    )


def submit_workflow(workflow: Workflow | Node | Mapping[str, Any]) -> Call[WorkflowView]:
    """`POST /v1/workflows`: a `Workflow`, a bare node (a workflow of it, stopping at the
    first failure) or the JSON body itself. Never retried: a workflow has no idempotency key."""
    if isinstance(workflow, Workflow):
        body: Any = workflow.to_json()
    elif isinstance(workflow, TaskNode | Chain | Group | Chord):
        body = Workflow(workflow).to_json()
    else:
        body = dict(workflow)
    return Call("POST", "/v1/workflows", WorkflowView.from_json, json=body)


def workflow(workflow_id: str) -> Call[WorkflowView]:
    """`GET /v1/workflows/{id}`: the workflow with its nodes."""
    return Call("GET", f"/v1/workflows/{workflow_id}", WorkflowView.from_json, retryable=True)


def workflows(*, limit: int = 20) -> Call[list[WorkflowView]]:
    """`GET /v1/workflows?limit=N`: the newest workflows, without their nodes."""
    return Call(
        "GET",
        "/v1/workflows",
        lambda d: [WorkflowView.from_json(w) for w in d["workflows"]],
        params={"limit": limit},
        retryable=True,
    )


def cancel_workflow(workflow_id: str) -> Call[WorkflowCancelled]:
    """`POST /v1/workflows/{id}/cancel` (asking twice changes nothing: retryable)."""
    return Call(
        "POST",
        f"/v1/workflows/{workflow_id}/cancel",
        WorkflowCancelled.from_json,
        retryable=True,
    )
