"""Similarity and top-k search over embeddings: the jobs the seed article does with scikit-learn."""

from __future__ import annotations

import numpy as np

from .core.pool import l2_normalize
from .errors import InvalidInputError


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    return arr


def similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity matrix between the rows of a and b (b defaults to a)."""
    left = l2_normalize(_as_matrix(a, "a"))
    right = left if b is None else l2_normalize(_as_matrix(b, "b"))
    if left.shape[1] != right.shape[1]:
        raise InvalidInputError(f"dimension mismatch: a has {left.shape[1]}, b has {right.shape[1]}")
    scores: np.ndarray = left @ right.T
    return scores


def search(query_embs: np.ndarray, corpus_embs: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus rows per query by cosine: (indices, scores), each (Q, min(k, N)), best first."""
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    scores = similarity(query_embs, corpus_embs)
    k = min(k, scores.shape[1])
    if k == 0:
        empty = np.zeros((scores.shape[0], 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    # Sort by score descending, then by index for stable ties.
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx.astype(np.int64), np.take_along_axis(scores, idx, axis=1)
