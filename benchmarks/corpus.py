"""Build the committed benchmark corpus: 2,000+ multilingual texts with a realistic mix of lengths (seeded).

    python benchmarks/corpus.py            # rewrites e5rt/bench/data/corpus.jsonl (shipped with the package)

Mix: 40% search queries (a few words), 30% sentences, 22% paragraphs, 8% long documents (over 512 tokens).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt_export.probes import _NEWLINES, _PARAGRAPHS, _SENTENCES, _SHORT  # noqa: E402

SEED = 20261126
N_TEXTS = 2048
OUT = ROOT / "e5rt" / "bench" / "data" / "corpus.jsonl"


def build(n: int = N_TEXTS, seed: int = SEED) -> list[dict[str, str]]:
    rng = random.Random(seed)
    words = [w for s in _SENTENCES + _PARAGRAPHS for w in s.split() if w]
    pool = _SENTENCES + _NEWLINES
    rows = []
    for i in range(n):
        r = rng.random()
        if r < 0.40:
            kind = "query"
            text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 8)))
            if rng.random() < 0.3:
                text = rng.choice(_SHORT) + " " + text
        elif r < 0.70:
            kind = "sentence"
            text = rng.choice(pool)
            if rng.random() < 0.5:
                text += " " + rng.choice(pool)
        elif r < 0.92:
            kind = "paragraph"
            text = " ".join(rng.choice(_PARAGRAPHS + pool) for _ in range(rng.randint(2, 6)))
        else:
            kind = "long"
            text = "\n".join(rng.choice(_PARAGRAPHS) for _ in range(rng.randint(9, 16)))
        rows.append({"id": i, "kind": kind, "text": text})
    return rows


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as fh:
        for row in build():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")
