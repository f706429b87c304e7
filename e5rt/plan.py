"""Batch planning: sort by length and cut batches under a padded-token budget.

Pure functions on token lengths, so the invariants (order restored, budget kept, every text once) can be
property-tested without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def padded_length(length: int, multiple: int) -> int:
    """Round a sequence length up to a multiple (1 = no rounding)."""
    if multiple <= 1:
        return length
    return -(-length // multiple) * multiple


@dataclass(frozen=True)
class Batch:
    indices: tuple[int, ...]  # positions in the caller's input list
    width: int  # padded sequence length of the batch

    @property
    def padded_tokens(self) -> int:
        return self.width * len(self.indices)


def plan_batches(
    lengths: Sequence[int],
    max_batch_tokens: int,
    pad_multiple: int = 1,
    packed: bool = False,
    max_batch_size: int | None = None,
    min_efficiency: float = 0.0,
) -> list[Batch]:
    """Cut length-sorted batches whose cost stays within max_batch_tokens.

    The cost is width × size for padded graphs, and the sum of real lengths for packed graphs (which compute
    no padding). A single text costlier than the budget runs alone. Batches come out shortest first.

    min_efficiency also cuts a batch when taking the next (longer) text would leave less than that fraction of
    the padded tokens real: without it, a budget sized for long texts lets one batch span queries of 6 tokens
    and sentences of 60, padding most of it.
    """
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[Batch] = []
    current: list[int] = []
    width = 0
    real = 0
    for idx in order.tolist():
        n = int(lengths[idx])
        w = padded_length(n, pad_multiple)
        # Sorted ascending, so the newcomer sets the batch width.
        cost = real + n if packed else w * (len(current) + 1)
        full = max_batch_size is not None and len(current) >= max_batch_size
        wasteful = not packed and (real + n) < min_efficiency * w * (len(current) + 1)
        if current and (cost > max_batch_tokens or full or wasteful):
            batches.append(Batch(tuple(current), width))
            current, real = [], 0
        current.append(idx)
        width = w
        real += n
    if current:
        batches.append(Batch(tuple(current), width))
    return batches
