"""Which pending texts run next, across all requests in flight.

Texts from every request sit in one length-sorted list. Each batch is built around one request's shortest
pending text (its anchor) and grows to the nearest lengths on either side, from any request, while the
planner's cost rule admits them: batches stay padding-efficient however the traffic mixes.

Whose text anchors the next batch is a fair share by tokens. Requests whose pending tokens fit in one batch are
"small" (a query, a short request), larger ones "bulk". While both kinds wait, bulk requests receive
``bulk_share`` of the tokens served and small ones the rest: each batch goes to the kind that is behind its share.
Small requests go in arrival order (a one-line query waits for about one batch, not for a 2,000-text request
queued before it, which TEI's strict FIFO makes it do); bulk requests take turns by the tokens each has received,
so two bulk requests split their share. Any request not served for ``max_wait_s`` goes first, whatever the
shares say. A bulk request thus gets a steady share of the model under a stream of queries instead of a batch per
``max_wait_s``, and a query still rides in the next batch or the one after.

While bulk requests wait, a batch anchored by a small request grows over small requests' texts only, so the
queries waiting at that moment ride together instead of each beside the bulk texts of its own length.

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
from ..errors import ConfigError


@dataclass(frozen=True)
class ScheduledBatch:
    rows: tuple[tuple[Hashable, int], ...]  # (request key, row in that request), shortest text first
    width: int  # padded sequence length
    real_tokens: int
    bulk: bool = False  # anchored by a bulk request (BatchQueue keeps a worker free of these for queries)

    @property
    def padded_tokens(self) -> int:
        return self.width * len(self.rows)


def split_batch(batch: ScheduledBatch, lengths: Sequence[int], parts: int, rule: CostRule) -> list[ScheduledBatch]:
    """Cut a batch (rows shortest first, lengths aligned with them) into at most `parts` runs of consecutive rows
    whose padded tokens are as even as possible: the runs go to idle workers side by side."""
    n = len(batch.rows)
    parts = max(1, min(parts, n))
    widths = [rule.width(x) for x in lengths]

    def cuts(limit: int) -> list[int] | None:
        """Greedy ends of runs whose padded tokens stay within limit; None when that takes more than `parts`."""
        ends, start = [], 0
        while start < n:
            end = start
            while end + 1 < n and (end + 2 - start) * widths[end + 1] <= limit:
                end += 1
            ends.append(end + 1)
            start = end + 1
            if len(ends) > parts:
                return None
        return ends

    lo, hi = max(widths), n * max(widths)  # the largest run's padded tokens lies between these
    while lo < hi:
        mid = (lo + hi) // 2
        if cuts(mid) is None:
            lo = mid + 1
        else:
            hi = mid
    out, start = [], 0
    for end in cuts(lo) or [n]:
        out.append(
            ScheduledBatch(
                rows=batch.rows[start:end],
                width=max(widths[start:end]),
                real_tokens=sum(lengths[start:end]),
                bulk=batch.bulk,
            )
        )
        start = end
    return out


# Measured (benchmarks/results/bulk-share-me5-small-r-zen5.json, queries riding together): 0.55 gave a 2,048-text
# request 47 % of its solo rate under 16 query clients with the queries' p99 at 2.06x idle (64 clients: 52 %,
# 2.33x); 0.5: 41 % / 1.92x, 0.6: 51 % / 2.21x, 0.65: 57 % / 2.83x. With two workers (the CPU default since)
# one worker stays free of bulk batches while queries wait, so above ~0.5 the share no longer matters: 0.55 and
# 0.75 both gave 48 % / 2.0-2.2x, 0.25 gave 25 % (benchmarks/results/bulk-share-workers2-me5-small-r-zen5.json).
DEFAULT_BULK_SHARE = 0.55


def check_bulk_share(value: object) -> float:
    """The bulk share as a float in (0, 1), or the ConfigError (the one place the rule is written)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"bulk_share must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


