"""Parity of an exported variant against the PyTorch reference, on the CPU provider.

The ONNX side runs through e5rt's own pipeline (Embedder.from_onnx), so what is validated is what serves.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from e5rt import BatchOptions, Embedder
from e5rt.core import activate, build_feeds, plan_batches
from e5rt.engine import ModelSpec

from .reference import load_reference_classifier, load_reference_model, torch_pool

# fp32-table8: fp32 weights with the word-embedding table in uint8 blocks (rows at cos >= 0.9999 of the original).
# Embedders: min cosine against PyTorch per text. Rerankers: the Pearson correlation of the logits with PyTorch's
# over the probe pairs (the ranking), with the same floors...
THRESHOLDS = {"fp32": 0.99999, "fp32-table8": 0.9999, "fp16": 0.999, "int8": 0.99}
# ...and the largest difference of a pair's score (the sigmoid of its logit, what rerank() returns) at most this.
SCORE_TOLERANCE = {"fp32": 1e-4, "fp32-table8": 1e-3, "fp16": 5e-3, "int8": 0.05}
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
    min_cos_alone: float | None = None  # each probe embedded on its own
    batch_invariance_max_abs: float | None = None  # max |alone - batched| over the probes
    metric: str = "min cosine of embeddings"  # rerankers: "pearson of logits" (min_cos holds it)
    score_tolerance: float | None = None  # rerankers: max_abs_diff (of sigmoid scores) must stay below it

    @property
    def passed(self) -> bool:
        within = self.score_tolerance is None or self.max_abs_diff <= self.score_tolerance
        return self.min_cos >= self.threshold and within

    def as_manifest(self) -> dict[str, Any]:
        return {
            "min_cos": round(self.min_cos, 8),
            "mean_cos": round(self.mean_cos, 8),
            "max_abs_diff": float(f"{self.max_abs_diff:.6g}"),
            "n_texts": self.n_texts,
            "threshold": self.threshold,
            "passed": self.passed,
            "worst_text": self.worst_text[:80],
            "min_cos_alone": None if self.min_cos_alone is None else round(self.min_cos_alone, 8),
            "batch_invariance_max_abs": (
                None if self.batch_invariance_max_abs is None else float(f"{self.batch_invariance_max_abs:.3g}")
            ),
            "provider": "cpu",
            "metric": self.metric,
            **({} if self.score_tolerance is None else {"score_tolerance": self.score_tolerance}),
        }


def _reference_rows(
    model: Any, ids: list[np.ndarray], pad_id: int, width: int, head: Any, sep_id: int | None = None
) -> np.ndarray:
    """(N, width) from a PyTorch model run in e5rt's length-sorted batches on the same token ids (and the same
    token_type_ids e5rt feeds); head turns one batch's model output and torch feeds into its rows."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out = np.zeros((len(ids), width), dtype=np.float32)
    names = ("input_ids", "attention_mask", "token_type_ids")
    for batch in plan_batches([len(x) for x in ids], _BUDGET):
        rows = list(batch.indices)
        feeds = build_feeds([ids[i] for i in rows], batch.width, pad_id, names, dict.fromkeys(names, np.int64), sep_id)
        with torch.inference_mode():
            t = {k: torch.from_numpy(v) for k, v in feeds.items()}
            out[rows] = head(model(**t), t).numpy()
    return out


