"""Retry rules of the client, on a scripted transport (no server needed): reads
and idempotent submissions are retried after 429/503 within a small bound; a
submission without an idempotency key is sent exactly once."""

from __future__ import annotations

import httpx
import pytest

from hopper import AsyncClient, Client, RateLimited, Unavailable
from hopper._calls import MAX_ATTEMPTS

JOB = {
    "id": "01a2",
    "kind": "echo",
    "state": "succeeded",
    "attempts": 1,
    "max_attempts": 5,
    "args": {"message": "hi"},
    "enqueued_at_ms": 1,
    "result": {"message": "hi"},
    "history": [],
}
BUSY = httpx.Response(503, json={"error": "unavailable", "detail": "redis is down"})
LIMITED = httpx.Response(
    429, headers={"retry-after": "0"}, json={"error": "rate_limited", "detail": "slow down"}
)


class Script:
    """A transport answering from a list (the last answer repeats); counts requests."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


def client(script: Script) -> Client:
    return Client("http://hopper.test", transport=httpx.MockTransport(script))


def test_reads_are_retried_after_503_until_they_succeed() -> None:
    script = Script(BUSY, BUSY, httpx.Response(200, json=JOB))
    with client(script) as c:
        assert c.job("01a2").state == "succeeded"
    assert len(script.requests) == 3


def test_retries_are_bounded_and_end_in_the_mapped_error() -> None:
    script = Script(LIMITED)
    with client(script) as c, pytest.raises(RateLimited) as caught:
        c.job("01a2")
    assert len(script.requests) == MAX_ATTEMPTS
    assert caught.value.retry_after == 0
    assert caught.value.code == "rate_limited"


def test_a_submission_without_idempotency_key_is_sent_once() -> None:
    script = Script(BUSY, httpx.Response(202, json={"id": "x", "kind": "echo", "created": True}))
    with client(script) as c, pytest.raises(Unavailable):
        c.submit("echo", {"message": "hi"})
    assert len(script.requests) == 1


def test_a_submission_with_idempotency_key_is_retried_with_the_same_key() -> None:
    script = Script(
        LIMITED, httpx.Response(200, json={"id": "x", "kind": "echo", "created": False})
    )
    with client(script) as c:
        assert c.submit("echo", {"message": "hi"}, idempotency_key="k").id == "x"
    assert [r.headers["idempotency-key"] for r in script.requests] == ["k", "k"]


async def test_the_async_client_follows_the_same_rules() -> None:
    script = Script(BUSY, httpx.Response(200, json=JOB))
    transport = httpx.MockTransport(script)
    async with AsyncClient("http://hopper.test", transport=transport) as c:
        assert (await c.job("01a2")).result == {"message": "hi"}
    assert len(script.requests) == 2
