"""`AsyncClient`: the asyncio client of the Hopper API.

The same calls as `Client` (`_sync.py`), built by `_calls.py`, sent over one
`httpx.AsyncClient`; retries and polling pause with `asyncio.sleep`, so
nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import _calls
from ._calls import Call
from .errors import Unavailable
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
from .polling import MAX_PAUSE_S, Poll
from .workflows import Node, Workflow

T = TypeVar("T")


class AsyncClient:
    """An asyncio Hopper client; use it with `async with` or `await close()` it."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self.documents = AsyncDocuments(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the pooled connections."""
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        backoff = _calls.pauses()
        while True:
            try:
                response = await self._http.send(call.request(self._http))
            except httpx.TransportError as e:
                pause = next(backoff, None) if call.retryable else None
                if pause is None:
                    raise Unavailable(0, "transport_error", str(e) or type(e).__name__) from e
                await asyncio.sleep(pause)
                continue
            if _calls.should_retry(call, response):
                pause = next(backoff, None)
                if pause is not None:
                    await asyncio.sleep(_calls.pause_for(response, pause))
                    continue
            return call.read(response)

    async def submit(
        self,
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
    ) -> Submitted:
        """Queues one job of `task`; retried only when `idempotency_key` is given or the job
        is unique (`unique_for_ms`, or `unique_until_finished`; keyed by `unique_key` or
        by its arguments): a repeat then answers the first job (`created` false).
        `hard_limit_ms` / `soft_limit_ms` give this job less time than its task's limits,
        `backoff_base_ms` / `backoff_max_ms` a shorter retry backoff (never more: 422);
        `retention_ms` (ms, or a `timedelta`) keeps it, once it succeeded or was cancelled,
        for that long instead of its task's retention (at most 30 times it: 422)."""
        return await self._send(
            _calls.submit(
                task,
                args,
                delay_ms=delay_ms,
                priority=priority,
                max_attempts=max_attempts,
                idempotency_key=idempotency_key,
                callback_url=callback_url,
                unique_for_ms=unique_for_ms,
                unique_until_finished=unique_until_finished,
                unique_key=unique_key,
                hard_limit_ms=hard_limit_ms,
                soft_limit_ms=soft_limit_ms,
                backoff_base_ms=backoff_base_ms,
                backoff_max_ms=backoff_max_ms,
                retention_ms=retention_ms,
            )
        )

    async def submit_many(
        self,
        task: str,
        many_args: Sequence[Mapping[str, Any]],
        *,
        delay_ms: int | None = None,
        priority: str | None = None,
        max_attempts: int | None = None,
        callback_url: str | None = None,
        retention_ms: int | timedelta | None = None,
    ) -> list[str]:
        """Queues one job per item of `many_args` (in batches of 10,000); their ids.
        `retention_ms` as for `submit`."""
        ids: list[str] = []
        for call in _calls.submit_batches(
            task,
            many_args,
            delay_ms=delay_ms,
            priority=priority,
            max_attempts=max_attempts,
            callback_url=callback_url,
            retention_ms=retention_ms,
        ):
            batch: list[str] = await self._send(call)
            ids.extend(batch)
        return ids

    async def job(self, job_id: str) -> Job:
        """The job's record."""
        return await self._send(_calls.job(job_id))

    async def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Polls the job (with backoff) until it is final; `TimeoutError` after `timeout` s."""
        poll = Poll(timeout, f"job {job_id} not final")
        while True:
            job = await self.job(job_id)
            if job.done:
                return job
            await asyncio.sleep(poll.next_pause(job.state))

    async def cancel(self, job_id: str) -> Cancelled:
        """Cancels a waiting job at once, a running one at its next heartbeat."""
        return await self._send(_calls.cancel(job_id))

    async def submit_workflow(self, workflow: Workflow | Node | Mapping[str, Any]) -> WorkflowView:
        """Submits a workflow (a `Workflow`, a bare node, or the JSON body); the workflow
        with its nodes. A bad one raises `InvalidArgs` naming the JSON path (`field`), an
        unknown task `NotFound`. Never retried (a workflow has no idempotency key)."""
        return await self._send(_calls.submit_workflow(workflow))

    async def workflow(self, workflow_id: str) -> WorkflowView:
        """The workflow with its nodes; `NotFound` when there is none (of this tenant)."""
        return await self._send(_calls.workflow(workflow_id))

    async def workflows(self, limit: int = 20) -> list[WorkflowView]:
        """The newest workflows (at most `limit`), without their nodes."""
        return await self._send(_calls.workflows(limit=limit))

    async def cancel_workflow(self, workflow_id: str) -> WorkflowCancelled:
        """Cancels a running workflow: nodes not started are skipped, queued ones cancelled
        at once, running ones at their worker's next heartbeat."""
        return await self._send(_calls.cancel_workflow(workflow_id))

    async def wait_workflow(
        self, workflow_id: str, timeout: float = 60.0, poll: float = MAX_PAUSE_S
    ) -> WorkflowView:
        """Polls the workflow (with backoff, at most `poll` s between two looks) until it is
        over (succeeded, failed or cancelled); `TimeoutError` after `timeout` s."""
        polling = Poll(timeout, f"workflow {workflow_id} not over", max_pause=poll)
        while True:
            flow = await self.workflow(workflow_id)
            if flow.done:
                return flow
            await asyncio.sleep(polling.next_pause(flow.state))

    async def search(
        self,
        query: str,
        *,
        k: int | None = None,
        document_set: str | None = None,
        filter: Mapping[str, Any] | None = None,
        model: str | None = None,
        mode: SearchMode | None = None,
        vector_weight: float | None = None,
        keyword_weight: float | None = None,
    ) -> SearchResult:
        """The chunks best matching `query`, best first: by meaning (`mode="vector"`,
        the default), by keyword (`"keyword"`: exact identifiers, no embedding) or
        both fused (`"hybrid"`, weighted by `vector_weight` and `keyword_weight`)."""
        return await self._send(
            _calls.search(
                query,
                k=k,
                document_set=document_set,
                filter=filter,
                model=model,
                mode=mode,
                vector_weight=vector_weight,
                keyword_weight=keyword_weight,
            )
        )

    async def document_sets(self) -> list[DocumentSet]:
        """The caller's document sets, by name: each one's model, document and chunk
        counts, and latest re-embed."""
        return await self._send(_calls.document_sets())

    async def document_set(self, name: str) -> DocumentSet:
        """One document set; `NotFound` (`document_set_not_found`) when this tenant has
        none of that name (a set is made by its first upload)."""
        return await self._send(_calls.document_set(name))

    async def reembed(self, document_set: str, model: str) -> Reembed:
        """Switches `document_set` to `model` (`name` or `name@version`) with zero downtime:
        its chunks get vectors of `model` in the background while search answers from the
        old ones, then the set flips (follow it with `document_set(name).reembed`).
        `NotFound` without such a set; `Conflict` (`reembed_running`, its `id`) while one
        runs; `InvalidArgs` on `model` for a model no worker serves (`unknown_model`,
        `known` lists those served) or the set's own (`invalid_reembed`). Never retried."""
        return await self._send(_calls.reembed(document_set, model))

    async def cancel_reembed(self, document_set: str) -> ReembedCancelled:
        """Cancels the set's running re-embed: its queued batches do nothing, the vectors
        it wrote are dropped, the set keeps its model. `NotFound` (`reembed_not_found`)
        when none runs."""
        return await self._send(_calls.cancel_reembed(document_set))

    async def dead(self, queue: str, *, offset: int = 0, limit: int = 50) -> DeadLetters:
        """One page of `queue`'s dead letters, newest first."""
        return await self._send(_calls.dead(queue, offset=offset, limit=limit))

    async def retry_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Queues dead letters again (`ids`, or all); how many moved."""
        return await self._send(_calls.dead_action(queue, "retry", ids))

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Deletes dead letters (`ids`, or all); how many went."""
        return await self._send(_calls.dead_action(queue, "purge", ids))


