"""Static (calibrated) int8 against dynamic int8: accuracy per text, accuracy in batches, batch invariance, speed.

    .venv/bin/python benchmarks/int8_static_probe.py models/me5-small-r --json benchmarks/results/int8-static-probe.json

Calibration uses corpus texts kept apart from the evaluated ones (the export's probe texts plus other corpus texts,
all with the model's passage prefix). Every graph is compared with the fp32 ONNX graph of the same model directory
(a) each text alone, (b) in e5rt's length-sorted batches, and (c) alone against batched (batch invariance).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def evaluate(model: Path, tok: Path, spec: Any, texts: list[str], ref: np.ndarray, threads: int) -> dict[str, Any]:
    from e5rt import Embedder
    from e5rt.config import BatchOptions

    emb = Embedder.from_onnx(model, tok, spec, batching=BatchOptions(max_batch_tokens=4096), threads=threads)
    alone = np.stack([emb.encode([t], kind="passage")[0] for t in texts])
    emb.encode(texts[:16], kind="passage")
    t0 = time.perf_counter()
    batched = emb.encode(texts, kind="passage")
    seconds = time.perf_counter() - t0
    cos = lambda a, b: float(np.min(np.sum(a.astype(np.float64) * b, axis=1)))  # noqa: E731
    return {
        "min_cos_alone": cos(alone, ref),
        "min_cos_batched": cos(batched, ref),
        "alone_vs_batched_max_abs": float(np.abs(alone - batched).max()),
        "bulk_s": seconds,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--eval", type=int, default=200, help="corpus texts evaluated (besides the probes)")
    ap.add_argument("--calib", type=int, default=128, help="corpus texts for calibration (disjoint from --eval)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weight-type", default="QInt8")
    ap.add_argument("--alpha", default="0.6", help="SmoothQuant migration strength, or none (default: the export's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from e5rt_export.probes import probe_texts
    from e5rt_export.static_int8 import calibration_feeds, int8_activation_matmuls, quantize_static_int8

    from e5rt import Embedder
    from e5rt.bench.corpus import DEFAULT_CORPUS, read_rows
    from e5rt.bench.report import machine

    corpus = [r["text"] for r in read_rows(DEFAULT_CORPUS)]
    evaluated = probe_texts() + corpus[: args.eval]
    calib = corpus[-args.calib :]
    fp32_dir = args.model_dir / "fp32"
    base = Embedder.load(args.model_dir, variant="fp32", threads=args.threads)
    tok = args.model_dir / "tokenizer.json"
    spec = base.spec
    ref = np.stack([base.encode([t], kind="passage")[0] for t in evaluated])
    result: dict[str, Any] = {"machine": machine(), "model": str(args.model_dir), "texts": len(evaluated), "rows": {}}
    print(result["machine"], f"{len(evaluated)} evaluated texts, {len(calib)} calibration texts")
    graphs = {"fp32": fp32_dir / "model.onnx"}
    if (args.model_dir / "int8" / "model.onnx").exists():
        graphs["int8 (exported dynamic)"] = args.model_dir / "int8" / "model.onnx"
    with tempfile.TemporaryDirectory() as d:
        static = Path(d) / "static.onnx"
        enc, _ = base.tokenize(calib, kind="passage")
        names = [i.name for i in base.backend.session.get_inputs()]
        feeds = calibration_feeds(enc.ids, names, spec.pad_token_id)
        t0 = time.perf_counter()
        alpha = None if args.alpha == "none" else float(args.alpha)
        quant = quantize_static_int8(graphs["fp32"], static, feeds, args.weight_type, False, alpha=alpha)
        print(f"quantize_static: {time.perf_counter() - t0:.1f} s, {quant['calibration_texts']} calibration texts")
        label = f"int8-static ({args.weight_type}, MinMax, smooth {args.alpha})"
        graphs[label] = static
        for name, path in graphs.items():
            row = evaluate(path, tok, spec, evaluated, ref, args.threads)
            row["file_mb"] = path.stat().st_size / 2**20
            row["matmuls_int8_activations"] = "{}/{}".format(*int8_activation_matmuls(path))
            result["rows"][name] = row
            print(
                f"{name:40s} alone {row['min_cos_alone']:.5f}  batched {row['min_cos_batched']:.5f}  "
                f"alone-vs-batched {row['alone_vs_batched_max_abs']:.2e}  bulk {row['bulk_s']:.2f} s"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
