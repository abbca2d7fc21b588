"""Helpers of scripts/bench/embed (see there): sentence generation, the sentence-transformers
side of the benchmark, and the report.

  embed.py gen N SEED OUT.json                 deterministic sentences of 8-120 words
  embed.py st MODEL_DIR IN.json OUT.f32 DEVICE THREADS BATCH   one sentence-transformers run
  embed.py report RESULTS.jsonl VECTORS_DIR [NOTES.json]   table + the final JSON line
                                               (NOTES' fields, e.g. cpu_bf16, bf16_skipped, added)

`st` and the Hopper binary each print one JSON line; the script collects them into
RESULTS.jsonl (one line per run) and `report` takes the medians over rounds.
"""

import json
import random
import statistics
import sys
import time

WORDS = """the of and to in a is that for it as was with be by on not he this are or his from at
which but have an they you were her she there been one all we their has would when if so no will
more can out up about who its some them into time other than then only could also these two may
first any new like our over such after most made well between through many years before where much
those both people way even because each work state being under three world during still long here
system data model queue worker job pipeline vector document chunk embedding search index server
request response latency throughput memory thread batch token sentence language network storage
river mountain village harbour market garden library museum station bridge island forest desert
morning evening winter summer history science music painting theatre kitchen journey letter
quickly slowly carefully suddenly quietly rarely often always never almost nearly perhaps indeed
bright ancient modern simple complex narrow broad heavy gentle curious careful patient famous
build write read send store fetch compute measure compare improve explain discover travel remember
asynchronous idempotent cartography photosynthesis infrastructure retrieval transformer orchestration
acknowledgement backpressure serialization reproducibility thermodynamics archaeology bureaucracy
café naïve résumé façade über jalapeño smörgåsbord""".split()


def gen(n: int, seed: int, out: str) -> None:
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        k = rng.randint(8, 120)
        words = [rng.choice(WORDS) for _ in range(k)]
        for i in range(3, k - 1, 11):
            if rng.random() < 0.5:
                words[i] += ","
        words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + rng.choice([".", ".", ".", "?", "!"]))
    with open(out, "w", encoding="utf-8") as f:
        json.dump(sentences, f, ensure_ascii=False)


def rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def st(model_dir: str, inp: str, out: str, device: str, threads: int, batch: int) -> None:
    import torch

    rss_import = rss_mb("VmRSS")
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    texts = json.load(open(inp, encoding="utf-8"))
    t0 = time.perf_counter()
    model = SentenceTransformer(model_dir, device=device)
    precision = "fp32"
    if device.startswith("cuda"):
        model.half()
        precision = "fp16"
    load_s = time.perf_counter() - t0
    model.encode(texts[:batch], batch_size=batch)  # warm-up, like the engine's own
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch, convert_to_numpy=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    vectors.astype("float32").tofile(out)
    print(json.dumps({
        "engine": "sentence-transformers",
        "device": device,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "sentences": len(texts),
        "seconds": dt,
        "sps": len(texts) / dt,
        "load_seconds": load_s,
        "rss_after_import_torch_mb": rss_import,
        "peak_rss_mb": rss_mb("VmHWM"),
        "torch": torch.__version__,
    }))