class AsyncDocuments:
    """`client.documents`: the caller's documents."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def upload(
        self,
        source: str | os.PathLike[str] | bytes,
        *,
        name: str | None = None,
        content_type: str | None = None,
        document_set: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Uploaded:
        """Uploads a document (a path or bytes) into the pipeline."""
        return await self._client._send(
            _calls.upload(
                source,
                name=name,
                content_type=content_type,
                document_set=document_set,
                metadata=metadata,
                options=options,
            )
        )

    async def list(
        self, *, document_set: str | None = None, offset: int = 0, limit: int = 50
    ) -> DocumentPage:
        """One page of documents."""
        return await self._client._send(
            _calls.documents(document_set=document_set, offset=offset, limit=limit)
        )

    async def get(self, document_id: str) -> Document:
        """One document and its pipeline status."""
        return await self._client._send(_calls.document(document_id))

    async def delete(self, document_id: str) -> None:
        """Deletes a document, its chunks and vectors."""
        await self._client._send(_calls.delete_document(document_id))

    async def wait(self, document_id: str, timeout: float = 120.0) -> Document:
        """Polls until the document is `ready` or `failed`; `TimeoutError` after `timeout` s."""
        poll = Poll(timeout, f"document {document_id} not ready")
        while True:
            doc = await self.get(document_id)
            if doc.done:
                return doc
            await asyncio.sleep(poll.next_pause(doc.status))
