"""The cross-request batching queue: requests in, batches cut by the shared scheduler, rows handed back.

Two ways through the same scheduler and batch step:
- run_inline(): the caller's thread drains a private scheduler for one request (Embedder.encode);
- BatchQueue: worker threads drain a shared one, fed by many callers at once (the server).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..backends.base import Backend
from ..core.plan import CostRule
from ..errors import InvalidInputError, QueueFullError, ShuttingDownError
from .policy import QueueState, Step, decide, finished, started
from .request import PoolSpec, Progress, Submission, run_batch
from .scheduler import DEFAULT_BULK_SHARE, ScheduledBatch, Scheduler

# The longest run (estimated from the measured token rate) submit(here=True) makes in the caller's thread. A
# server's event loop waits meanwhile (health probes and new requests with it), so this bounds that wait; the
# hand-offs it saves (tenths of a ms) matter only next to a short run anyway. me5-small-r's short query takes 3-17 ms
# on the CPUs measured, large-instruct's 17 ms (Zen 5) to 300 ms (Zen 1, 34 tokens): the latter go to a worker.
HERE_MAX_S = 0.05
# ... and no run may have ended within HERE_QUIET_S. A request that arrived while a run went is submitted just after
# it ends (0.3-0.6 ms later: the answer written, the next request parsed and tokenized); run in the loop's thread
# too, it would hold the loop while the next ones arrive, and so on: requests one by one, never batched. That
# cascade took 64 query clients from 91 % to 51 % of encode's rate (me5-small-r int8-static, 2-core Zen 4 with
# VNNI, serve_load --quick); with this rule 92 %. A client's next query after a pause still runs here.
HERE_QUIET_S = 0.002


@dataclass(frozen=True)
class BatchRecord:
    """One batch the worker ran, for metrics."""

    texts: int
    requests: int
    width: int
    real_tokens: int
    padded_tokens: int
    seconds: float


@dataclass(frozen=True)
class _Run:
    batch: ScheduledBatch
    rows: list[tuple[Submission, int]]
    wide: bool  # on the queue's wide backend (every thread), not a worker's


def run_inline(request: Submission, backend: Backend, spec: PoolSpec, rule: CostRule) -> Submission:
    """Run every text of one request in the caller's thread, in the batches the scheduler cuts."""
    scheduler = Scheduler(rule)
    scheduler.add(0, request.lengths)
    while (batch := scheduler.next_batch()) is not None:
        run_batch(backend, [(request, row) for _, row in batch.rows], batch.width, spec)
        if request.future.done() and request.future.exception() is not None:
            break
    return request


