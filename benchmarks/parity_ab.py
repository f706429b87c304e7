"""Two exports of one model, variant against variant, on many more texts than the export's 65 probes: each
variant's cosine to one fp32 reference per text (min, 1st percentile, mean, how many below a bar), so a change of
exporter can be told apart from the noise of one probe set.

    .venv/bin/python benchmarks/parity_ab.py OLD_DIR NEW_DIR [--variant int8-static] [--reference fp32] \\
        [--json benchmarks/results/parity-ab-....json]

The reference is OLD_DIR's `--reference` variant; both directories must hold the same weights (a synthetic source
exported under another transformers is another random model, and the comparison says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt import Embedder  # noqa: E402
from e5rt.bench.corpus import load_corpus  # noqa: E402
from e5rt.bench.report import machine  # noqa: E402


def texts_for_parity() -> list[str]:
    """The benchmark corpus (2,048 texts), the export's probes and the tokenizer edge texts."""
    from e5rt_export.probes import probe_texts, tokenizer_texts

    return load_corpus()[0] + probe_texts() + tokenizer_texts()


def summary(cos: np.ndarray, bar: float) -> dict[str, Any]:
    return {
        "min": round(float(cos.min()), 6),
        "p1": round(float(np.percentile(cos, 1)), 6),
        "mean": round(float(cos.mean()), 6),
        f"below_{bar}": int((cos < bar).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--variant", default="int8-static")
    ap.add_argument("--reference", default="fp32")
    ap.add_argument("--bar", type=float, default=0.997)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    texts = texts_for_parity()
    ref = Embedder.load(args.old, variant=args.reference).encode(texts)
    same = Embedder.load(args.new, variant=args.reference).encode(texts)
    same_cos = (ref * same).sum(1)
    result: dict[str, Any] = {
        "machine": machine(),
        "texts": len(texts),
        "variant": args.variant,
        "reference": f"{args.old} {args.reference}",
        "references_agree": summary(same_cos, 0.99999),
    }
    print(f"{len(texts)} texts; {args.reference} of the two exports agree: min cos {same_cos.min():.6f}")
    for name, folder in (("old", args.old), ("new", args.new)):
        got = Embedder.load(folder, variant=args.variant)
        cos = (ref * got.encode(texts)).sum(1).astype(np.float64)
        result[name] = {"dir": str(folder), "variant_ran": got.variant, **summary(cos, args.bar)}
        print(f"{name} ({folder}, {got.variant}): {result[name]}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
