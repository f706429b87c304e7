"""A scoring head's logits as scores: sigmoid (one independent probability per label), softmax (one distribution
over the labels), or none (the logits as they are). The manifest names which a model uses."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large |x| (float32 in, float32 out)."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the row maximum so large logits do not overflow."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Scores from logits by the named activation (the manifest's)."""
    if activation == "sigmoid":
        return sigmoid(logits)
    if activation == "softmax":
        return softmax(logits)
    if activation == "none":
        return np.asarray(logits, dtype=np.float32)
    raise InvalidInputError(f"unknown activation {activation!r}; expected sigmoid, softmax or none")


def ranked(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices by score, best first (ties keep input order), cut to top_n: every ranking e5rt returns."""
    return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")[: top_n or len(scores)]]
