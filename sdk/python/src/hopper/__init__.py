"""Hopper's Python SDK: a typed client of the Hopper HTTP API.

`Client` (blocking) and `AsyncClient` (asyncio) submit and follow jobs,
upload and search documents and manage dead letters; both send the calls
built in `_calls.py`, so they behave alike. Errors are `HopperError`s
(`errors.py`), results are dataclasses (`models.py`). `Worker` (`worker.py`)
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
    Hit,
    Job,
    SearchResult,
    Submitted,
    Uploaded,
)
from .worker import JobContext, Permanent, Worker

__all__ = [
    "AsyncClient",
    "AsyncDocuments",
    "Attempt",
    "BadRequest",
    "Cancelled",
    "Client",
    "Conflict",
    "DeadLetters",
    "Document",
    "DocumentPage",
    "Documents",
    "Forbidden",
    "Hit",
    "HopperError",
    "InvalidArgs",
    "Job",
    "JobContext",
    "NotFound",
    "PayloadTooLarge",
    "Permanent",
    "RateLimited",
    "SearchResult",
    "Submitted",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "Uploaded",
    "Worker",
]
