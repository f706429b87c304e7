"""The cross-request batching core: scheduler invariants (hypothesis), and the queue on the fake backend."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e5rt.backends import FakeBackend
from e5rt.batching import BatchQueue, PoolSpec, Scheduler, Submission, run_inline
from e5rt.batching.policy import Decision, QueueState, Step, decide, finished, started
from e5rt.batching.scheduler import ScheduledBatch, split_batch
from e5rt.core import CostRule, plan, vectors_from_sums
from e5rt.errors import InternalError, QueueFullError, ShuttingDownError

SPEC = PoolSpec(dim=32, pad_id=0)
requests_st = st.lists(st.lists(st.integers(1, 300), min_size=0, max_size=40), min_size=1, max_size=8)
rules_st = st.builds(
    CostRule,
    max_batch_tokens=st.integers(1, 4096),
    pad_multiple=st.sampled_from([1, 8]),
    packed=st.booleans(),
    max_batch_size=st.one_of(st.none(), st.integers(1, 64)),
    min_efficiency=st.sampled_from([0.0, 0.5, 0.95]),
)


def _ids(lengths: list[int], salt: int) -> list[np.ndarray]:
    rng = np.random.default_rng(salt)
    return [rng.integers(1, 1000, size=n) for n in lengths]


@settings(max_examples=150, deadline=None)
@given(requests=requests_st, rule=rules_st)
def test_scheduler_takes_every_text_once_within_budget(requests: list[list[int]], rule: CostRule) -> None:
    sched = Scheduler(rule)
    for key, lengths in enumerate(requests):
        sched.add(key, lengths)
    seen = []
    while (batch := sched.next_batch()) is not None:
        lengths = [requests[k][r] for k, r in batch.rows]
        assert batch.width == rule.width(max(lengths))
        assert batch.real_tokens == sum(lengths)
        if len(batch.rows) > 1:  # one text costlier than the budget runs alone, never with others
            assert rule.cost(len(lengths), sum(lengths), batch.width) <= rule.max_batch_tokens
            assert rule.admits(len(lengths), sum(lengths), batch.width)
        seen.extend(batch.rows)
    expected = [(k, r) for k, lengths in enumerate(requests) for r in range(len(lengths))]
    assert sorted(seen) == expected and sched.pending_tokens == 0 and sched.pending_texts == 0


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=60), rule=rules_st)
def test_one_request_cuts_the_planners_batches(lengths: list[int], rule: CostRule) -> None:
    """The library's encode and the server share one planner: alone, a request gets plan()'s exact batches."""
    sched = Scheduler(rule)
    sched.add("only", lengths)
    got = []
    while (batch := sched.next_batch()) is not None:
        got.append(([r for _, r in batch.rows], batch.width))
    assert got == [(list(b.indices), b.width) for b in plan(lengths, rule)]


def test_short_query_is_not_starved_by_a_bulk_request() -> None:
    sched = Scheduler(CostRule(max_batch_tokens=256))
    sched.add("bulk", [64] * 100)  # 25 batches of 4
    first = sched.next_batch()
    assert first is not None and {k for k, _ in first.rows} == {"bulk"}
    sched.add("query", [8])
    second = sched.next_batch()
    assert second is not None and ("query", 0) in second.rows  # served next, not after 24 more batches


def test_a_stream_of_small_requests_never_starves_a_bulk_one() -> None:
    now = [0.0]
    sched = Scheduler(CostRule(max_batch_tokens=64), max_wait_s=1.0, clock=lambda: now[0])
    sched.add("bulk", [60] * 10)
    served_bulk_at = []
    for step in range(12):
        sched.add(f"q{step}", [5])  # a new small request arrives before every batch
        batch = sched.next_batch()
        assert batch is not None
        if any(k == "bulk" for k, _ in batch.rows):
            served_bulk_at.append(step)
        now[0] += 0.3  # each batch takes 0.3 s
    # small requests go first, but the bulk request is served at least once every max_wait_s (4 batches)
    assert served_bulk_at and all(b - a <= 5 for a, b in zip([-1, *served_bulk_at], served_bulk_at, strict=False))


def test_small_first_anchors_on_a_waiting_query_and_falls_back_to_bulk() -> None:
    sched = Scheduler(CostRule(max_batch_tokens=256), bulk_share=0.9)  # the shares alone would favour bulk
    sched.add("bulk", [64] * 100)
    first = sched.next_batch()
    assert first is not None and first.bulk
    sched.add("query", [8])
    reserved = sched.next_batch(small_first=True)
    assert reserved is not None and not reserved.bulk and ("query", 0) in reserved.rows
    alone = sched.next_batch(small_first=True)  # no query waits: the free worker is not left idle
    assert alone is not None and alone.bulk


def test_queries_ride_together_not_beside_bulk_texts_of_their_length() -> None:
    # A bulk request with texts at every length, and four queries of different lengths that fit one batch.
    rule = CostRule(max_batch_tokens=512, min_efficiency=0.95, pad_allowance=32)
    sched = Scheduler(rule, bulk_share=0.5)
    sched.add("bulk", [n for n in range(6, 40) for _ in range(20)])
    for i, n in enumerate((9, 12, 14, 17)):
        sched.add(f"q{i}", [n])
    batch = sched.next_batch()  # nothing served yet: the queries' kind is not behind, so a query anchors
    assert batch is not None and not batch.bulk
    # every query in one batch (52 real tokens padded to 4 x 17: within the 32-token allowance), no bulk text
    # of their lengths taking their places
    assert sorted(k for k, _ in batch.rows) == ["q0", "q1", "q2", "q3"]
    assert batch.width == 17 and batch.real_tokens == 52
    # the bulk texts are all still there, and run in the following batches
    assert sched.pending_texts == 34 * 20
    assert all(k == "bulk" for b in iter(sched.next_batch, None) for k, _ in b.rows)


@settings(max_examples=60, deadline=None)
@given(
    arrivals=st.lists(st.integers(1, 30), min_size=3, max_size=20),
    workers=st.integers(2, 4),
    order=st.randoms(use_true_random=False),
)
def test_a_worker_stays_free_of_bulk_batches_while_a_query_waits(
    arrivals: list[int], workers: int, order: random.Random
) -> None:
    """The queue's policy, driven directly (no threads): whenever a worker takes a batch while workers - 1 run
    bulk batches and a query is pending, it takes a query's batch; every text runs once; a wide run is the only
    run; the state's counters come back to idle."""
    rule = CostRule(max_batch_tokens=64)
    sched = Scheduler(rule, max_wait_s=1e9, clock=lambda: 0.0)
    lengths = {("bulk", i): 40 for i in range(30)}
    sched.add("bulk", [40] * 30)
    for i, n in enumerate(arrivals):
        sched.add(i, [n])
        lengths[(i, 0)] = n
    state = QueueState(workers=workers, has_wide=True)
    running: list[tuple[ScheduledBatch, bool]] = []
    handed: list[ScheduledBatch] = []
    taken: list[tuple[object, int]] = []
    while True:
        query_waits = any(not sched._is_bulk(k) for k in sched._left)
        reserved = state.bulk_running >= workers - 1
        # Only a free worker asks (decide() takes the batch it returns out of the pending work).
        free = len(running) < workers
        d = decide(state, sched, lambda b: [lengths[(k, r)] for k, r in b.rows]) if free else Decision(Step.WAIT)
        if d.step is Step.RUN:
            assert d.batch is not None
            if query_waits and reserved:
                assert not d.batch.bulk
            if d.wide:
                assert not running and len(d.batch.rows) == 1
            handed.extend(d.hand)
            state = started(state, d.batch, d.wide, len(d.hand))
            running.append((d.batch, d.wide))
            taken.extend(d.batch.rows)
        elif d.step is Step.HANDED:
            batch = handed.pop()
            state = started(state, batch, False, -1)
            running.append((batch, False))
            taken.extend(batch.rows)
        elif running:  # nothing to start (or every worker busy): one run ends, in any order
            batch, wide = running.pop(order.randrange(len(running)))
            state = finished(state, batch, wide)
        else:
            assert d.step is Step.WAIT and sched.pending_texts == 0 and not handed
            break
        assert state.running == len(running) and state.bulk_running == sum(b.bulk for b, _ in running)
        assert state.wide_running == any(w for _, w in running)
    assert sorted(taken, key=str) == sorted(lengths, key=str)  # every text once
    assert state == QueueState(workers=workers, has_wide=True)


