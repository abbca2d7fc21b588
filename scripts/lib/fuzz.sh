# scripts/lib/fuzz.sh - schemathesis for the API fuzz test (tests/tests/fuzz.rs), in its own venv
# under $HOPPER_CACHE/venv-fuzz, every package pinned by tests/fuzz/requirements.txt (pip freeze of
# schemathesis==4.32.5 and its dependencies). Not a default step; scripts/test runs it.
# shellcheck shell=bash

FUZZ_VENV="$HOPPER_CACHE/venv-fuzz"
FUZZ_REQ="$ROOT/tests/fuzz/requirements.txt"
FUZZ_STAMP="$FUZZ_VENV/.hopper-requirements-sha256"

fuzz_req_sha() { sha256sum "$FUZZ_REQ" | cut -d' ' -f1; }

fuzz_up() {
  if [ -x "$FUZZ_VENV/bin/schemathesis" ] && [ "$(cat "$FUZZ_STAMP" 2>/dev/null)" = "$(fuzz_req_sha)" ]; then
    return 0
  fi
  have python3 || die "python3 is needed for schemathesis"
  say "schemathesis venv in $FUZZ_VENV (pinned by tests/fuzz/requirements.txt)"
  rm -rf "$FUZZ_VENV"
  python3 -m venv "$FUZZ_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$FUZZ_VENV/bin/pip" install -q --disable-pip-version-check -r "$FUZZ_REQ" >/dev/null ||
    die "pip install -r tests/fuzz/requirements.txt failed"
  fuzz_req_sha >"$FUZZ_STAMP"
}

fuzz_status() {
  if [ -x "$FUZZ_VENV/bin/schemathesis" ] && [ "$(cat "$FUZZ_STAMP" 2>/dev/null)" = "$(fuzz_req_sha)" ]; then
    echo "ready ($("$FUZZ_VENV/bin/schemathesis" --version 2>/dev/null | head -1))"
  else
    echo "missing"; return 1
  fi
}
