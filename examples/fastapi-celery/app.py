"""The document backend's API (FastAPI): upload a text, read its processing status.

    POST /documents        multipart `file` → 202 {"id": ...}; queues `docs.ingest`
    GET  /documents/{id}   queued | processing (embedded k of n) | ready (summary) | failed

The status comes from Celery's result backend only (AsyncResult): the same code
whether Celery workers or Hopper workers run the tasks.
"""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult
from fastapi import FastAPI, HTTPException, UploadFile

from celery_app import app as celery
from tasks_celery import ingest

api = FastAPI(title="documents")


@api.post("/documents", status_code=202)
async def upload(file: UploadFile) -> dict[str, str]:
    try:
        text = (await file.read()).decode()
    except UnicodeDecodeError as e:
        raise HTTPException(422, "the document must be UTF-8 text") from e
    if not text.strip():
        raise HTTPException(422, "the document is empty")
    return {"id": ingest.delay(text).id, "name": file.filename or ""}


def failure(result: AsyncResult) -> str:
    return f"{type(result.result).__name__}: {result.result}"


@api.get("/documents/{doc_id}")
def status(doc_id: str) -> dict[str, Any]:
    root = AsyncResult(doc_id, app=celery)
    if root.failed():
        return {"id": doc_id, "status": "failed", "error": failure(root)}
    if not root.successful():
        return {"id": doc_id, "status": "queued" if root.state == "PENDING" else "processing"}
    info = root.result
    embeds = [AsyncResult(i, app=celery) for i in info["embeds"]]
    summary = AsyncResult(info["summary"], app=celery)
    for child in [*embeds, summary]:
        if child.failed():
            return {"id": doc_id, "status": "failed", "error": failure(child)}
    embedded = sum(1 for e in embeds if e.successful())
    body = {"id": doc_id, "chunks": info["chunks"], "embedded": embedded}
    if embedded < len(embeds) or not summary.successful():
        return {**body, "status": "processing"}
    return {**body, "status": "ready", "summary": summary.result}