def test_drop_removes_only_that_request() -> None:
    sched = Scheduler(CostRule(max_batch_tokens=64))
    sched.add("a", [5, 6, 7])
    sched.add("b", [5, 9])
    assert sched.drop("a") == 3 and sched.drop("a") == 0
    rows = []
    while (batch := sched.next_batch()) is not None:
        rows.extend(batch.rows)
    assert sorted(rows) == [("b", 0), ("b", 1)]


def _expected(backend: FakeBackend, ids: list[np.ndarray]) -> np.ndarray:
    """Each text alone, one batch of one: the reference for any batching."""
    out = []
    for x in ids:
        req = run_inline(Submission([x], SPEC.dim), backend, SPEC, CostRule(max_batch_tokens=1))
        out.append(vectors_from_sums(req.sums, req.weights)[0])
    return np.stack(out)


@settings(max_examples=25, deadline=None)
@given(requests=st.lists(st.lists(st.integers(1, 60), min_size=1, max_size=12), min_size=1, max_size=12))
def test_queue_hands_every_request_its_own_rows(requests: list[list[int]]) -> None:
    backend = FakeBackend(dim=SPEC.dim)
    queue = BatchQueue(backend, SPEC, CostRule(max_batch_tokens=512, min_efficiency=0.5))
    try:
        all_ids = [_ids(lengths, salt) for salt, lengths in enumerate(requests)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(lambda ids=ids: queue.submit(ids).future.result(timeout=30)) for ids in all_ids]
            done = [f.result(timeout=60) for f in futures]
        for ids, req in zip(all_ids, done, strict=True):
            np.testing.assert_allclose(vectors_from_sums(req.sums, req.weights), _expected(backend, ids), atol=1e-5)
            stats = req.stats()
            assert stats.texts == len(ids) and stats.tokens == sum(len(x) for x in ids)
            assert stats.padded_tokens >= stats.tokens and stats.batches >= 1
    finally:
        assert queue.close(timeout=10)