def report(results: str, vdir: str, notes: str = "") -> None:
    import numpy as np

    runs = [json.loads(line) for line in open(results) if line.strip()]
    by = {}
    for r in runs:
        label = r.get("label") or r.get("precision")
        key = "st" if r["engine"] == "sentence-transformers" else "hopper_" + label
        by.setdefault(key, []).append(r)
    med = lambda key, field: statistics.median(r[field] for r in by[key])  # noqa: E731
    ref = np.fromfile(f"{vdir}/st.f32", dtype=np.float32)
    dim = by["hopper_" + by_first_precision(by)][0]["dim"]
    ref = ref.reshape(-1, dim)
    refn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    st_sps = med("st", "sps")
    out = {"st_sps": round(st_sps, 1), "st_rss_mb": round(med("st", "peak_rss_mb"), 1)}
    print(f"{'engine':<34}{'sent/s':>9}{'tok/s':>10}{'ratio':>7}{'peak RSS MB':>13}"
          f"{'min cos':>11}{'mean cos':>11}{'runs':>6}")
    tokens_per_sentence = None
    first = ("hopper_fp32", "hopper_bf16", "hopper_fp16")
    keys = [k for k in first if k in by] + sorted(k for k in by if k.startswith("hopper_") and k not in first)
    for key in keys:
        v = np.fromfile(f"{vdir}/{key}.f32", dtype=np.float32).reshape(-1, dim)
        cos = np.sum((v / np.linalg.norm(v, axis=1, keepdims=True)) * refn, axis=1)
        sps = med(key, "sps")
        tps = med(key, "tokens_per_s")
        tokens_per_sentence = tps / sps
        p = key[len("hopper_"):]
        out[f"hopper_{p}_sps"] = round(sps, 1)
        out[f"hopper_{p}_tokens_per_s"] = round(tps, 0)
        out[f"ratio_{p}"] = round(sps / st_sps, 3)
        out[f"min_cos_{p}"] = round(float(cos.min()), 7)
        out[f"mean_cos_{p}"] = round(float(cos.mean()), 7)
        out[f"hopper_{p}_rss_mb"] = round(med(key, "peak_rss_mb"), 1)
        out[f"hopper_{p}_padding_overhead"] = round(med(key, "padding_overhead"), 4)
        out[f"hopper_{p}_forward_passes"] = med(key, "forward_passes")
        out[f"hopper_{p}_streams"] = by[key][0].get("streams")
        out[f"hopper_{p}_linear"] = by[key][0].get("linear")
        print(f"{'hopper ' + p + ' (' + by[key][0]['device'] + ')':<34}{sps:>9.1f}{tps:>10.0f}"
              f"{sps / st_sps:>6.2f}x{med(key, 'peak_rss_mb'):>13.0f}{cos.min():>11.6f}"
              f"{cos.mean():>11.6f}{len(by[key]):>6}")
    st_tps = st_sps * (tokens_per_sentence or 0)
    print(f"{'sentence-transformers (' + by['st'][0]['device'] + ')':<34}{st_sps:>9.1f}{st_tps:>10.0f}"
          f"{1:>6.2f}x{med('st', 'peak_rss_mb'):>13.0f}{'(ref)':>11}{'':>11}{len(by['st']):>6}")
    print(f"sentence-transformers RSS right after `import torch`: "
          f"{med('st', 'rss_after_import_torch_mb'):.0f} MB (torch {by['st'][0]['torch']}, "
          f"PyPI's CUDA build); sentences={by['st'][0]['sentences']}, "
          f"threads={by['st'][0]['threads']}")
    if "hopper_fp32_aten_1stream_sps" in out and "hopper_fp32_sps" in out:
        out["fp32_vs_aten_1stream"] = round(out["hopper_fp32_sps"] / out["hopper_fp32_aten_1stream_sps"], 3)
    out["hopper_rss_mb"] = out.get("hopper_fp32_rss_mb", out.get("hopper_fp16_rss_mb"))
    out["rss_ratio"] = round(out["hopper_rss_mb"] / out["st_rss_mb"], 3)
    out["st_tokens_per_s"] = round(st_tps, 0)
    out["rounds"] = len(by["st"])
    out["device"] = by["st"][0]["device"]
    if notes:
        extra = json.load(open(notes))
        if extra.get("bf16_skipped"):
            print(f"hopper bf16 skipped: {extra['bf16_skipped']}")
        out.update(extra)
    print(json.dumps(out))


def by_first_precision(by: dict) -> str:
    return next(k.split("_")[1] for k in by if k.startswith("hopper_"))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "gen":
        gen(int(args[0]), int(args[1]), args[2])
    elif cmd == "st":
        st(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]))
    elif cmd == "report":
        report(args[0], args[1], args[2] if len(args) > 2 else "")
    else:
        sys.exit(f"unknown command {cmd}")
