"""Errors of the Hopper client: one `HopperError` per failed API answer.

The API answers every error with a JSON body `{error, detail, field?, known?, id?}`
(`api/src/error.rs`); `error_from_response` turns it into the subclass that
matches the status, so callers can catch `NotFound` or `InvalidArgs` and read
`field` (or a conflict's `id`) without parsing anything.
"""

from __future__ import annotations

from typing import Any

import httpx


class HopperError(Exception):
    """An error answer of the API (or a transport failure, with status 0)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        field: str | None = None,
        known: list[str] | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}" + (f" (field `{field}`)" if field else ""))
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.known = known or []
        #: What is in the way, for a conflict: the running re-embed's id (`reembed_running`).
        self.id = id


class BadRequest(HopperError):
    """400: a malformed request (an id that is not a UUID, a bad header)."""


class Unauthorized(HopperError):
    """401: no API key, or one that is unknown or revoked."""


class Forbidden(HopperError):
    """403: the key lacks the scope this call needs."""


class NotFound(HopperError):
    """404: no such job, document, route or task (`known` lists the known tasks)."""


class Conflict(HopperError):
    """409: the resource is in a state that refuses the call; `id` names what is in the
    way when the API says (the running re-embed of `reembed_running`)."""


class PayloadTooLarge(HopperError):
    """413: the body is over the API's limit."""


class UnsupportedMediaType(HopperError):
    """415: a document type the pipeline does not read."""


class InvalidArgs(HopperError):
    """422: the arguments, options or workflow are invalid; `field` names the culprit
    (a workflow's JSON path, `root.chain[1].args`)."""


class RateLimited(HopperError):
    """429: over a rate limit or cap; `retry_after` is in seconds, when sent."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        field: str | None = None,
        known: list[str] | None = None,
        retry_after: float | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(status, code, detail, field, known, id)
        self.retry_after = retry_after


class Unavailable(HopperError):
    """503/504 (or no connection): a backing service is down or too slow."""


_BY_STATUS: dict[int, type[HopperError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidArgs,
    503: Unavailable,
    504: Unavailable,
}


def retry_after(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds, when it is a number."""
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> HopperError:
    """The `HopperError` subclass for a non-2xx answer."""
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"error": "http_error", "detail": response.text or response.reason_phrase}
    code = str(body.get("error", "http_error"))
    detail = str(body.get("detail", ""))
    field = body.get("field")
    field = str(field) if field is not None else None
    known_raw = body.get("known")
    known = [str(k) for k in known_raw] if isinstance(known_raw, list) else None
    id_raw = body.get("id")
    id = str(id_raw) if id_raw is not None else None
    status = response.status_code
    if status == 429:
        return RateLimited(status, code, detail, field, known, retry_after(response), id)
    cls = _BY_STATUS.get(status, HopperError)
    return cls(status, code, detail, field, known, id)
