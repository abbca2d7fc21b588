# scripts/lib/celery.sh - the Celery migration's venv under $HOPPER_CACHE/venv-celery: every package
# pinned by tests/celery/requirements.txt (pip freeze of a working venv: celery[redis] 5.7.0 and its
# dependencies, fastapi/uvicorn/python-multipart/httpx for examples/fastapi-celery, pytest, ruff,
# mypy, hatchling), then sdk/python installed editable (venv_with_sdk in scripts/lib/sdk.sh), so one
# interpreter is both the Celery producer and the Hopper SDK worker.
# Stamped by the sha256 of the pins and the SDK's pyproject.toml: a second run changes nothing.
# Not a default step; used by tests/celery, examples/fastapi-celery and scripts/bench/celery.
# shellcheck shell=bash

CELERY_VENV="$HOPPER_CACHE/venv-celery"
CELERY_REQ="$ROOT/tests/celery/requirements.txt"
CELERY_STAMP="$CELERY_VENV/.hopper-requirements-sha256"

celery_req_sha() { cat "$CELERY_REQ" "$ROOT/sdk/python/pyproject.toml" | sha256sum | cut -d' ' -f1; }

celery_ready() {
  [ -x "$CELERY_VENV/bin/celery" ] && [ -x "$CELERY_VENV/bin/pytest" ] &&
    [ "$(cat "$CELERY_STAMP" 2>/dev/null)" = "$(celery_req_sha)" ]
}

celery_up() {
  celery_ready && return 0
  say "Celery venv in $CELERY_VENV (pinned by tests/celery/requirements.txt)"
  venv_with_sdk "$CELERY_VENV" "$CELERY_REQ"   # scripts/lib/sdk.sh
  celery_req_sha >"$CELERY_STAMP"
}

celery_status() {
  if celery_ready; then
    echo "ready (celery $("$CELERY_VENV/bin/python" -c 'import celery; print(celery.__version__)' 2>/dev/null))"
  else
    echo "missing"; return 1
  fi
}
