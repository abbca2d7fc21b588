# scripts/lib/sdk.sh - the Python SDK's venv under $HOPPER_CACHE/venv-sdk: every package pinned by
# sdk/python/requirements-dev.txt (pip freeze of a working venv: httpx, pytest, mypy, ruff, hatchling
# and their dependencies), then sdk/python itself installed editable (hatchling from the venv, no
# build isolation, so nothing is fetched for the build). Stamped by the sha256 of the pins and the
# SDK's pyproject.toml: a second run changes nothing. Not a default step; scripts/test runs it.
# shellcheck shell=bash

SDK_DIR="$ROOT/sdk/python"
SDK_VENV="$HOPPER_CACHE/venv-sdk"
SDK_REQ="$SDK_DIR/requirements-dev.txt"
SDK_STAMP="$SDK_VENV/.hopper-requirements-sha256"

sdk_req_sha() { cat "$SDK_REQ" "$SDK_DIR/pyproject.toml" | sha256sum | cut -d' ' -f1; }

sdk_ready() {
  [ -x "$SDK_VENV/bin/pytest" ] && [ "$(cat "$SDK_STAMP" 2>/dev/null)" = "$(sdk_req_sha)" ]
}

sdk_up() {
  sdk_ready && return 0
  say "Python SDK venv in $SDK_VENV (pinned by sdk/python/requirements-dev.txt)"
  venv_with_sdk "$SDK_VENV" "$SDK_REQ"
  sdk_req_sha >"$SDK_STAMP"
}

# venv_with_sdk VENV REQ: makes the venv VENV afresh from the pins in REQ, then installs sdk/python
# into it editable (no dependencies, no build isolation, so nothing is fetched for the build).
# The SDK's venv and the Celery venv (scripts/lib/celery.sh) are both made so.
venv_with_sdk() {
  local venv=$1 req=$2
  have python3 || die "python3 is needed to make $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >/dev/null ||
    die "pip install -r ${req#"$ROOT"/} failed"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps \
    -e "$SDK_DIR" >/dev/null || die "pip install -e sdk/python failed"
}

sdk_status() {
  if sdk_ready; then
    echo "ready (httpx $("$SDK_VENV/bin/python" -c 'import httpx; print(httpx.__version__)' 2>/dev/null))"
  else
    echo "missing"; return 1
  fi
}