class Scheduler:
    def __init__(
        self,
        rule: CostRule,
        max_wait_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        bulk_share: float = DEFAULT_BULK_SHARE,
    ) -> None:
        self.rule = rule
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.bulk_share = check_bulk_share(bulk_share)
        self._got: dict[Hashable, int] = {}  # tokens each request has received
        # Tokens served to each kind while both waited (reset when one kind runs dry): the fair-share ledger.
        self._served = {"small": 0, "bulk": 0}
        self._sorted: list[tuple[int, int]] = []  # (length, seq) of every pending text, ascending
        self._where: dict[int, tuple[Hashable, int, int]] = {}  # seq -> (request key, row, length)
        self._heaps: dict[Hashable, list[tuple[int, int]]] = {}  # per request, lazily pruned of taken texts
        self._left: dict[Hashable, int] = {}  # pending tokens per request
        self._last: dict[Hashable, tuple[float, int]] = {}  # (time, order) it was last served, or added
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
        self._last[key] = (self.clock(), self._seq)
        self._got[key] = 0
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
        self._last.pop(key, None)
        self._got.pop(key, None)
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
        del self._last[key]
        del self._got[key]
        return False

    def _pending(self, key: Hashable) -> list[tuple[int, int]]:
        """A request's texts not yet taken, as (length, seq) items."""
        return [item for item in self._heaps[key] if item[1] in self._where]

    def _is_bulk(self, key: Hashable) -> bool:
        return self._left[key] > self.rule.max_batch_tokens

    def _pick(self, now: float, small_first: bool) -> tuple[Hashable, list[Hashable], bool]:
        """The request whose shortest pending text anchors the next batch (see the module docstring), the small
        requests waiting, and whether both kinds are waiting (only then does the batch count toward the shares).
        small_first: a small request anchors whenever one waits (the caller's other workers run bulk batches)."""
        last = self._last
        waited_too_long = [k for k, (t, _) in last.items() if now - t > self.max_wait_s]
        small = [k for k in self._left if not self._is_bulk(k)]
        bulk = [k for k in self._left if self._is_bulk(k)]
        both = bool(small) and bool(bulk)
        if not both:
            self._served = {"small": 0, "bulk": 0}  # a share is owed only while both kinds wait
        if small_first and small:
            return min(small, key=last.__getitem__), small, both
        if waited_too_long:
            return min(waited_too_long, key=last.__getitem__), small, both
        served = self._served
        bulk_behind = served["bulk"] < self.bulk_share * (served["small"] + served["bulk"])
        if bulk and (not small or bulk_behind):
            return min(bulk, key=lambda k: (self._got[k], last[k])), small, both  # the bulk request that got least
        return min(small, key=last.__getitem__), small, both  # the longest-waiting small request

    def next_batch(self, small_first: bool = False) -> ScheduledBatch | None:
        """The next batch to run, or None when nothing is pending. small_first: anchor it on a small request
        when one waits, whatever the shares say (BatchQueue asks when its other workers all run bulk batches)."""
        if not self._sorted:
            return None
        now = self.clock()
        key, small, both = self._pick(now, small_first)
        anchored_by_bulk = self._is_bulk(key)
        anchor = self._heaps[key][0]  # pruned after every batch, so the top is pending
        if both and not anchored_by_bulk:
            # A small request's batch grows over small requests' texts only while bulk ones wait: otherwise the
            # bulk texts of the anchor's own length fill it, and the queries of other lengths wait a turn each.
            # Simulated and measured with 16 query clients and a 2,048-text request at share 0.55: the queries' p99
            # fell from 2.9x idle to 2.06x while the bulk request's rate went from 40 to 47 % of its rate alone
            # (benchmarks/results/bulk-share-me5-small-r*.json, before and after).
            pool = sorted(item for k in small for item in self._pending(k))
            lo, hi, width, real = grow(pool, bisect.bisect_left(pool, anchor), self.rule)
            taken = pool[lo : hi + 1]
            for item in taken:
                del self._sorted[bisect.bisect_left(self._sorted, item)]
        else:
            lo, hi, width, real = grow(self._sorted, bisect.bisect_left(self._sorted, anchor), self.rule)
            taken = self._sorted[lo : hi + 1]
            del self._sorted[lo : hi + 1]
        owners = {self._where[seq][0] for _, seq in taken}
        kinds = {k: "bulk" if self._is_bulk(k) else "small" for k in owners}  # each owner's kind before this batch
        rows = []
        for n, seq in taken:
            owner, row, _ = self._where.pop(seq)
            rows.append((owner, row))
            if both:
                self._served[kinds[owner]] += n
            self._got[owner] += n
            self._left[owner] -= n
        self.pending_tokens -= real
        self._seq += 1
        for owner in owners:
            if self._prune(owner):
                self._last[owner] = (now, self._seq)
        return ScheduledBatch(rows=tuple(rows), width=width, real_tokens=real, bulk=anchored_by_bulk)
