"""The serving queue's policy as one function: from the queue's state and its pending work to the next runs.

BatchQueue (the thread shell) holds a QueueState, asks decide() what a free worker does, and applies the answer
with started() and finished(); nothing else in it chooses. The pending work is the Scheduler (its fair share by
tokens between small and bulk requests picks each batch's anchor); decide() adds what depends on the workers:

- a worker stays free of bulk batches while queries wait (small_first once workers - 1 run bulk batches);
- the only work with every worker idle: one text runs on the wide session (all threads), several are cut into
  even runs side by side (split_batch), handed to the idle workers;
- a wide run has every thread, so the others wait for it.

The property tests drive decide() / started() / finished() directly, without threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from .scheduler import ScheduledBatch, Scheduler, split_batch


@dataclass(frozen=True)
class QueueState:
    """What the policy reads besides the pending work."""

    workers: int
    has_wide: bool = False  # a wide session (every thread) exists for a lone text
    running: int = 0  # batches being run
    bulk_running: int = 0  # of those, anchored by a bulk request
    wide_running: bool = False  # a batch runs on the wide session: the other workers wait for it
    handed: int = 0  # runs of a split batch waiting for idle workers
    closed: bool = False


class Step(Enum):
    RUN = "run"  # run `batch` (on the wide session if `wide`); hand `hand` to idle workers; wake `wake` workers
    HANDED = "handed"  # take a run handed over earlier
    WAIT = "wait"  # nothing to run now
    STOP = "stop"  # closed and drained: the worker ends


@dataclass(frozen=True)
class Decision:
    step: Step
    batch: ScheduledBatch | None = None
    wide: bool = False
    hand: tuple[ScheduledBatch, ...] = ()
    wake: int = 0


def decide(state: QueueState, pending: Scheduler, lengths: Callable[[ScheduledBatch], Sequence[int]]) -> Decision:
    """What a free worker does next. Takes the batch it returns out of `pending` (the one thing it changes);
    lengths gives the token count of each row of a batch (to split it evenly)."""
    if state.handed:
        return Decision(Step.HANDED)
    if state.wide_running:
        return Decision(Step.WAIT)
    # With several workers, one always stays free of bulk batches while queries wait: a query then waits for a
    # query batch, not for a bulk batch on every worker. Measured with 2 one-thread workers, 16 query clients and
    # a 2,048-text request (one run each, serve_load.py): the queries' p99 3.49x idle without it, 3.13x with it,
    # while the bulk request kept 97 % of its rate alone.
    reserve = state.workers > 1 and state.bulk_running >= state.workers - 1
    batch = pending.next_batch(small_first=reserve)
    if batch is None:
        return Decision(Step.STOP if state.closed else Step.WAIT)
    if pending.pending_texts:
        # One wake-up per submit: without this, a lone 2,048-text request ran on one worker while the others
        # slept (half its rate with --workers 2).
        return Decision(Step.RUN, batch, wake=1)
    if state.workers > 1 and state.running == 0:
        # The only work, and every worker idle: a single text runs on all the threads (the wide session); several
        # are cut into even runs for the workers side by side (docs/serving.md).
        if len(batch.rows) == 1:
            return Decision(Step.RUN, batch, wide=state.has_wide)  # lone query: ~35 % faster
        first, *rest = split_batch(batch, lengths(batch), state.workers, pending.rule)
        return Decision(Step.RUN, first, hand=tuple(rest), wake=len(rest))
    return Decision(Step.RUN, batch)


def started(state: QueueState, batch: ScheduledBatch, wide: bool, handed: int = 0) -> QueueState:
    """The state once a worker starts `batch` (handed: runs added to, or taken from (-1), the handed list)."""
    return replace(
        state,
        running=state.running + 1,
        bulk_running=state.bulk_running + batch.bulk,
        wide_running=wide,  # only the only run is ever wide: decide() waits while one runs
        handed=state.handed + handed,
    )


def finished(state: QueueState, batch: ScheduledBatch, wide: bool) -> QueueState:
    """The state once a worker has run `batch`."""
    return replace(
        state,
        running=state.running - 1,
        bulk_running=state.bulk_running - batch.bulk,
        wide_running=False if wide else state.wide_running,
    )
