"""Makes a small random-weight BERT model directory for tests of the embedding engine.

Run through scripts/make-test-model, which puts it in the pinned sentence-transformers
venv (scripts/setup st). The directory has the layout of all-MiniLM-L6-v2's (the model
the tests already use): a BERT `config.json` and `model.safetensors` written by
transformers' `save_pretrained`, the tokenizer files copied from the MiniLM directory
(same 30522-token vocabulary), `modules.json` (Transformer, Pooling and, as MiniLM has
it, Normalize), `sentence_bert_config.json` (max_seq_length) and `1_Pooling/config.json`
(the pooling mode: mean unless `--pooling` says otherwise). That is the layout
sentence-transformers 2.x wrote and every version since loads (`--layout st2`, the
default). With `--layout st6` the directory is instead what sentence-transformers 6's own
`save` writes from that model: the pooling mode as one `"pooling_mode"` string, and
max_seq_length only as the tokenizer's `model_max_length` (tokenizer_config.json), with no
`max_seq_length` in sentence_bert_config.json. The engine reads both layouts.

The weights are transformers' BERT initialisation (normal(0, 0.02)) under `--seed`, with
two changes that make the model a sharper test. Every bias and LayerNorm parameter that
BERT leaves at 0 or 1, is drawn at random too, so that a loader which dropped or swapped
any tensor would change the vectors. And the word embeddings get std 0.1: at 0.02, the
position and token-type rows every text shares dominate the mean-pooled vectors (two
different texts then have a cosine of 0.9 on average; 0.5 with 0.1).

The same arguments give the same bytes. A stamp file (the arguments, this script's
sha256, the tokenizer's sha256, the torch, transformers and sentence-transformers
versions) marks a complete directory; a second run with an equal stamp changes nothing
and imports no torch. The directory is built beside OUT_DIR and renamed into place under
a lock file, so concurrent callers (parallel tests) see no model or a complete one.

With --reference TEXTS_JSON OUT_JSON it then writes sentence-transformers' embeddings of
the texts (`{"texts": [...]}`) in the format of
worker/tests/fixtures/golden_minilm.json, by running scripts/bench/golden.py on the
directory.

usage: make_test_model.py OUT_DIR [--hidden 768] [--layers 2] [--heads 12]
           [--intermediate 1536] [--seed 0] [--max-seq-length 256]
           [--pooling mean|cls|max|mean_sqrt_len_tokens] [--layout st2|st6]
           [--tokenizer-from DIR] [--reference TEXTS_JSON OUT_JSON]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

STAMP = ".make-test-model.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
# What the engine and sentence-transformers read, besides the tokenizer files.
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "tokenizer.json",
)
# The legacy pooling config's one flag per mode (sentence-transformers 2.x to 5).
POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
}
LAYOUTS = ("st2", "st6")
GOLDEN_PY = Path(__file__).resolve().parent / "bench" / "golden.py"


@dataclass(frozen=True)
class Shape:
    """The sizes and seed that define one test model."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    seed: int
    max_seq_length: int
    pooling: str = "mean"
    layout: str = "st2"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> object:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def read_json_object(path: Path) -> dict[str, Any]:
    value = read_json(path)
    if not isinstance(value, dict):
        raise SystemExit(f"make-test-model: {path} is not a JSON object")
    return value


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def stamp_for(shape: Shape, tokenizer_dir: Path) -> dict[str, object]:
    """Everything the directory's bytes depend on."""
    return {
        "made_by": "scripts/make-test-model (scripts/make_test_model.py)",
        "shape": asdict(shape),
        "script_sha256": sha256_file(Path(__file__)),
        "tokenizer_sha256": sha256_file(tokenizer_dir / "tokenizer.json"),
        "versions": {
            name: version(name)
            for name in ("torch", "transformers", "sentence-transformers")
        },
    }


