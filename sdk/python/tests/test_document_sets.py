"""Document sets through the SDK: a set made by an upload is listed with the model
its first vectors pinned, and a re-embed is refused with the reason the API gives
(an unknown model names the served ones; the set's own model; no such set; nothing
to cancel), on the real API and worker. A full re-embed needs a second model: the
Rust test `tests/tests/model_switch.rs` covers it. The error parts the live stack
cannot reach here without a second model (a 409's `id`, a re-embed never retried)
run on a scripted transport."""

from __future__ import annotations

import httpx
import pytest

from hopper import (
    AsyncClient,
    Client,
    Conflict,
    DocumentSet,
    InvalidArgs,
    NotFound,
    Unavailable,
)

from .conftest import Hopper

#: A name the URL path must carry encoded: a space, a slash, a non-ASCII letter.
SET = "sdk docs/é"
TEXT = (
    "Lighthouses guide ships along rocky coasts at night. "
    "Their lamps rotate so sailors can tell one tower from another."
)
#: The worker's default model, pinned as `name@version` by the set's first vectors.
DEFAULT_MODEL = "all-MiniLM-L6-v2"


async def test_a_document_set_shows_its_model_and_refuses_bad_reembeds(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_worker("ingest,embed,summarize")
    with Client(hopper.url) as client:
        uploaded = client.documents.upload(
            TEXT.encode(),
            name="coast.txt",
            content_type="text/plain",
            document_set=SET,
            options={"summarize": False},
        )
        doc = client.documents.wait(uploaded.document_id, timeout=90)
        assert doc.status == "ready", doc

        sets = client.document_sets()
        assert [s.name for s in sets] == [SET]
        listed = sets[0]
        assert listed.model is not None
        assert listed.model.startswith(f"{DEFAULT_MODEL}@"), listed
        assert listed.documents == 1
        assert listed.chunks == doc.chunks_total
        assert listed.reembed is None
        assert listed.previous_model is None
        assert listed.previous_until_ms is None
        assert client.document_set(SET) == listed

        with pytest.raises(NotFound) as missing:
            client.document_set("no-such-set")
        assert missing.value.code == "document_set_not_found"

        with pytest.raises(InvalidArgs) as unknown:
            client.reembed(SET, "nope")
        assert unknown.value.status == 422
        assert unknown.value.code == "unknown_model"
        assert unknown.value.field == "model"
        assert unknown.value.known == [listed.model]

        # Its own model, by full version or by name: nothing to switch to.
        for own in (listed.model, DEFAULT_MODEL):
            with pytest.raises(InvalidArgs) as same:
                client.reembed(SET, own)
            assert same.value.code == "invalid_reembed", own
            assert same.value.field == "model"

        with pytest.raises(NotFound) as no_set:
            client.reembed("no-such-set", listed.model)
        assert no_set.value.code == "document_set_not_found"

        with pytest.raises(NotFound) as idle:
            client.cancel_reembed(SET)
        assert idle.value.code == "reembed_not_found"

        # Search in the set takes only a model the set has vectors of.
        with pytest.raises(InvalidArgs) as other_model:
            client.search("ships at night", document_set=SET, model="nope")
        assert other_model.value.field == "model"
        assert client.search("ships at night", document_set=SET, model=listed.model).hits

        # Nothing refused changed the set.
        assert client.document_set(SET) == listed

    async with AsyncClient(hopper.url) as aclient:
        assert await aclient.document_sets() == [listed]
        assert await aclient.document_set(SET) == listed
        with pytest.raises(InvalidArgs) as async_unknown:
            await aclient.reembed(SET, "nope")
        assert async_unknown.value.known == [listed.model]
        with pytest.raises(NotFound):
            await aclient.cancel_reembed(SET)


RUNNING = "0b5d7f0e-8a43-4c43-9a8e-3e7a4c1f2d10"
REEMBED = {
    "id": RUNNING,
    "model": "bert@v2",
    "from_model": "mini@v1",
    "state": "running",
    "batches": 3,
    "batches_done": 1,
    "chunks_total": 150,
    "chunks_done": 64,
    "created_at_ms": 1_700_000_000_000,
    "finished_at_ms": None,
}


def scripted(*answers: httpx.Response) -> tuple[Client, list[httpx.Request]]:
    """A client whose transport answers from `answers` in turn, and the requests sent."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers[min(len(sent), len(answers)) - 1]

    return Client("http://hopper.test", transport=httpx.MockTransport(answer)), sent


def test_a_running_reembed_conflict_names_its_id_and_a_reembed_is_sent_once() -> None:
    conflict = httpx.Response(
        409,
        json={"error": "reembed_running", "detail": "re-embed is running", "id": RUNNING},
    )
    client, sent = scripted(conflict)
    with client, pytest.raises(Conflict) as caught:
        client.reembed(SET, "bert")
    assert caught.value.id == RUNNING
    assert caught.value.code == "reembed_running"
    assert len(sent) == 1
    assert sent[0].url.raw_path == b"/v1/document-sets/sdk%20docs%2F%C3%A9/reembed"
    assert sent[0].read() == b'{"model":"bert"}'

    busy = httpx.Response(503, json={"error": "unavailable", "detail": "postgres is down"})
    client, sent = scripted(busy, httpx.Response(202, json=REEMBED))
    with client, pytest.raises(Unavailable):
        client.reembed(SET, "bert")
    assert len(sent) == 1


def test_a_document_set_with_its_running_reembed_reads_typed() -> None:
    view = {
        "name": SET,
        "model": "mini@v1",
        "previous_model": None,
        "previous_until_ms": None,
        "documents": 2,
        "chunks": 150,
        "reembed": REEMBED,
    }
    client, sent = scripted(httpx.Response(200, json={"sets": [view]}))
    with client:
        (found,) = client.document_sets()
    assert isinstance(found, DocumentSet)
    assert found.reembed is not None
    assert found.reembed.id == RUNNING
    assert not found.reembed.done
    assert (found.reembed.chunks_done, found.reembed.chunks_total) == (64, 150)
    assert sent[0].url.raw_path == b"/v1/document-sets"
