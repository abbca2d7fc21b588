#!/usr/bin/env bash
# compose/libtorch-cuda.sh - assembles the full CUDA libtorch 2.11 that the worker-cuda image
# (compose/Dockerfile.worker-cuda) ships: torch/lib/*.so from the pinned torch wheel
# (scripts/lib/pins.sh, sha256-checked) and the lib/ dirs of the nvidia-* / cuda-toolkit wheels
# that torch 2.11.0 requires, laid out as in site-packages (DEST/torch/lib, DEST/nvidia/*/lib) so
# the RPATHs baked into the wheels ($ORIGIN/../../nvidia/...) resolve with no extra set-up.
# Then checks that every library resolves, except the driver's own (libcuda, libnvidia-ml),
# which the NVIDIA container runtime mounts at run time.
#   compose/libtorch-cuda.sh DEST     (wheels are cached in $HOPPER_CACHE/wheels)
# The worker binary links the CPU libtorch; with LD_LIBRARY_PATH=DEST/torch/lib it dlopens
# DEST/torch/lib/libtorch_cuda.so at start-up (worker/src/device.rs).
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../scripts/env.sh"
LOG_TAG=libtorch-cuda   # read by scripts/lib/common.sh
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

DEST=${1:?usage: compose/libtorch-cuda.sh DEST}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd -P)

# Libraries the NVIDIA driver provides (mounted by the container runtime): not in any wheel.
DRIVER_LIBS='libcuda.so.1 libnvidia-ml.so.1'

fetch_wheel torch
TORCH_WHL=$WHEEL
CUDA_WHEELS="$HOPPER_CACHE/wheels/torch-cuda-deps"
mkdir -p "$CUDA_WHEELS"

# torch's own Linux requirements on CUDA libraries (cuda-toolkit[...], nvidia-*), exact versions.
python3 - "$TORCH_WHL" >"$CUDA_WHEELS/requirements.txt" <<'PY'
import re, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
for line in z.read(meta).decode().splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req, _, marker = line[len("Requires-Dist:"):].strip().partition(";")
    name = re.split(r"[\[<>=!~ ]", req, maxsplit=1)[0].lower()
    if 'platform_system == "Linux"' in marker and (name.startswith("nvidia-") or name == "cuda-toolkit"):
        print(req.strip())
PY
[ -s "$CUDA_WHEELS/requirements.txt" ] || die "torch's METADATA names no CUDA wheels"
say "CUDA wheels: $(tr '\n' ' ' <"$CUDA_WHEELS/requirements.txt")"
# pip does not widen --platform to older manylinux tags: name every one from 2_17 to 2_28.
platforms=(--platform manylinux2014_x86_64)
for v in $(seq 17 28); do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
python3 -m pip download -q --only-binary=:all: --python-version 3.11 "${platforms[@]}" \
  -r "$CUDA_WHEELS/requirements.txt" -d "$CUDA_WHEELS" ||
  die "pip download of torch's CUDA wheels failed (no access to PyPI?)"

# Unpack shared libraries only: torch/lib/*.so* (not libtorch_python.so, which needs libpython)
# and nvidia/**/lib/*.so* from every CUDA wheel.
python3 - "$DEST" "$TORCH_WHL" "$CUDA_WHEELS"/*.whl <<'PY' || die "unpacking failed"
import os, re, shutil, sys, zipfile
dest, torch, *deps = sys.argv[1:]
so = re.compile(r"\.so(\.\d+)*$")
def take(whl, keep):
    n = 0
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            name = info.filename
            if info.is_dir() or not keep(name) or not so.search(name):
                continue
            if name.startswith("/") or ".." in name.split("/"):
                sys.exit(f"unsafe path in {whl}: {name}")
            out = os.path.join(dest, name)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(info) as f, open(out, "wb") as g:
                shutil.copyfileobj(f, g, 1 << 20)
            os.chmod(out, 0o755)
            n += 1
    return n
if not take(torch, lambda n: n.startswith("torch/lib/") and n.count("/") == 2
            and not n.endswith("libtorch_python.so")):
    sys.exit("no libraries in the torch wheel")
total = sum(take(w, lambda n: n.startswith("nvidia/") and "/lib/" in n) for w in deps)
if not total:
    sys.exit("no libraries in the CUDA wheels")
PY
ln -sf libgomp.so.1 "$DEST/torch/lib/libgomp.so"

# Every library must resolve, through the wheels' RPATHs, except the driver's.
missing=$(for f in "$DEST"/torch/lib/*.so; do ldd "$f" | grep 'not found' || true; done |
  awk '{print $1}' | sort -u | grep -vxF "$(tr ' ' '\n' <<<"$DRIVER_LIBS")" || true)
[ -z "$missing" ] || die "unresolved libraries under $DEST/torch/lib: $(echo "$missing" | tr '\n' ' ')"
[ -f "$DEST/torch/lib/libtorch_cuda.so" ] || die "libtorch_cuda.so is missing"
say "CUDA libtorch 2.11.0 in $DEST ($(du -sh "$DEST" | cut -f1))"