def is_complete(out_dir: Path, stamp: dict[str, object]) -> bool:
    path = out_dir / STAMP
    if not path.is_file() or not all((out_dir / f).is_file() for f in MODEL_FILES):
        return False
    try:
        return bool(read_json(path) == stamp)
    except (OSError, ValueError):
        return False


def module_types(tokenizer_dir: Path) -> list[str]:
    """The source model's module types (MiniLM: Transformer, Pooling, Normalize)."""
    path = tokenizer_dir / "modules.json"
    modules = read_json(path)
    if not isinstance(modules, list):
        raise SystemExit(f"make-test-model: {path} is not a JSON list")
    return [str(m["type"]) for m in modules]


def build(
    target: Path, shape: Shape, tokenizer_dir: Path, stamp: dict[str, object]
) -> None:
    """Writes the complete model directory into `target` (which must not exist)."""
    import torch
    from transformers import BertConfig, BertModel

    source_config = read_json_object(tokenizer_dir / "config.json")
    config = BertConfig(
        vocab_size=int(source_config["vocab_size"]),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=int(source_config.get("max_position_embeddings", 512)),
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        pad_token_id=0,
        initializer_range=0.02,
    )
    torch.manual_seed(shape.seed)
    model = BertModel(config)
    with torch.no_grad():
        words = model.embeddings.word_embeddings.weight
        words.normal_(0.0, 0.1)
        words[config.pad_token_id].zero_()
        for name, tensor in model.named_parameters():
            if "LayerNorm.weight" in name:
                tensor.copy_(1.0 + 0.1 * torch.randn_like(tensor))
            elif name.endswith(".bias"):
                tensor.copy_(0.02 * torch.randn_like(tensor))
    target.mkdir(parents=True)
    model.save_pretrained(target)
    (target / "model.safetensors").chmod(0o644)  # saved through a 0600 temp file

    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, target / name)
    modules: list[dict[str, object]] = [
        {
            "idx": 0,
            "name": "0",
            "path": "",
            "type": "sentence_transformers.models.Transformer",
        },
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if any(t.endswith(".Normalize") for t in module_types(tokenizer_dir)):
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    write_json(target / "modules.json", modules)
    write_json(
        target / "sentence_bert_config.json",
        {"max_seq_length": shape.max_seq_length, "do_lower_case": False},
    )
    write_json(
        target / "1_Pooling" / "config.json",
        {"word_embedding_dimension": shape.hidden}
        | {flag: mode == shape.pooling for mode, flag in POOLING_FLAGS.items()},
    )
    versions = stamp["versions"]
    assert isinstance(versions, dict)
    write_json(
        target / "config_sentence_transformers.json",
        {
            "__version__": {
                "sentence_transformers": versions["sentence-transformers"],
                "transformers": versions["transformers"],
                "pytorch": versions["torch"],
            }
        },
    )
    (target / "README.md").write_text(
        "# Random-weight BERT for tests\n\n"
        f"Not a trained model: random weights (seed {shape.seed}), {shape.hidden}-d,"
        f" {shape.layers} layers, {shape.heads} heads, with all-MiniLM-L6-v2's"
        " tokenizer. Made by `scripts/make-test-model`; see `.make-test-model.json`.\n",
        encoding="utf-8",
    )
    if shape.layout == "st6":
        resave_with_sentence_transformers(target)
    write_json(target / STAMP, stamp)


def resave_with_sentence_transformers(target: Path) -> None:
    """Replaces the legacy layout in `target` by what sentence-transformers' own
    `save` writes from it (the installed version: 6.x in the pinned venv)."""
    from sentence_transformers import SentenceTransformer

    legacy = target.with_name(target.name + ".st2")
    target.rename(legacy)
    SentenceTransformer(str(legacy), device="cpu").save(str(target))
    shutil.rmtree(legacy)
    (target / "model.safetensors").chmod(0o644)
    if not (target / "sentence_bert_config.json").is_file():
        raise SystemExit(f"make-test-model: sentence-transformers wrote no config in {target}")


def make(out_dir: Path, shape: Shape, tokenizer_dir: Path) -> str:
    """Makes `out_dir` unless it already holds this model; returns what was done."""
    stamp = stamp_for(shape, tokenizer_dir)
    if is_complete(out_dir, stamp):
        return "up to date"
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    with (parent / f".{out_dir.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(out_dir, stamp):
            return "up to date (made by a concurrent run)"
        if (
            out_dir.exists()
            and not (out_dir / STAMP).is_file()
            and any(out_dir.iterdir())
        ):
            raise SystemExit(
                f"make-test-model: {out_dir} exists and was not made by this script; "
                "refusing to replace it"
            )
        # Left by a run that was killed; nobody else writes them while we hold the lock.
        for kind in ("building", "old"):
            for stale in parent.glob(f".{out_dir.name}.{kind}-*"):
                shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        building = parent / f".{out_dir.name}.building-{os.getpid()}"
        build(building, shape, tokenizer_dir, stamp)
        if out_dir.exists():
            old = parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(old)
            building.rename(out_dir)
            shutil.rmtree(old)
        else:
            building.rename(out_dir)
        return f"made in {time.monotonic() - started:.1f}s"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/make-test-model",
        description="Writes a random-weight BERT sentence-transformers model dir.",
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--hidden", type=int, default=768, help="hidden size (default 768)")
    p.add_argument("--layers", type=int, default=2, help="encoder layers (default 2)")
    p.add_argument("--heads", type=int, default=12, help="attention heads (default 12)")
    p.add_argument(
        "--intermediate", type=int, default=1536, help="FFN width (default 1536)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="torch seed for the weights (default 0)"
    )
    p.add_argument(
        "--max-seq-length", type=int, default=256, help="tokens per text (256)"
    )
    p.add_argument(
        "--pooling",
        choices=tuple(POOLING_FLAGS),
        default="mean",
        help="the Pooling module's mode (default mean)",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="st2",
        help="st2: the files every sentence-transformers reads (default); st6: as"
        " sentence-transformers 6's save writes them",
    )
    p.add_argument(
        "--tokenizer-from",
        type=Path,
        default=os.environ.get("HOPPER_MODEL_DIR"),
        help="model directory whose tokenizer is copied (default $HOPPER_MODEL_DIR)",
    )
    p.add_argument(
        "--reference",
        nargs=2,
        type=Path,
        metavar=("TEXTS_JSON", "OUT_JSON"),
        help="also write sentence-transformers' embeddings of these texts",
    )
    args = p.parse_args(argv)
    sizes = ("hidden", "layers", "heads", "intermediate", "max_seq_length")
    for name in sizes:
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.hidden % args.heads != 0:
        p.error(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}")
    if (
        args.tokenizer_from is None
        or not (args.tokenizer_from / "tokenizer.json").is_file()
    ):
        p.error(
            "no tokenizer: pass --tokenizer-from DIR or set HOPPER_MODEL_DIR"
            " (scripts/env.sh)"
        )
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    shape = Shape(
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        intermediate=args.intermediate,
        seed=args.seed,
        max_seq_length=args.max_seq_length,
        pooling=args.pooling,
        layout=args.layout,
    )
    out_dir: Path = args.out_dir.resolve()
    done = make(out_dir, shape, args.tokenizer_from.resolve())
    size_mb = (out_dir / "model.safetensors").stat().st_size / 1e6
    print(
        f"{out_dir}: {shape.hidden}-d, {shape.layers} layers, {shape.heads} heads,"
        f" seed {shape.seed}, {shape.pooling} pooling, {shape.layout} layout,"
        f" weights {size_mb:.0f} MB: {done}",
        file=sys.stderr,
    )
    if args.reference:
        texts, out_json = args.reference
        subprocess.run(
            [sys.executable, str(GOLDEN_PY), str(out_dir), str(texts), str(out_json)],
            check=True,
            stdout=sys.stderr,
        )


if __name__ == "__main__":
    main()
