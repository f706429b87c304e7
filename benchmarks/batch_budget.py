"""Throughput against max_batch_tokens on the committed corpus, to choose the per-provider default.

python benchmarks/batch_budget.py MODEL_DIR [--variant fp32] [--provider cpu] [--texts 512]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt import BatchOptions, Embedder  # noqa: E402
from e5rt.bench.corpus import load_corpus  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--budgets", default="1024,2048,4096,8192,16384,32768")
    args = ap.parse_args()
    texts, _ = load_corpus(limit=args.texts, seed=2)
    loaded = Embedder.load(args.model, variant=args.variant, provider=args.provider)
    print(f"{len(texts)} texts, variant {loaded.variant}, providers {loaded.providers}", file=sys.stderr)
    loaded.encode(texts[:64])
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        emb = loaded.with_batching(BatchOptions(max_batch_tokens=budget))
        t0 = time.perf_counter()
        s = emb.embed(texts).stats
        dt = time.perf_counter() - t0
        rows.append(
            {
                "max_batch_tokens": budget,
                "texts_per_s": round(len(texts) / dt, 1),
                "tokens_per_s": round(s.tokens / dt),
                "batches": s.batches,
                "padding_efficiency": round(s.padding_efficiency, 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