def reference_embeddings(checkpoint: Path | Any, ids: list[np.ndarray], pad_id: int, pooling: str) -> np.ndarray:
    """Normalized embeddings from the PyTorch model (fp32, eager attention) on the same token ids."""
    model = load_reference_model(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint.eval()
    return _reference_rows(
        model,
        ids,
        pad_id,
        int(model.config.hidden_size),
        lambda out, t: torch_pool(out.last_hidden_state, t["attention_mask"], pooling),
    )


def reference_scores(checkpoint: Path, ids: list[np.ndarray], pad_id: int, sep_id: int | None) -> np.ndarray:
    """Logits (N, labels) of a cross-encoder in PyTorch (fp32, eager attention) on the same pair ids, with the
    token_type_ids e5rt feeds (segment_ids: the tokenizer's own, checked in tests)."""
    model = load_reference_classifier(checkpoint)
    return _reference_rows(model, ids, pad_id, int(model.config.num_labels), lambda out, t: out.logits.float(), sep_id)


def compare_scores(
    ref: np.ndarray,
    got: np.ndarray,
    pairs: list[str],
    precision: str,
    alone: np.ndarray | None = None,
    activation: str = "sigmoid",
) -> ParityResult:
    """Parity of a scoring model (reranker, classifier): Pearson correlation of its logits with PyTorch's over
    the probe pairs (batched and each pair alone: the lower counts), and the largest difference of a score as
    users get it (the model's activation of the logits: sigmoid, or softmax over a classifier's labels)."""

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        a, b = a - a.mean(), b - b.mean()
        denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
        return float((a * b).sum() / denom) if denom > 0 else float(np.allclose(a, b))

    def sig(x: np.ndarray) -> np.ndarray:
        return activate(np.asarray(x, dtype=np.float32).reshape(len(pairs), -1), activation).astype(np.float64)

    r = pearson(ref, got)
    r_alone = None if alone is None else pearson(ref, alone)
    diff = np.abs(sig(ref) - sig(got)).max(axis=1)
    if alone is not None:
        diff = np.maximum(diff, np.abs(sig(ref) - sig(alone)).max(axis=1))
    worst = int(np.argmax(diff))
    return ParityResult(
        min_cos=min(r, r_alone) if r_alone is not None else r,
        mean_cos=r,
        max_abs_diff=float(diff.max()),
        n_texts=len(pairs),
        threshold=THRESHOLDS[precision],
        worst_index=worst,
        worst_text=pairs[worst],
        min_cos_alone=r_alone,
        batch_invariance_max_abs=None if alone is None else float(np.abs(alone - got).max()),
        metric="pearson of logits",
        score_tolerance=SCORE_TOLERANCE[precision],
    )


def onnx_embedder(model_path: Path, tokenizer_path: Path, spec: ModelSpec, exact_int8: bool = False) -> Embedder:
    """e5rt's pipeline on one ONNX file, CPU provider, refusing inf/NaN hidden states."""
    return Embedder.from_onnx(
        model_path,
        tokenizer_path,
        spec,
        batching=BatchOptions(max_batch_tokens=_BUDGET, min_efficiency=0.0),
        check_finite=True,
        exact_int8=exact_int8,
    )


def onnx_embeddings(
    model_path: Path,
    tokenizer_path: Path,
    spec: ModelSpec,
    ids: list[np.ndarray],
    exact_int8: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalized embeddings of token ids from one ONNX file: in the runtime's batches, and each text alone.

    One session serves both (a 24-layer graph's session is created once, not twice). Raises FloatingPointError
    on inf/NaN."""
    emb = onnx_embedder(model_path, tokenizer_path, spec, exact_int8)
    normalize = spec.pooling != "logits"  # a reranker's logits are compared as they are
    batched = emb.embed_tokens(ids, normalize).embeddings
    alone = (
        np.concatenate([emb.embed_tokens([x], normalize).embeddings for x in ids]) if ids else np.zeros((0, spec.dim))
    )
    return batched, alone


def compare(
    ref: np.ndarray, got: np.ndarray, texts: list[str], threshold: float, alone: np.ndarray | None = None
) -> ParityResult:
    """Parity of the batched embeddings (and, given `alone`, of each text alone: the lower of the two counts)."""
    cos = np.sum(ref.astype(np.float64) * got.astype(np.float64), axis=1)
    cos_alone = None if alone is None else np.sum(ref.astype(np.float64) * alone.astype(np.float64), axis=1)
    if cos_alone is not None:
        cos = np.minimum(cos, cos_alone)
    worst = int(np.argmin(cos))
    return ParityResult(
        min_cos=float(cos.min()),
        mean_cos=float(cos.mean()),
        max_abs_diff=float(np.abs(ref - got).max()),
        n_texts=len(texts),
        threshold=threshold,
        worst_index=worst,
        worst_text=texts[worst],
        min_cos_alone=None if cos_alone is None else float(cos_alone.min()),
        batch_invariance_max_abs=None if alone is None else float(np.abs(alone - got).max()),
    )


def cpu_latency_ms(
    model_path: Path, tokenizer_path: Path, spec: ModelSpec, batch: int = 16, length: int = 128, repeats: int = 3
) -> float:
    """Best-of-N wall time of one batch through the pipeline on the CPU provider: a same-machine comparison."""
    emb = onnx_embedder(model_path, tokenizer_path, spec)
    ids = [np.full(min(length, spec.max_length), 5, dtype=np.int64) for _ in range(batch)]
    emb.embed_tokens(ids)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        emb.embed_tokens(ids)
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0