def test_queue_full_is_an_overload_with_retry_after_and_recovers() -> None:
    backend = FakeBackend(dim=SPEC.dim, delay_s=0.05)
    queue = BatchQueue(backend, SPEC, CostRule(max_batch_tokens=64), max_queued_texts=8)
    try:
        first = queue.submit(_ids([30] * 8, 0))
        with pytest.raises(QueueFullError) as info:
            queue.submit(_ids([5], 1))
        assert info.value.kind == "overloaded" and info.value.retry_after >= 1
        first.future.result(timeout=10)
        deadline = time.monotonic() + 5
        while queue.queued_texts and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue.submit(_ids([5], 2)).future.result(timeout=10).remaining == 0
    finally:
        queue.close(timeout=10)


def test_cancel_drops_pending_texts_and_counts_them() -> None:
    backend = FakeBackend(dim=SPEC.dim, delay_s=0.05)
    queue = BatchQueue(backend, SPEC, CostRule(max_batch_tokens=32))
    try:
        blocker = queue.submit(_ids([30, 30], 0))  # two batches: keeps the worker busy
        victim = queue.submit(_ids([30] * 20, 1))
        dropped = queue.cancel(victim)
        assert dropped >= 18 and queue.dropped_texts == dropped and victim.future.cancelled()
        blocker.future.result(timeout=10)
        calls = backend.calls
        time.sleep(0.2)
        assert backend.calls == calls  # nothing of the cancelled request ran afterwards
    finally:
        queue.close(timeout=10)


def test_backend_failure_fails_only_that_batch_and_the_worker_lives() -> None:
    backend = FakeBackend(dim=SPEC.dim, fail_on_token=999)
    queue = BatchQueue(backend, SPEC, CostRule(max_batch_tokens=4))  # 1 text per batch
    try:
        bad = queue.submit([np.array([5, 999, 6])])
        with pytest.raises(InternalError, match="token 999"):
            bad.future.result(timeout=10)
        good = queue.submit(_ids([3, 4], 5)).future.result(timeout=10)
        assert good.remaining == 0
    finally:
        queue.close(timeout=10)


def test_close_drains_then_refuses() -> None:
    backend = FakeBackend(dim=SPEC.dim, delay_s=0.01)
    queue = BatchQueue(backend, SPEC, CostRule(max_batch_tokens=16))
    reqs = [queue.submit(_ids([10, 12], i)) for i in range(5)]
    assert queue.close(drain=True, timeout=10)
    assert all(r.future.result(timeout=0).remaining == 0 for r in reqs)
    with pytest.raises(ShuttingDownError):
        queue.submit(_ids([3], 9))


def test_progress_reports_every_text() -> None:
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def progress(done: int, total: int) -> None:
        with lock:
            seen.append((done, total))

    req = Submission(_ids([5] * 10, 0), SPEC.dim, progress=progress)
    run_inline(req, FakeBackend(dim=SPEC.dim), SPEC, CostRule(max_batch_tokens=15))
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == sorted(d for d, _ in seen)


