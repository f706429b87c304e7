"""Runtime measurements on the committed corpus: padding efficiency, throughput against naive batching of the
same ONNX file, and resident memory across many batch shapes under each CPU arena policy.

    python benchmarks/runtime_report.py MODEL_DIR [--texts 512] [--json out.json] [--rss-batches 2000]

Ratios are what to read: every number in one run comes from one machine, one process tree, the same threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt import Embedder  # noqa: E402
from e5rt.backends import OrtBackend  # noqa: E402
from e5rt.bench.corpus import load_corpus  # noqa: E402
from e5rt.core import build_feeds, l2_normalize, mean_pool, plan_batches  # noqa: E402


def fixed_batches(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def padding_report(lengths: list[int], budget: int, pad_multiple: int, min_eff: float) -> dict[str, float]:
    tokens = sum(lengths)
    naive = sum(len(b) * max(lengths[i] for i in b) for b in fixed_batches(len(lengths), 32))
    planned = sum(b.padded_tokens for b in plan_batches(lengths, budget, pad_multiple, min_efficiency=min_eff))
    return {
        "tokens": tokens,
        "fixed32_input_order_padded": naive,
        "fixed32_input_order_efficiency": round(tokens / naive, 4),
        "e5rt_padded": planned,
        "e5rt_efficiency": round(tokens / planned, 4),
        "budget": budget,
        "pad_multiple": pad_multiple,
    }


def naive_encode(backend: OrtBackend, ids: list[np.ndarray], pad_id: int) -> np.ndarray:
    """What a straightforward ONNX user does: batches of 32 in input order, padded to the longest."""
    out = []
    for rows in fixed_batches(len(ids), 32):
        width = max(len(ids[i]) for i in rows)
        feeds = build_feeds([ids[i] for i in rows], width, pad_id, backend.input_names, backend.input_types)
        out.append(l2_normalize(mean_pool(backend.run(feeds), feeds["attention_mask"])))
    return np.concatenate(out)


def throughput(model: Path, variant: str, texts: list[str], threads: int | None) -> dict[str, float]:
    emb = Embedder.load(model, variant=variant, provider="cpu", threads=threads)
    emb.encode(texts[:64])
    t0 = time.perf_counter()
    ours = emb.encode(texts)
    t_ours = time.perf_counter() - t0
    stats = emb.last_stats
    ids = emb.tokenizer.encode(texts).ids
    naive_backend = OrtBackend(model / emb.manifest.variants[variant].model_file, "cpu", threads=threads)
    naive_encode(naive_backend, ids[:64], emb.manifest.pad_token_id)
    t0 = time.perf_counter()
    naive = naive_encode(naive_backend, ids, emb.manifest.pad_token_id)
    t_naive = time.perf_counter() - t0
    return {
        "variant": variant,
        "texts": len(texts),
        "tokens": stats.tokens,
        "e5rt_texts_per_s": round(len(texts) / t_ours, 1),
        "e5rt_tokens_per_s": round(stats.tokens / t_ours, 1),
        "naive_texts_per_s": round(len(texts) / t_naive, 1),
        "speedup_vs_naive": round(t_naive / t_ours, 3),
        "min_cos_e5rt_vs_naive": round(float(np.sum(ours * naive, axis=1).min()), 6),
        "padding_efficiency": round(stats.padding_efficiency, 4),
    }


RSS_CHILD = r"""
import json, resource, sys, numpy as np
sys.path.insert(0, sys.argv[1])
from e5rt.backends import OrtBackend
from e5rt.core import build_feeds
model, arena, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
b = OrtBackend(model, "cpu", arena=arena, threads=1)
rng = np.random.default_rng(0)
marks = {}
for i in range(1, n + 1):
    batch = int(rng.integers(1, 17)); length = int(rng.integers(4, 129))
    ids = [rng.integers(5, 1000, size=length) for _ in range(batch)]
    b.run(build_feeds(ids, length, 0, b.input_names, b.input_types))
    if i in (10, 100, 500, 1000, 1500, 2000) or i == n:
        marks[i] = round(rss_mb(), 1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"arena": arena, "rss_mb_after_batches": marks, "peak_rss_mb": round(peak, 1)}))
"""


def rss_report(model_file: Path, batches: int) -> list[dict[str, object]]:
    out = []
    for arena in ("default", "shrink", "off"):
        proc = subprocess.run(
            [sys.executable, "-c", RSS_CHILD, str(ROOT), str(model_file), arena, str(batches)],
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  arena {arena}: {out[-1]}", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rss-batches", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    corpus = load_corpus()[0]
    emb = Embedder.load(args.model, variant="fp32", provider="cpu", warmup=False)
    lengths = emb.tokenizer.encode(corpus).lengths
    report: dict[str, object] = {
        "model": emb.manifest.name,
        "cpu_count": os.cpu_count(),
        "padding": padding_report(lengths, emb.rule.max_batch_tokens, emb.rule.pad_multiple, emb.rule.min_efficiency),
    }
    print(json.dumps(report["padding"]), file=sys.stderr)
    subset = load_corpus(limit=args.texts, seed=1)[0]
    report["throughput"] = []
    for variant in [v for v in ("fp32", "int8") if v in emb.manifest.variants]:
        row = throughput(args.model, variant, subset, args.threads)
        print(json.dumps(row), file=sys.stderr)
        report["throughput"].append(row)  # type: ignore[attr-defined]
    if args.rss_batches:
        report["rss"] = rss_report(args.model / "fp32" / "model.onnx", args.rss_batches)
    report["self_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
