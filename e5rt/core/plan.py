"""Batch planning: sort by length and cut batches under a padded-token budget.

Pure functions on token lengths, so the invariants (order restored, budget kept, every text once) can be
property-tested without a model. The cost rule lives in one class, so the cross-request queue
(e5rt.batching) cuts batches exactly as this planner does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


def padded_length(length: int, multiple: int) -> int:
    """Round a sequence length up to a multiple (1 = no rounding)."""
    if multiple <= 1:
        return length
    return -(-length // multiple) * multiple


@dataclass(frozen=True)
class CostRule:
    """When a batch is too costly or too wasteful to grow.

    The cost is width × size for padded graphs, and the sum of real lengths for packed graphs (which compute
    no padding). min_efficiency also refuses a batch whose padded tokens would be less than that fraction real:
    without it, a budget sized for long texts lets one batch span queries of 6 tokens and sentences of 60.
    pad_allowance is the padding a batch may carry whatever min_efficiency says: a run has a fixed cost, so two
    small batches of nearly equal widths cost more than one with a few padded tokens (short queries would
    otherwise run four to a batch).
    """

    max_batch_tokens: int
    pad_multiple: int = 1
    packed: bool = False
    max_batch_size: int | None = None
    min_efficiency: float = 0.0
    pad_allowance: int = 0

    def __post_init__(self) -> None:
        if self.max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        if self.pad_multiple < 1:
            raise ConfigError(f"pad_multiple must be >= 1, got {self.pad_multiple}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not 0.0 <= self.min_efficiency <= 1.0:
            raise ConfigError(f"min_efficiency must be in [0, 1], got {self.min_efficiency}")
        if self.pad_allowance < 0:
            raise ConfigError(f"pad_allowance must be >= 0, got {self.pad_allowance}")

    def width(self, length: int) -> int:
        return padded_length(length, self.pad_multiple)

    def cost(self, count: int, real: int, width: int) -> int:
        return real if self.packed else width * count

    def admits(self, count: int, real: int, width: int) -> bool:
        """Whether a batch of count texts holding real tokens, padded to width, may run. A single text always
        may: one costlier than the budget runs alone."""
        if count <= 1:
            return True
        if self.cost(count, real, width) > self.max_batch_tokens:
            return False
        if self.max_batch_size is not None and count > self.max_batch_size:
            return False
        padded = width * count
        return self.packed or real >= self.min_efficiency * padded or padded - real <= self.pad_allowance


@dataclass(frozen=True)
class Batch:
    indices: tuple[int, ...]  # positions in the caller's input list
    width: int  # padded sequence length of the batch

    @property
    def padded_tokens(self) -> int:
        return self.width * len(self.indices)


def grow(sorted_items: Sequence[tuple[int, int]], anchor: int, rule: CostRule) -> tuple[int, int, int, int]:
    """The one batch-cutting step: from the text at position `anchor` of a length-sorted list of
    (length, key) items, take the nearest lengths on either side while the rule admits them.

    Returns (lo, hi, width, real): the batch is sorted_items[lo : hi + 1], padded to width, holding real tokens.
    A shorter text never widens the batch; a longer one sets the new width; ties go to the shorter side.
    The planner below and the cross-request Scheduler (e5rt.batching) both cut every batch with this.
    """
    length = sorted_items[anchor][0]
    lo = hi = anchor
    count, real, width = 1, length, rule.width(length)
    end = len(sorted_items) - 1
    while True:
        left = sorted_items[lo - 1][0] if lo > 0 else -1  # -1: no text on that side
        right = sorted_items[hi + 1][0] if hi < end else -1
        ok_left = left >= 0 and rule.admits(count + 1, real + left, width)
        ok_right = right >= 0 and rule.admits(count + 1, real + right, rule.width(right))
        if ok_left and ok_right:
            take_left = length - left <= right - length
        elif ok_left or ok_right:
            take_left = ok_left
        else:
            return lo, hi, width, real
        if take_left:
            lo -= 1
            real += left
        else:
            hi += 1
            real += right
            width = rule.width(right)
        count += 1


def plan(lengths: Sequence[int], rule: CostRule) -> list[Batch]:
    """Cut length-sorted batches under the rule, shortest first: grow() anchored on the shortest text left."""
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    pending = [(int(lengths[i]), int(i)) for i in order.tolist()]
    batches: list[Batch] = []
    while pending:
        lo, hi, width, _ = grow(pending, 0, rule)
        batches.append(Batch(tuple(i for _, i in pending[lo : hi + 1]), width))
        del pending[lo : hi + 1]
    return batches


def plan_batches(
    lengths: Sequence[int],
    max_batch_tokens: int,
    pad_multiple: int = 1,
    packed: bool = False,
    max_batch_size: int | None = None,
    min_efficiency: float = 0.0,
) -> list[Batch]:
    """plan() with the rule spelled out as arguments."""
    return plan(lengths, CostRule(max_batch_tokens, pad_multiple, packed, max_batch_size, min_efficiency))
