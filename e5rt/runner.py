"""Run tokenized texts through a backend in planned batches and pool them; shared by Embedder and export."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from .errors import VariantError
from .plan import plan_batches
from .pool import cls_pool, pool_sum


class Backend(Protocol):
    input_names: tuple[str, ...]
    input_types: dict[str, Any]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class Stats:
    texts: int
    tokens: int
    padded_tokens: int
    padding_efficiency: float
    batches: int
    truncated: int
    chunks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


EMPTY_STATS = Stats(0, 0, 0, 1.0, 0, 0)


def build_feeds(
    ids_list: Sequence[np.ndarray], width: int, pad_id: int, input_names: Sequence[str], input_types: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Right-padded input_ids / attention_mask / token_type_ids, only those the graph declares."""
    n = len(ids_list)
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for row, ids in enumerate(ids_list):
        input_ids[row, : len(ids)] = ids  # right padding: the fused attention kernels assume it
        mask[row, : len(ids)] = 1
    feeds: dict[str, np.ndarray] = {}
    for name in input_names:
        if name == "input_ids":
            arr = input_ids
        elif name == "attention_mask":
            arr = mask
        elif name == "token_type_ids":
            arr = np.zeros_like(input_ids)
        else:
            raise VariantError(f"the graph declares an input {name!r} that e5rt does not know how to feed")
        dtype = input_types.get(name, np.int64)
        feeds[name] = arr if arr.dtype == dtype else arr.astype(dtype)
    return feeds


def embed_ids(
    backend: Backend,
    ids_list: Sequence[np.ndarray],
    *,
    dim: int,
    pad_id: int,
    pooling: str,
    max_batch_tokens: int,
    pad_multiple: int = 1,
    packed: bool = False,
    progress: Callable[[int, int], None] | None = None,
    check_finite: bool = False,
    min_efficiency: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, Stats]:
    """Masked sums (mean pooling) or CLS vectors, with their weights, in input order.

    Dividing sums by weights gives the pooled vectors; keeping them apart lets chunked texts combine windows.
    """
    n = len(ids_list)
    sums = np.zeros((n, dim), dtype=np.float32)
    weights = np.ones(n, dtype=np.float32)
    lengths = [len(x) for x in ids_list]
    batches = plan_batches(lengths, max_batch_tokens, pad_multiple, packed=packed, min_efficiency=min_efficiency)
    done = 0
    for batch in batches:
        rows = list(batch.indices)
        feeds = build_feeds([ids_list[i] for i in rows], batch.width, pad_id, backend.input_names, backend.input_types)
        hidden = backend.run(feeds)
        if check_finite and not np.isfinite(hidden).all():
            raise FloatingPointError(f"non-finite hidden states in a batch of {len(rows)} texts, width {batch.width}")
        if pooling == "cls":
            sums[rows] = cls_pool(hidden)
        else:
            mask = feeds.get("attention_mask")
            if mask is None:
                mask = np.arange(batch.width)[None, :] < np.asarray([lengths[i] for i in rows])[:, None]
            # Scatter back by index: this is where the input order is restored.
            sums[rows], weights[rows] = pool_sum(hidden, mask)
        done += len(rows)
        if progress is not None:
            progress(done, n)
    tokens = int(sum(lengths))
    padded = tokens if packed else int(sum(b.padded_tokens for b in batches))
    stats = Stats(
        texts=n,
        tokens=tokens,
        padded_tokens=padded,
        padding_efficiency=(tokens / padded) if padded else 1.0,
        batches=len(batches),
        truncated=0,
    )
    return sums, weights, stats
