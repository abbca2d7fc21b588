"""The document pipeline as Celery tasks: plain Python, run by `celery -A celery_app worker`.

`ingest` splits an uploaded text into chunks and fans out one `embed` per chunk
and one `summarize`; it returns the children's task ids, which the API reads
to report progress. `tasks_hopper.py` serves the same functions on Hopper.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from celery_app import app

CHUNK_CHARS = 400
DIMENSIONS = 8


def chunks_of(text: str) -> list[str]:
    """Paragraphs, packed into chunks of at most CHUNK_CHARS characters (a longer
    paragraph is cut)."""
    out: list[str] = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        for start in range(0, len(paragraph), CHUNK_CHARS):
            piece = paragraph[start : start + CHUNK_CHARS]
            if out and len(out[-1]) + 1 + len(piece) <= CHUNK_CHARS:
                out[-1] = f"{out[-1]}\n{piece}"
            else:
                out.append(piece)
    return out


@app.task(name="docs.ingest")  # type: ignore[untyped-decorator]
def ingest(text: str) -> dict[str, Any]:
    """Chunks the text; queues an embed per chunk and a summary."""
    pieces = chunks_of(text)
    embeds = [embed.delay(i, piece).id for i, piece in enumerate(pieces)]
    summary = summarize.delay(text).id
    return {"chunks": len(pieces), "embeds": embeds, "summary": summary}


@app.task(name="docs.embed")  # type: ignore[untyped-decorator]
def embed(index: int, chunk: str) -> dict[str, Any]:
    """A stand-in embedding (a hash spread over DIMENSIONS floats in [-1, 1])."""
    digest = hashlib.sha256(chunk.encode()).digest()
    vector = [round(b / 127.5 - 1, 4) for b in digest[:DIMENSIONS]]
    return {"index": index, "vector": vector}


@app.task(name="docs.summarize")  # type: ignore[untyped-decorator]
def summarize(text: str) -> str:
    """The first two sentences, at most 200 characters."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(sentences[:2])[:200]
