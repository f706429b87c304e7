"""Which pending texts run next, across all requests in flight.

Texts from every request sit in one length-sorted list. Each batch is built around one request's shortest
pending text (its anchor) and grows to the nearest lengths on either side, from any request, while the
planner's cost rule admits them: batches stay padding-efficient however the traffic mixes.

Whose text anchors the next batch: requests whose pending tokens fit in one batch go before larger ones, the
longest-waiting first within each class. So a one-line query that arrives while a 2,000-text request runs
waits for the batch in progress, not for the whole request (TEI's strict FIFO makes it wait for everything
queued before it), and small requests are served in arrival order. Any request that has waited longer than
``max_wait_s`` since it was last served goes first, so a bulk request is never starved by a stream of small
ones.

Every batch is cut by core.plan.grow(), the planner's own step, so with a single request this cuts exactly
core.plan()'s batches: the library's encode and the server share one algorithm.

Not thread-safe: BatchQueue holds a lock around it; the engine drains a private one inline.
"""

from __future__ import annotations

import bisect
import heapq
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from ..core.plan import CostRule, grow


@dataclass(frozen=True)
class ScheduledBatch:
    rows: tuple[tuple[Hashable, int], ...]  # (request key, row in that request), shortest text first
    width: int  # padded sequence length
    real_tokens: int

    @property
    def padded_tokens(self) -> int:
        return self.width * len(self.rows)


class Scheduler:
    def __init__(self, rule: CostRule, max_wait_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._sorted: list[tuple[int, int]] = []  # (length, seq) of every pending text, ascending
        self._where: dict[int, tuple[Hashable, int, int]] = {}  # seq -> (request key, row, length)
        self._heaps: dict[Hashable, list[tuple[int, int]]] = {}  # per request, lazily pruned of taken texts
        self._left: dict[Hashable, int] = {}  # pending tokens per request
        self._served: dict[Hashable, tuple[float, int]] = {}  # (time, order) it was last served, or added
        self._seq = 0
        self.pending_tokens = 0

    @property
    def pending_texts(self) -> int:
        return len(self._sorted)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._heaps

    def add(self, key: Hashable, lengths: Sequence[int]) -> None:
        """Queue a request's texts by their token lengths (an empty request is not queued)."""
        if key in self._heaps:
            raise KeyError(f"request {key!r} is already queued")
        if not lengths:
            return
        items = []
        for row, n in enumerate(lengths):
            self._where[self._seq] = (key, row, int(n))
            items.append((int(n), self._seq))
            self._seq += 1
        items.sort()  # a sorted list is a valid heap
        self._heaps[key] = items
        self._left[key] = sum(n for n, _ in items)
        self._served[key] = (self.clock(), self._seq)
        if len(items) <= 16:
            for item in items:
                bisect.insort(self._sorted, item)
        else:
            self._sorted = list(heapq.merge(self._sorted, items))
        self.pending_tokens += sum(n for n, _ in items)

    def drop(self, key: Hashable) -> int:
        """Remove a request's pending texts (its client went away); returns how many were dropped."""
        heap = self._heaps.pop(key, None)
        self._left.pop(key, None)
        self._served.pop(key, None)
        if not heap:
            return 0
        live = {seq for _, seq in heap if seq in self._where}
        for seq in live:
            self.pending_tokens -= self._where.pop(seq)[2]
        self._sorted = [item for item in self._sorted if item[1] not in live]
        return len(live)

    def _prune(self, key: Hashable) -> bool:
        """Pop texts other batches took off the request's heap; False when it has none left."""
        heap = self._heaps[key]
        while heap and heap[0][1] not in self._where:
            heapq.heappop(heap)
        if heap:
            return True
        del self._heaps[key]
        del self._left[key]
        del self._served[key]
        return False

    def _pick(self, now: float) -> Hashable:
        """The request whose shortest pending text anchors the next batch (see the module docstring)."""
        waited_too_long = [k for k, (t, _) in self._served.items() if now - t > self.max_wait_s]
        if waited_too_long:
            return min(waited_too_long, key=self._served.__getitem__)
        budget = self.rule.max_batch_tokens
        # Two classes: requests that fit in one batch, then larger ones; the longest-waiting first in each.
        return min(self._left, key=lambda k: (self._left[k] > budget, self._served[k]))

    def next_batch(self) -> ScheduledBatch | None:
        if not self._sorted:
            return None
        now = self.clock()
        key = self._pick(now)
        anchor = self._heaps[key][0]  # pruned after every batch, so the top is pending
        lo, hi, width, real = grow(self._sorted, bisect.bisect_left(self._sorted, anchor), self.rule)
        taken = self._sorted[lo : hi + 1]
        del self._sorted[lo : hi + 1]
        rows = []
        served = set()
        for n, seq in taken:
            owner, row, _ = self._where.pop(seq)
            rows.append((owner, row))
            served.add(owner)
            self._left[owner] -= n
        self.pending_tokens -= real
        self._seq += 1
        for owner in served:
            if self._prune(owner):
                self._served[owner] = (now, self._seq)
        return ScheduledBatch(rows=tuple(rows), width=width, real_tokens=real)