# the single queries' token lengths in the mixed runs: a few distinct lengths, as one-line queries have
_QUERY_LENGTHS = st.lists(st.integers(min_value=4, max_value=40), min_size=1, max_size=8)


def _mixed_run(share: float, single_lengths: list[int], batches: int) -> tuple[float, dict[str, int], int]:
    """One bulk request of 60-token texts while single queries keep the small kind's demand above its share
    (topped up to 1,024 pending tokens before every batch). Returns the bulk request's share of the tokens
    served, the longest run of batches each request waited while pending, and how many batches bulk got."""
    budget = 512
    sched = Scheduler(CostRule(max_batch_tokens=budget), max_wait_s=1e9, clock=lambda: 0.0, bulk_share=share)
    sched.add("bulk", [60] * 5000)
    lengths: dict[str, int] = {}
    waiting: dict[str, int] = {"bulk": 0}  # request -> batches since it arrived or was last served
    worst: dict[str, int] = {}
    tokens = {"bulk": 0, "small": 0}
    bulk_batches = n = 0
    for _ in range(batches):
        while sum(lengths[k] for k in waiting if k != "bulk") < 2 * budget:
            key = f"q{n}"
            lengths[key] = single_lengths[n % len(single_lengths)]
            sched.add(key, [lengths[key]])
            waiting[key] = 0
            n += 1
        batch = sched.next_batch()
        assert batch is not None
        got = {k for k, _ in batch.rows}
        for k, _ in batch.rows:
            tokens["bulk" if k == "bulk" else "small"] += 60 if k == "bulk" else lengths[k]
        bulk_batches += "bulk" in got
        for k in list(waiting):
            worst[k] = max(worst.get(k, 0), waiting[k])
            if k not in got:
                waiting[k] += 1
            elif k == "bulk":
                waiting[k] = 0
            else:
                del waiting[k]
    return tokens["bulk"] / (tokens["bulk"] + tokens["small"]), worst, bulk_batches


@settings(max_examples=25, deadline=None)
@given(
    share=st.floats(min_value=0.1, max_value=0.9),
    single_lengths=_QUERY_LENGTHS,
)
def test_bulk_share_converges_to_the_configured_ratio(share: float, single_lengths: list[int]) -> None:
    frac, _, _ = _mixed_run(share, single_lengths, 400)
    # Both kinds want more than their share, so each batch goes to the kind behind: the ratio follows the option.
    assert abs(frac - share) <= 0.05, (share, frac)


