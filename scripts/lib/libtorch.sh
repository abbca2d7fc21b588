# scripts/lib/libtorch.sh - CPU-only libtorch 2.11.0 (what tch 0.24 expects) from the PyPI torch wheel,
# unpacked to $HOPPER_CACHE/libtorch/{include,lib}. The wheel is a CUDA 13 build: libtorch_cpu.so
# NEEDS libcudart.so.13 and libcupti.so.13, taken from the pinned nvidia-* wheels. No libtorch_cuda.so
# on purpose: torch-sys links torch_cuda iff it is present. See shared/reference/libtorch-cpu.md.
# shellcheck shell=bash

LT_DIR="$HOPPER_CACHE/libtorch"
LT_STAMP_LAYOUT=1   # bump when the set of unpacked files changes

lt_stamp() { echo "torch=$(pin_sha torch) cudart=$(pin_sha cudart) cupti=$(pin_sha cupti) layout=$LT_STAMP_LAYOUT"; }

lt_present() {
  [ -f "$LT_DIR/lib/libtorch_cpu.so" ] && [ -L "$LT_DIR/lib/libgomp.so" ] &&
    [ -f "$LT_DIR/include/torch/csrc/api/include/torch/torch.h" ]
}

# lt_missing_libs DIR: the "not found" lines of ldd for the libs we link against.
lt_missing_libs() {
  local f
  for f in libtorch_cpu.so libc10.so; do
    LD_LIBRARY_PATH="$1/lib" ldd "$1/lib/$f" | grep 'not found' || true
  done
}

libtorch_up() {
  if stamp_ok libtorch "$(lt_stamp)" && lt_present; then return 0; fi
  local torch cudart cupti tmp missing
  fetch_wheel torch; torch=$WHEEL
  fetch_wheel cudart; cudart=$WHEEL
  fetch_wheel cupti; cupti=$WHEEL
  mk_tmp "$HOPPER_CACHE"; tmp=$TMP_DIR
  unpack_wheel "$torch" "$tmp" torch/include/:include/ \
    torch/lib/libtorch_cpu.so:lib/libtorch_cpu.so torch/lib/libtorch.so:lib/libtorch.so \
    torch/lib/libc10.so:lib/libc10.so torch/lib/libgomp.so.1:lib/libgomp.so.1
  unpack_wheel "$cudart" "$tmp" nvidia/cu13/lib/libcudart.so.13:lib/libcudart.so.13
  unpack_wheel "$cupti" "$tmp" nvidia/cu13/lib/libcupti.so.13:lib/libcupti.so.13
  ln -s libgomp.so.1 "$tmp/lib/libgomp.so"   # -lgomp needs the dev name
  missing=$(lt_missing_libs "$tmp")
  [ -z "$missing" ] || die "libtorch_cpu.so has unresolved libraries: $(echo "$missing" | awk '{print $1}' | sort -u | tr '\n' ' ')"
  stamp_clear libtorch
  rm -rf "$LT_DIR"; mv "$tmp" "$LT_DIR"; chmod 755 "$LT_DIR"
  stamp_write libtorch "$(lt_stamp)"
  say "libtorch 2.11.0 (CPU) unpacked to $LT_DIR"
}

libtorch_status() {
  if stamp_ok libtorch "$(lt_stamp)" && lt_present; then
    local missing; missing=$(lt_missing_libs "$LT_DIR")
    if [ -z "$missing" ]; then echo "ok: torch 2.11.0 CPU in $LT_DIR"; return 0; fi
    echo "broken: unresolved libraries in $LT_DIR/lib"; return 1
  fi
  echo "not installed (scripts/setup libtorch)"; return 1
}
