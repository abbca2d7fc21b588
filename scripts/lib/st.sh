# scripts/lib/st.sh - the sentence-transformers reference venv under $HOPPER_CACHE/venv-st: torch,
# sentence-transformers, transformers, tokenizers and numpy pinned by scripts/bench/requirements-st.txt.
# scripts/bench/st-venv builds it (and stamps it with the sha256 of that file); this step runs that
# under setup's lock, so parallel callers never build it twice at once. ~5 GB, ~1.5 min the first
# time (PyPI's torch wheel brings its CUDA runtime wheels). Used by scripts/bench/embed,
# scripts/bench/golden and scripts/make-test-model (worker/tests/second_model.rs).
# Not a default step; scripts/test runs it.
# shellcheck shell=bash

ST_VENV="$HOPPER_CACHE/venv-st"
ST_REQ="$ROOT/scripts/bench/requirements-st.txt"
ST_STAMP="$ST_VENV/.requirements.sha256"   # written by scripts/bench/st-venv

st_ready() {
  [ -x "$ST_VENV/bin/python" ] && [ "$(cat "$ST_STAMP" 2>/dev/null)" = "$(sha256_of "$ST_REQ")" ]
}

st_up() {
  st_ready && return 0
  say "sentence-transformers venv in $ST_VENV (pinned by scripts/bench/requirements-st.txt)"
  "$ROOT/scripts/bench/st-venv" >/dev/null || die "scripts/bench/st-venv failed"
  st_ready || die "scripts/bench/st-venv did not leave a ready venv in $ST_VENV"
}

st_status() {
  if st_ready; then
    echo "ready (sentence-transformers $("$ST_VENV/bin/python" -c \
      'from importlib.metadata import version; print(version("sentence-transformers"))' 2>/dev/null))"
  else
    echo "missing"; return 1
  fi
}
