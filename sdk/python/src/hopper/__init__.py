"""Hopper's Python SDK: a typed client of the Hopper HTTP API.

`Client` (blocking) and `AsyncClient` (asyncio) submit and follow jobs and
workflows, upload and search documents, switch a document set's model (re-embed)
and manage dead letters; both send the calls built in `_calls.py`, so they behave
alike. Errors are `HopperError`s
(`errors.py`), results are dataclasses (`models.py`); workflows are built with `task`,
`chain`, `group`, `chord` and `Workflow` (`workflows.py`). `Worker` (`worker.py`)
serves Python functions as tasks over the HTTP worker protocol
(`python -m hopper worker module:worker`).
"""

from ._async import AsyncClient, AsyncDocuments
from ._sync import Client, Documents
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HopperError,
    InvalidArgs,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from .models import (
    Attempt,
    Cancelled,
    DeadLetters,
    Document,
    DocumentPage,
    DocumentSet,
    Hit,
    Job,
    NodeView,
    Reembed,
    ReembedCancelled,
    SearchMode,
    SearchResult,
    Submitted,
    Uploaded,
    WorkflowCancelled,
    WorkflowView,
)
from .worker import JobContext, Permanent, Worker
from .workflows import Chain, Chord, Group, TaskNode, Workflow, chain, chord, group, task

__all__ = [
    "AsyncClient",
    "AsyncDocuments",
    "Attempt",
    "BadRequest",
    "Cancelled",
    "Chain",
    "Chord",
    "Client",
    "Conflict",
    "DeadLetters",
    "Document",
    "DocumentPage",
    "DocumentSet",
    "Documents",
    "Forbidden",
    "Group",
    "Hit",
    "HopperError",
    "InvalidArgs",
    "Job",
    "JobContext",
    "NodeView",
    "NotFound",
    "PayloadTooLarge",
    "Permanent",
    "RateLimited",
    "Reembed",
    "ReembedCancelled",
    "SearchMode",
    "SearchResult",
    "Submitted",
    "TaskNode",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "Uploaded",
    "Worker",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowView",
    "chain",
    "chord",
    "group",
    "task",
]
