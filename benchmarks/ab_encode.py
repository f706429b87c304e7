"""A/B of the library between two commits: Embedder.encode throughput (256 corpus texts, best of 3) and
single-text latency (200 calls) for fp32 and int8-static, 2 threads. The e5rt measured is whichever Python
imports, so the other side runs from a worktree of the other commit:

    git worktree add /tmp/base <commit>
    PYTHONPATH=/tmp/base .venv/bin/python benchmarks/ab_encode.py models/me5-small-r   # before
    .venv/bin/python benchmarks/ab_encode.py models/me5-small-r                        # after

Prints one JSON line naming the e5rt it imported. Alternate the two, twice, and compare within one session.
"""

from __future__ import annotations

import json
import sys
import time

import e5rt
from e5rt.bench.corpus import DEFAULT_CORPUS, load_corpus


def main() -> None:
    model = sys.argv[1]
    texts, _ = load_corpus(DEFAULT_CORPUS, 256)
    out: dict[str, object] = {"e5rt": e5rt.__file__}
    for variant in ("fp32", "int8-static"):
        emb = e5rt.Embedder.load(model, variant=variant, threads=2, provider="cpu")
        emb.encode(texts[:32])
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            emb.encode(texts)
            runs.append(time.perf_counter() - t0)
        lat = []
        for i in range(200):
            t0 = time.perf_counter()
            emb.encode(texts[i % 256][:80])
            lat.append(time.perf_counter() - t0)
        lat.sort()
        out[variant] = {
            "texts_per_s": round(256 / min(runs), 1),
            "single_p50_ms": round(lat[100] * 1000, 2),
            "single_p99_ms": round(lat[197] * 1000, 2),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
