"""Documents through the SDK: upload into the real pipeline (ingest, embed,
summarize workers on the real model), wait until ready, then search finds it."""

from __future__ import annotations

from hopper import Client

from .conftest import Hopper

TEXT = (
    "Lighthouses guide ships along rocky coasts at night. "
    "Their lamps rotate so sailors can tell one tower from another.\n\n"
    "Sourdough bread rises slowly because wild yeast ferments the dough."
)


def test_uploaded_document_becomes_ready_and_search_finds_it(hopper: Hopper) -> None:
    hopper.start_api()
    hopper.start_worker("ingest,embed,summarize")
    with Client(hopper.url) as client:
        uploaded = client.documents.upload(
            TEXT.encode(), name="coast.txt", content_type="text/plain", document_set="sdk"
        )
        doc = client.documents.wait(uploaded.document_id, timeout=90)
        assert doc.status == "ready", doc
        assert doc.chunks_total is not None
        assert doc.chunks_total >= 1
        listed = client.documents.list(document_set="sdk")
        assert [d.id for d in listed.documents] == [uploaded.document_id]
        found = client.search("how do ships find their way at night", k=3)
        assert found.hits, found
        assert found.hits[0].document_id == uploaded.document_id
        assert "Lighthouses" in found.hits[0].text
        assert found.mode == "vector"
        assert found.model is not None
        # By keyword: the exact word, no embedding; a stop word alone finds nothing.
        exact = client.search("sourdough", k=3, mode="keyword")
        assert exact.mode == "keyword"
        assert exact.model is None
        assert exact.hits, exact
        assert "Sourdough" in exact.hits[0].text
        assert client.search("the", mode="keyword").hits == []
        both = client.search("sourdough", k=3, mode="hybrid", vector_weight=0.5, keyword_weight=2.0)
        assert both.mode == "hybrid"
        assert both.hits[0].document_id == uploaded.document_id
        assert both.hits[0].keyword_rank == 1
        client.documents.delete(uploaded.document_id)
        assert client.documents.list().total == 0
