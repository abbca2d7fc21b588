"""Reference embeddings for the golden-vector test (worker/tests/golden.rs).

Run through scripts/bench/golden, which builds the pinned sentence-transformers venv
(scripts/bench/st-venv) and passes the paths. Reads the texts fixture, embeds it with
sentence-transformers `encode` on the CPU in fp32 (the model's own modules: Transformer with
max_seq_length from sentence_bert_config.json, Pooling, Normalize), and writes the vectors
together with the token ids and truncation flags of the model's tokenizer, plus the versions
and the weights' sha256 that produced them.

usage: golden.py MODEL_DIR TEXTS_JSON OUT_JSON
"""

import hashlib
import json
import sys

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer


def main() -> None:
    model_dir, texts_path, out_path = sys.argv[1:4]
    texts = json.load(open(texts_path, encoding="utf-8"))["texts"]
    torch.set_num_threads(2)
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    vectors = model.encode(texts, batch_size=8, convert_to_numpy=True)
    tok = model.tokenizer
    max_len = model.max_seq_length
    ids = [tok(t, truncation=True, max_length=max_len)["input_ids"] for t in texts]
    full = [len(tok(t, truncation=False)["input_ids"]) for t in texts]
    with open(f"{model_dir}/model.safetensors", "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    out = {
        "made_by": "scripts/bench/golden (scripts/bench/golden.py)",
        "model_dir_name": model_dir.rstrip("/").split("/")[-1],
        "model_sha256": sha,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": max_len,
        "dim": int(vectors.shape[1]),
        "texts": texts,
        "input_ids": ids,
        "truncated": [n > max_len for n in full],
        "embeddings": [[float(f"{x:.8g}") for x in v] for v in vectors.tolist()],
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(texts)} vectors of {out['dim']} to {out_path} "
          f"({sum(out['truncated'])} truncated; torch {torch.__version__}, "
          f"sentence-transformers {sentence_transformers.__version__})")


if __name__ == "__main__":
    main()
