"""Parity of an exported variant against the PyTorch reference, on the CPU provider."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from e5rt.backend import OrtBackend
from e5rt.plan import plan_batches
from e5rt.pool import l2_normalize
from e5rt.runner import build_feeds, embed_ids

THRESHOLDS = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}
_BUDGET = 4096  # padded tokens per batch while validating; small enough for a 24-layer model on 2 cores


@dataclass(frozen=True)
class ParityResult:
    min_cos: float
    mean_cos: float
    max_abs_diff: float
    n_texts: int
    threshold: float
    worst_index: int
    worst_text: str

    @property
    def passed(self) -> bool:
        return self.min_cos >= self.threshold

    def as_manifest(self) -> dict[str, Any]:
        return {
            "min_cos": round(self.min_cos, 8),
            "mean_cos": round(self.mean_cos, 8),
            "max_abs_diff": float(f"{self.max_abs_diff:.6g}"),
            "n_texts": self.n_texts,
            "threshold": self.threshold,
            "passed": self.passed,
            "worst_text": self.worst_text[:80],
            "provider": "cpu",
        }


def _pool(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return l2_normalize(sums / np.maximum(counts, 1e-9)[:, None])


def reference_embeddings(checkpoint: Path | Any, ids: list[np.ndarray], pad_id: int, pooling: str) -> np.ndarray:
    """Normalized embeddings from the PyTorch model (fp32, eager attention) on the same token ids."""
    import torch
    from transformers import AutoModel

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if isinstance(checkpoint, (str, Path)):
        model = AutoModel.from_pretrained(
            str(checkpoint), dtype=torch.float32, attn_implementation="eager", add_pooling_layer=False
        )
    else:
        model = checkpoint
    model.eval()
    dim = int(model.config.hidden_size)
    sums = np.zeros((len(ids), dim), dtype=np.float32)
    counts = np.ones(len(ids), dtype=np.float32)
    names = ("input_ids", "attention_mask", "token_type_ids")
    types = {n: np.int64 for n in names}
    for batch in plan_batches([len(x) for x in ids], _BUDGET):
        rows = list(batch.indices)
        feeds = build_feeds([ids[i] for i in rows], batch.width, pad_id, names, types)
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.float().numpy()
        if pooling == "cls":
            sums[rows] = out[:, 0, :]
        else:
            mask = feeds["attention_mask"].astype(np.float32)
            sums[rows] = np.einsum("blh,bl->bh", out, mask)
            counts[rows] = mask.sum(axis=1)
    return _pool(sums, counts)


def onnx_embeddings(model_path: Path, ids: list[np.ndarray], pad_id: int, pooling: str, dim: int) -> np.ndarray:
    """Normalized embeddings from one ONNX file on the CPU provider; raises on inf/NaN."""
    backend = OrtBackend(model_path, "cpu", arena="default")
    sums, counts, _ = embed_ids(
        backend, ids, dim=dim, pad_id=pad_id, pooling=pooling, max_batch_tokens=_BUDGET, check_finite=True
    )
    return _pool(sums, counts)


def compare(ref: np.ndarray, got: np.ndarray, texts: list[str], threshold: float) -> ParityResult:
    cos = np.sum(ref.astype(np.float64) * got.astype(np.float64), axis=1)
    worst = int(np.argmin(cos))
    return ParityResult(
        min_cos=float(cos.min()),
        mean_cos=float(cos.mean()),
        max_abs_diff=float(np.abs(ref - got).max()),
        n_texts=len(texts),
        threshold=threshold,
        worst_index=worst,
        worst_text=texts[worst],
    )


def cpu_latency_ms(model_path: Path, batch: int = 16, length: int = 128, repeats: int = 3) -> float:
    """Best-of-N wall time of one batch on the CPU provider: a quick, same-machine speed comparison."""
    import time

    backend = OrtBackend(model_path, "cpu", arena="default")
    ids = [np.full(length, 5, dtype=np.int64) for _ in range(batch)]
    feeds = build_feeds(ids, length, 0, backend.input_names, backend.input_types)
    backend.run(feeds)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend.run(feeds)
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0
