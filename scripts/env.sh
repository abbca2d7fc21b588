# scripts/env.sh - environment for building, testing and running Hopper.
# Source it (`. scripts/env.sh`) from any directory; every scripts/* helper sources it too.
# It only sets variables: it never changes the caller's shell options (no set -e/-u).
#   HOPPER_CACHE      downloaded/unpacked tools (default <repo>/.cache; may be set beforehand)
#   LIBTORCH*         CPU libtorch for tch/torch-sys, unpacked by `scripts/setup libtorch`
#   HOPPER_LIBTORCH_LIB  its lib dir, for an rpath in build.rs
#   DATABASE_URL, REDIS_URL, HOPPER_MODEL_DIR  defaults only; values already set are kept
# shellcheck shell=bash

# Repo root = parent of the directory holding this file (works for `. env.sh` too).
_hopper_src=${BASH_SOURCE[0]:-$0}
case $_hopper_src in */*) _hopper_dir=${_hopper_src%/*} ;; *) _hopper_dir=. ;; esac
ROOT=$(CDPATH='' cd -- "$_hopper_dir/.." && pwd -P)
unset _hopper_src _hopper_dir
export HOPPER_ROOT="$ROOT"

# Cache dir: keep an override, but make it absolute.
HOPPER_CACHE=${HOPPER_CACHE:-$ROOT/.cache}
case $HOPPER_CACHE in /*) ;; *) HOPPER_CACHE=$PWD/$HOPPER_CACHE ;; esac
export HOPPER_CACHE

# libtorch (torch-sys appends include/, include/torch/csrc/api/include and lib/ to these).
# Keep them stable: any change re-runs torch-sys's ~70 s C++ build.
export LIBTORCH="$HOPPER_CACHE/libtorch"
export LIBTORCH_INCLUDE="$LIBTORCH"
export LIBTORCH_LIB="$LIBTORCH"
export LIBTORCH_BYPASS_VERSION_CHECK=1
export HOPPER_LIBTORCH_LIB="$LIBTORCH/lib"

# Services started by scripts/setup, and the embedding model.
export DATABASE_URL="${DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:5433/hopper}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
# The local Redis Cluster of `scripts/setup redis-cluster` (cluster tests read it).
export HOPPER_CLUSTER_URL="${HOPPER_CLUSTER_URL:-redis+cluster://127.0.0.1:${HOPPER_CLUSTER_PORT:-7101},127.0.0.1:$((${HOPPER_CLUSTER_PORT:-7101} + 1)),127.0.0.1:$((${HOPPER_CLUSTER_PORT:-7101} + 2))}"
export HOPPER_MODEL_DIR="${HOPPER_MODEL_DIR:-$HOPPER_CACHE/models/all-MiniLM-L6-v2}"