@settings(max_examples=25, deadline=None)
@given(
    share=st.floats(min_value=0.05, max_value=0.95),
    single_lengths=_QUERY_LENGTHS,
)
def test_no_request_waits_more_than_a_bounded_number_of_batches(share: float, single_lengths: list[int]) -> None:
    _, worst, bulk_batches = _mixed_run(share, single_lengths, 300)
    # Queries go in arrival order: one waits for the queries ahead of it (at most 2 x 512 tokens of them, so at
    # most ceil(1024 / shortest) / per-batch batches of queries) and the bulk turns between those; bulk waits at
    # most for the query turns that its share allows between two of its own.
    # A batch anchored on the oldest query fills with the nearest lengths, which can be newer queries' texts, so
    # a query of another length can be passed over by one more batch of queries (+2, not +1; hypothesis found
    # share 0.94 with lengths 7, 8, 9 waiting 65 batches against the +1 bound's 56).
    per_batch = max(1, 512 // max(single_lengths))
    query_batches = -(-1024 // min(single_lengths)) // per_batch + 2
    bulk_turns = -(-share // (1 - share)) + 2
    bound = int(query_batches * (bulk_turns + 1) + 2)
    assert max(v for k, v in worst.items() if k != "bulk") <= bound, (share, worst, bound)
    # a bulk batch holds up to 512 real tokens; a batch of queries at least (512 // longest) of them, each at
    # least the shortest query's tokens (padding is not counted in the shares)
    query_turns = (1 - share) / share * 512 / ((512 // max(single_lengths)) * min(single_lengths))
    assert worst["bulk"] <= int(query_turns) + 3, (share, worst["bulk"])
    assert bulk_batches > 0


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=24).map(sorted),
    parts=st.integers(1, 4),
    pad=st.sampled_from([1, 8]),
)
def test_split_batch_cuts_consecutive_even_runs(lengths: list[int], parts: int, pad: int) -> None:
    """A batch split for idle workers: every row once, in order, at most `parts` runs, each padded to its own
    longest text, and no cut into as many consecutive runs has a smaller largest run."""
    rule = CostRule(max_batch_tokens=100_000, pad_multiple=pad)
    rows = tuple(("r", i) for i in range(len(lengths)))
    batch = ScheduledBatch(rows=rows, width=rule.width(lengths[-1]), real_tokens=sum(lengths))
    runs = split_batch(batch, lengths, parts, rule)
    assert len(runs) <= min(parts, len(lengths))
    assert tuple(r for run in runs for r in run.rows) == rows
    costs, start = [], 0
    for run in runs:
        own = lengths[start : start + len(run.rows)]
        assert run.width == rule.width(max(own)) and run.real_tokens == sum(own) and run.rows
        costs.append(run.padded_tokens)
        start += len(run.rows)

    def best(i: int, k: int) -> int:  # the smallest largest run over every cut of lengths[i:] into <= k runs
        if i == len(lengths):
            return 0
        if k == 1:
            return (len(lengths) - i) * rule.width(lengths[-1])
        return min(max((j - i) * rule.width(lengths[j - 1]), best(j, k - 1)) for j in range(i + 1, len(lengths) + 1))

    assert max(costs) == best(0, min(parts, len(lengths)))


class _Recording(FakeBackend):
    """Notes how many runs overlap in time, and which backend ran each."""

    def __init__(self, name: str, log: list[str], delay_s: float) -> None:
        super().__init__(dim=SPEC.dim, delay_s=delay_s)
        self.name, self.log, self.running, self.most = name, log, 0, 0

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.log.append(f"{self.name}:{feeds['input_ids'].shape[0]}")
        try:
            return super().run(feeds)
        finally:
            with self._lock:
                self.running -= 1


def test_a_lone_large_request_runs_on_every_worker() -> None:
    """One request of many batches, nothing else queued: both workers run its batches side by side (submit
    wakes one worker; the one that takes a batch and leaves some wakes the next)."""
    log: list[str] = []
    narrow = _Recording("narrow", log, delay_s=0.02)
    queue = BatchQueue(narrow, SPEC, CostRule(max_batch_tokens=64), workers=2)
    try:
        ids = _ids([30] * 24, 1)
        done = queue.submit(ids).future.result(timeout=30)
        np.testing.assert_allclose(
            vectors_from_sums(done.sums, done.weights), _expected(FakeBackend(dim=SPEC.dim), ids), atol=1e-5
        )
    finally:
        assert queue.close(timeout=10)
    assert narrow.most == 2


def test_idle_workers_split_the_only_batch_and_a_lone_text_runs_wide() -> None:
    log: list[str] = []
    narrow, wide = _Recording("narrow", log, delay_s=0.05), _Recording("wide", log, delay_s=0.0)
    queue = BatchQueue(narrow, SPEC, CostRule(max_batch_tokens=4096), workers=2, wide=wide)
    try:
        one = _ids([7], 2)
        done = queue.submit(one).future.result(timeout=10)
        np.testing.assert_allclose(
            vectors_from_sums(done.sums, done.weights), _expected(FakeBackend(dim=SPEC.dim), one), atol=1e-5
        )
        assert log == ["wide:1"]  # one text, every worker idle: all the threads
        log.clear()
        eight = _ids([5, 6, 7, 8, 9, 10, 11, 12], 3)
        done = queue.submit(eight).future.result(timeout=10)
        np.testing.assert_allclose(
            vectors_from_sums(done.sums, done.weights), _expected(FakeBackend(dim=SPEC.dim), eight), atol=1e-5
        )
        assert sorted(log) == ["narrow:3", "narrow:5"] and narrow.most == 2  # two even runs side by side
        log.clear()
        # while a worker runs, a lone text takes the other worker, not the wide session
        slow = queue.submit(_ids([40] * 8, 4))
        time.sleep(0.01)
        queue.submit(_ids([9], 5)).future.result(timeout=10)
        slow.future.result(timeout=10)
        assert "wide:1" not in log and wide.most == 1
    finally:
        assert queue.close(timeout=10)


class _Threads(FakeBackend):
    """Notes the thread each run ran on, and how many runs (on this or its sibling) overlap."""

    def __init__(self, name: str, log: list[tuple[str, str]], overlap: list[int], delay_s: float) -> None:
        super().__init__(dim=SPEC.dim, delay_s=delay_s)
        self.name, self.log, self.overlap = name, log, overlap  # overlap: [running now, most], shared
        self.started = threading.Event()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.started.set()
        with _OVERLAP_LOCK:
            self.overlap[0] += 1
            self.overlap[1] = max(self.overlap[1], self.overlap[0])
            self.log.append((self.name, threading.current_thread().name))
        try:
            return super().run(feeds)
        finally:
            with _OVERLAP_LOCK:
                self.overlap[0] -= 1


_OVERLAP_LOCK = threading.Lock()
_QUIET_S = 0.05  # past the test's HERE_QUIET_S (0.01) since the last run ended


def test_a_lone_short_text_on_an_idle_queue_runs_in_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """submit(here=True): one short text, nothing queued or running, and no run ended within HERE_QUIET_S -> it
    runs before submit returns, in the caller's thread, on the wide session, and the workers wait for it;
    otherwise it is queued as usual."""
    from e5rt.batching import queue as queue_module

    monkeypatch.setattr(queue_module, "HERE_MAX_S", 10.0)  # the fake's runs are slow on purpose
    log: list[tuple[str, str]] = []
    overlap = [0, 0]
    narrow = _Threads("narrow", log, overlap, delay_s=0.05)
    wide = _Threads("wide", log, overlap, delay_s=0.05)
    batches: list[int] = []
    queue = BatchQueue(
        narrow, SPEC, CostRule(max_batch_tokens=4096), workers=2, wide=wide, on_batch=lambda b: batches.append(b.texts)
    )
    me = threading.current_thread().name
    reference = FakeBackend(dim=SPEC.dim)
    try:
        one = _ids([7], 1)
        first = queue.submit(one, here=True)  # no token rate measured yet: to a worker
        first.future.result(timeout=10)
        assert log == [("wide", "e5rt-batcher-0")] or log == [("wide", "e5rt-batcher-1")]
        log.clear()
        # just after a run ended (a request that waited behind it): to a worker, so what follows is batched
        # instead of run one by one in the caller's thread (a wide window: this thread may be slow to wake)
        monkeypatch.setattr(queue_module, "HERE_QUIET_S", 0.5)
        queue.submit(one, here=True).future.result(timeout=10)
        assert len(log) == 1 and log[0][1] != me, log
        log.clear()
        monkeypatch.setattr(queue_module, "HERE_QUIET_S", 0.01)
        batches.clear()
        time.sleep(_QUIET_S)
        done = queue.submit(one, here=True)
        assert done.future.done() and log == [("wide", me)] and batches == [1]
        np.testing.assert_allclose(vectors_from_sums(done.sums, done.weights), _expected(reference, one), atol=1e-5)
        assert done.stats().batches == 1 and queue.queued_texts == 0
        log.clear()
        # more than one text, or here=False, or a run estimated longer than HERE_MAX_S: queued for the workers
        for ids, here, bound in ((_ids([5, 6], 3), True, 10.0), (_ids([5], 4), False, 10.0), (one, True, 1e-6)):
            monkeypatch.setattr(queue_module, "HERE_MAX_S", bound)
            req = queue.submit(ids, here=here)
            req.future.result(timeout=10)
            assert all(thread != me for _, thread in log), (len(ids), here, bound, log)
            log.clear()
        monkeypatch.setattr(queue_module, "HERE_MAX_S", 10.0)
        # a here-run holds every thread: work submitted meanwhile from another thread waits for it
        overlap[1] = 0
        wide.started.clear()
        time.sleep(_QUIET_S)
        with ThreadPoolExecutor(1) as other:
            later = other.submit(lambda: (wide.started.wait(10), queue.submit(_ids([30], 5)))[1])
            queue.submit(_ids([9], 6), here=True)
            later.result(timeout=10).future.result(timeout=10)
        assert log[0] == ("wide", me) and len(log) == 2 and overlap[1] == 1  # one after the other
        log.clear()
        # while the workers are busy, a lone text is queued, not run in the caller's thread
        busy = queue.submit(_ids([40] * 8, 7))
        time.sleep(0.01)
        waiting = queue.submit(_ids([9], 8), here=True)
        assert not waiting.future.done()
        waiting.future.result(timeout=10)
        busy.future.result(timeout=10)
        assert ("wide", me) not in log and ("narrow", me) not in log
    finally:
        assert queue.close(timeout=10)
    with pytest.raises(ShuttingDownError):
        queue.submit(_ids([3], 9), here=True)
