"""Right-padded model inputs for one batch, shaped and typed as the graph declares them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import VariantError


def segment_ids(input_ids: np.ndarray, sep_id: int) -> np.ndarray:
    """BERT's token_type_ids of a (query, document) pair from its ids: 0 up to and including the first [SEP],
    1 after it (the pair template [CLS] A [SEP] B [SEP]). Padding gets 1 too; it is masked out anyway."""
    is_sep = input_ids == sep_id
    before: np.ndarray = np.cumsum(is_sep, axis=1) - is_sep  # separators strictly before each position
    return (before > 0).astype(np.int64)


def build_feeds(
    ids_list: Sequence[np.ndarray],
    width: int,
    pad_id: int,
    input_names: Sequence[str],
    input_types: dict[str, Any],
    sep_id: int | None = None,
) -> dict[str, np.ndarray]:
    """Right-padded input_ids / attention_mask / token_type_ids, only those the graph declares. With sep_id
    (cross-encoders whose pairs have two segments), token_type_ids mark the second segment."""
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
            arr = np.zeros_like(input_ids) if sep_id is None else segment_ids(input_ids, sep_id)
        else:
            raise VariantError(f"the graph declares an input {name!r} that e5rt does not know how to feed")
        dtype = input_types.get(name, np.int64)
        feeds[name] = arr if arr.dtype == dtype else arr.astype(dtype)
    return feeds
