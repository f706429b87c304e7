"""Pooling and normalization in numpy, with fp32 accumulation and no B×L×H integer or float64 temporaries."""

from __future__ import annotations

import numpy as np


def pool_sum(hidden: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masked sum over the sequence axis and the token counts: (B, H) float32 and (B,) float32.

    A batched matmul of the (B, 1, L) float mask with (B, L, H) hidden states accumulates in fp32 without
    building a masked copy of the hidden states.
    """
    mask_f = mask.astype(np.float32, copy=False)
    if hidden.dtype != np.float32:
        # fp16 outputs: one fp32 copy of the batch, since numpy's fp16 matmul is slow and imprecise.
        hidden = hidden.astype(np.float32)
    sums = np.matmul(mask_f[:, None, :], hidden)[:, 0, :]
    return sums, mask_f.sum(axis=1)


def divide(sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sums over their weights (token counts); a zero weight gives a zero row, never a NaN."""
    out: np.ndarray = sums / np.maximum(weights, 1e-9)[:, None]
    return out


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the hidden states over the attention mask."""
    return divide(*pool_sum(hidden, mask))


def cls_pool(hidden: np.ndarray) -> np.ndarray:
    """The first token's hidden state."""
    return np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, eps)).astype(np.float32, copy=False)
    return out


def vectors_from_sums(sums: np.ndarray, weights: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Weighted sums and their weights -> contiguous float32 embeddings, L2-normalized unless told not to."""
    pooled = divide(sums, weights)
    if normalize:
        pooled = l2_normalize(pooled)
    return np.ascontiguousarray(pooled, dtype=np.float32)


def cut_dimensions(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """The first N values of each vector, re-normalized. E5 was not trained for this (no Matryoshka loss):
    the shortened vectors lose accuracy faster than a Matryoshka model's would."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    cut = np.ascontiguousarray(vectors[:, :dimensions])
    if normalize:
        cut /= np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    return cut