class BatchQueue:
    """Thread-safe. submit() returns a Submission whose future resolves when all its rows are done.

    max_queued_texts bounds the texts waiting or running; past it, submit raises QueueFullError with a
    retry-after estimate from the measured token rate.
    """

    def __init__(
        self,
        backend: Backend,
        spec: PoolSpec,
        rule: CostRule,
        *,
        max_queued_texts: int | None = None,
        workers: int = 1,
        on_batch: Callable[[BatchRecord], None] | None = None,
        name: str = "e5rt-batcher",
        max_wait_s: float = 1.0,
        bulk_share: float | None = None,
        wide: Backend | None = None,
    ) -> None:
        if max_queued_texts is not None and max_queued_texts < 1:
            raise InvalidInputError(f"max_queued_texts must be >= 1, got {max_queued_texts}")
        if workers < 1:
            raise InvalidInputError(f"workers must be >= 1, got {workers}")
        self.backend = backend
        self.spec = spec
        self.rule = rule
        self.max_queued_texts = max_queued_texts
        self.on_batch = on_batch
        self._scheduler = Scheduler(
            rule, max_wait_s=max_wait_s, bulk_share=DEFAULT_BULK_SHARE if bulk_share is None else bulk_share
        )
        self._requests: dict[int, Submission] = {}
        self._keys = itertools.count()
        self._cond = threading.Condition()
        self._in_flight_texts = 0  # taken by a worker, not yet delivered
        self.wide = wide if workers > 1 else None
        self._state = QueueState(workers=workers, has_wide=self.wide is not None)  # what decide() reads
        self._handed: list[ScheduledBatch] = []  # runs of a split batch, for the idle workers
        self._tokens_per_s = 0.0  # moving average, for Retry-After
        self._last_end = -math.inf  # time.monotonic() when a run last ended, for _run_here
        self.dropped_texts = 0
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    # --- state -------------------------------------------------------------------------------------------
    @property
    def queued_texts(self) -> int:
        with self._cond:
            return self._scheduler.pending_texts + self._in_flight_texts

    @property
    def queued_tokens(self) -> int:
        with self._cond:
            return self._scheduler.pending_tokens

    @property
    def workers(self) -> int:
        return self._state.workers

    @property
    def closed(self) -> bool:
        return self._state.closed

    def _retry_after(self) -> int:
        """Seconds until the queued tokens should be done at the measured rate (at least 1); lock held."""
        rate = self._tokens_per_s
        return max(1, math.ceil(self._scheduler.pending_tokens / rate)) if rate > 0 else 1

    # --- callers -----------------------------------------------------------------------------------------
    def submit(
        self,
        ids: Sequence[np.ndarray],
        *,
        truncated: int = 0,
        tokenize_s: float = 0.0,
        chunks: int = 0,
        progress: Progress | None = None,
        here: bool = False,
    ) -> Submission:
        """Queue a request's texts; its future resolves once all are done. here: a one-text request arriving
        while the queue is idle, whose run should take at most HERE_MAX_S, runs in the caller's thread instead
        (see _run_here)."""
        request = Submission(
            ids, self.spec.dim, truncated=truncated, tokenize_s=tokenize_s, chunks=chunks, progress=progress
        )
        n = len(request.ids)
        if n == 0:
            return request
        if here and n == 1 and self._run_here(request):
            return request
        with self._cond:
            self._admit(n)
            key = next(self._keys)
            self._requests[key] = request
            self._scheduler.add(key, request.lengths)
            self._cond.notify()
        request.future.add_done_callback(lambda _f: self._forget(key))
        return request

    def _run_here(self, request: Submission) -> bool:
        """Run a lone text in the caller's thread when nothing is queued or running and nothing ended just
        before (HERE_QUIET_S); False (nothing done) otherwise. It holds every thread the way a wide run does
        (the workers wait for it), so the text runs as it would on a worker, without the two thread hand-offs
        (caller -> worker -> caller) a queued one takes (benchmarks/serve_latency.py on a 2-core Zen 1: the
        queue wait fell from 0.21 to 0.05 ms, and with spinning kept within runs served minus in-process from
        1.7-1.8 to 0.9 ms)."""
        length = request.lengths[0]
        with self._cond:
            state = self._state
            if state.closed or state.running or state.handed or self._scheduler.pending_texts:
                return False
            rate = self._tokens_per_s  # 0 until a batch has run: the first text goes to a worker
            if rate <= 0 or length / rate > HERE_MAX_S:
                return False
            if time.monotonic() - self._last_end < HERE_QUIET_S:
                return False  # it may have waited behind the last run: batched with what comes next instead
            self._admit(1)
            batch = ScheduledBatch(rows=((None, 0),), width=self.rule.width(length), real_tokens=length)
            taken = self._start(batch, wide=True, handed=0, rows=[(request, 0)])
        self._run(taken)
        return True

    def check_room(self, n: int) -> None:
        """Raise what submit() would for n texts now (a server checks before it spends time tokenizing)."""
        with self._cond:
            self._admit(n)

    def _admit(self, n: int) -> None:
        """Refuse n more texts when closed or past the bound; lock held."""
        if self._state.closed:
            raise ShuttingDownError("the batching queue is closed (the service is shutting down)")
        limit = self.max_queued_texts
        if limit is None:
            return
        if n > limit:
            raise InvalidInputError(f"{n} texts in one request; this queue holds at most {limit}")
        queued = self._scheduler.pending_texts + self._in_flight_texts
        if queued + n > limit:
            wait = self._retry_after()
            raise QueueFullError(
                f"queue full: {queued} texts queued, {n} more would pass the limit of {limit}; retry in {wait} s",
                retry_after=wait,
            )

    def cancel(self, request: Submission) -> int:
        """Drop a request's texts that have not started (its client went away). Returns how many."""
        with self._cond:
            key = next((k for k, r in self._requests.items() if r is request), None)
            dropped = self._scheduler.drop(key) if key is not None else 0
            self.dropped_texts += dropped
        request.cancel()
        return dropped

    def close(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop accepting work; with drain, finish what is queued first. True when the workers ended in time."""
        abandoned: list[Submission] = []
        with self._cond:
            self._state = replace(self._state, closed=True)
            if not drain:
                for key, request in list(self._requests.items()):
                    self._scheduler.drop(key)
                    abandoned.append(request)
            self._cond.notify_all()
        for request in abandoned:
            request.fail(ShuttingDownError("the batching queue was closed before this request ran"))
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    # --- workers -----------------------------------------------------------------------------------------
    def _forget(self, key: int) -> None:
        with self._cond:
            self._requests.pop(key, None)
            if key in self._scheduler:
                self.dropped_texts += self._scheduler.drop(key)

    def _take(self) -> _Run | None:
        """The next run for this worker, as e5rt.batching.policy.decide() says; waits while there is none."""
        with self._cond:
            while True:
                d = decide(self._state, self._scheduler, self._lengths)
                if d.step is Step.STOP:
                    return None
                if d.step is Step.WAIT:
                    self._cond.wait()
                    continue
                if d.step is Step.HANDED:
                    return self._start(self._handed.pop(), wide=False, handed=-1)
                assert d.batch is not None
                self._handed.extend(d.hand)
                if d.wake:
                    self._cond.notify(d.wake)
                return self._start(d.batch, wide=d.wide, handed=len(d.hand))

    def _lengths(self, batch: ScheduledBatch) -> list[int]:
        return [self._requests[k].lengths[row] for k, row in batch.rows]  # type: ignore[index]

    def _start(
        self, batch: ScheduledBatch, wide: bool, handed: int, rows: list[tuple[Submission, int]] | None = None
    ) -> _Run:
        """Count a batch as running; lock held."""
        if rows is None:
            rows = [(self._requests[k], row) for k, row in batch.rows]  # type: ignore[index]
        self._in_flight_texts += len(rows)
        self._state = started(self._state, batch, wide, handed)
        return _Run(batch, rows, wide)

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            self._run(taken)

    def _run(self, taken: _Run) -> None:
        """Run a batch taken by _start (on a worker, or in the caller's thread), then count it done."""
        batch, rows = taken.batch, taken.rows
        backend = self.wide if taken.wide and self.wide is not None else self.backend
        seconds = run_batch(backend, rows, batch.width, self.spec)
        with self._cond:
            self._state = finished(self._state, batch, taken.wide)
            if taken.wide:
                self._cond.notify_all()  # the workers that waited for it
            self._in_flight_texts -= len(rows)
            self._last_end = time.monotonic()
            rate = batch.real_tokens / max(seconds, 1e-9)
            self._tokens_per_s = rate if self._tokens_per_s == 0 else 0.8 * self._tokens_per_s + 0.2 * rate
        if self.on_batch is not None:
            self.on_batch(
                BatchRecord(
                    texts=len(rows),
                    requests=len({id(r) for r, _ in rows}),
                    width=batch.width,
                    real_tokens=batch.real_tokens,
                    padded_tokens=batch.padded_tokens,
                    seconds=seconds,
                )
            )
