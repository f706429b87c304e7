"""GPU check in one call: e5rt fp16 (CUDA provider, IO binding) against PyTorch fp16 (SDPA).

On the lent GPU machine (see benchmarks/gpu_check.sh, which stages onnxruntime-gpu first):
    python benchmarks/gpu_bench.py --model models/syn-large-instruct --out $OUT/gpu.json
Without a GPU the same code runs on the CPU provider with fp32 (the path CI-less sessions can check):
    python benchmarks/gpu_bench.py --model models/me5-small-r --device cpu --limit 64 --out /tmp/cpu.json

Measures, in one process: the corpus (PyTorch with length-sorted batches of 32, as sentence-transformers batches;
e5rt with its token budget), then fixed shapes 1x16, 32x128, 32x512 and 128x128.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt_export.reference import load_reference_model, torch_pool  # noqa: E402

from e5rt import Embedder  # noqa: E402
from e5rt.bench.corpus import load_corpus  # noqa: E402
from e5rt.bench.report import machine  # noqa: E402
from e5rt.bench.runner import checkpoint_for  # noqa: E402
from e5rt.core import build_feeds, format_texts  # noqa: E402

SHAPES = ((1, 16), (32, 128), (32, 512), (128, 128))


def _timeit(fn, repeats: int, sync=lambda: None) -> float:  # type: ignore[no-untyped-def]
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    texts, _ = load_corpus(limit=args.limit)
    variant = "fp16" if args.device == "cuda" else "fp32"
    emb = Embedder.load(args.model, variant=variant, provider=args.device)
    prompted = format_texts(texts, emb.manifest.prompt_scheme, "passage")
    ids = emb.tokenizer.encode(prompted).ids
    tokens = sum(len(x) for x in ids)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    model = load_reference_model(checkpoint_for(emb.manifest), dtype, "sdpa", args.device)
    names = ("input_ids", "attention_mask")
    pad = emb.manifest.pad_token_id

    def torch_run(batch_ids: list[np.ndarray]) -> np.ndarray:
        width = max(len(x) for x in batch_ids)
        feeds = build_feeds(batch_ids, width, pad, names, {n: np.int64 for n in names})
        with torch.inference_mode():
            t = {k: torch.from_numpy(v).to(args.device) for k, v in feeds.items()}
            pooled = torch_pool(model(**t).last_hidden_state, t["attention_mask"], emb.spec.pooling)
        return pooled.cpu().numpy()

    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))

    def torch_corpus() -> np.ndarray:
        out = np.zeros((len(ids), emb.dim), np.float32)
        for s in range(0, len(order), 32):
            rows = order[s : s + 32]
            out[rows] = torch_run([ids[i] for i in rows])
        return out

    results: dict[str, object] = {
        "machine": machine(),
        "device": args.device,
        "model": emb.manifest.name,
        "variant": emb.variant,
        "providers": list(emb.providers),
        "texts": len(texts),
        "tokens": tokens,
    }
    t_torch = _timeit(torch_corpus, 1, sync)
    t_e5rt = _timeit(lambda: emb.encode_passages(texts), 1)
    ref, run = torch_corpus(), emb.embed(texts, kind="passage")
    ours = run.embeddings
    results["corpus"] = {
        "pytorch_sorted32_texts_per_s": round(len(texts) / t_torch, 1),
        "e5rt_texts_per_s": round(len(texts) / t_e5rt, 1),
        "e5rt_tokens_per_s": round(tokens / t_e5rt),
        "speedup": round(t_torch / t_e5rt, 3),
        "min_cos_e5rt_vs_pytorch": round(float(np.sum(ref * ours, axis=1).min()), 6),
        "e5rt_padding_efficiency": round(run.stats.padding_efficiency, 4),
    }
    shapes = []
    for batch, length in SHAPES:
        batch_ids = [np.full(length, 5, np.int64) for _ in range(batch)]
        feeds = build_feeds(batch_ids, length, pad, emb.backend.input_names, emb.backend.input_types)
        t_ort = _timeit(lambda f=feeds: emb.backend.run(f), args.repeats)
        t_pt = _timeit(lambda b=batch_ids: torch_run(b), args.repeats, sync)
        shapes.append(
            {
                "shape": f"{batch}x{length}",
                "e5rt_ms": round(t_ort * 1000, 3),
                "pytorch_ms": round(t_pt * 1000, 3),
                "e5rt_tokens_per_s": round(batch * length / t_ort),
                "speedup": round(t_pt / t_ort, 3),
            }
        )
        print(json.dumps(shapes[-1]), flush=True)
    results["shapes"] = shapes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["corpus"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
