"""One caller's texts in flight, and the step that runs a scheduled batch and hands each request its rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..core.feeds import build_feeds
from ..core.pool import cls_pool, pool_sum
from ..core.types import Stats
from ..errors import E5rtError, InternalError

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PoolSpec:
    """What the batch step needs to know about the model."""

    dim: int
    pad_id: int
    pooling: str = "mean"  # mean | cls | logits (a cross-encoder's graph output, one row per pair, as it is)
    packed: bool = False
    check_finite: bool = False
    sep_id: int | None = None  # cross-encoders with two segments: token_type_ids from the first [SEP]


class Submission:
    """Token ids of one call, the pooled sums its batches write back by row, and that call's own stats.

    ``future`` resolves to the request itself once every row is filled (or to the error that stopped it).
    """

    __slots__ = (
        "ids",
        "lengths",
        "sums",
        "weights",
        "remaining",
        "future",
        "truncated",
        "tokenize_s",
        "chunks",
        "progress",
        "submitted",
        "first_batch",
        "padded_tokens",
        "batches",
        "inference_s",
        "finished",
        "_lock",
    )

    def __init__(
        self,
        ids: Sequence[np.ndarray],
        dim: int,
        *,
        truncated: int = 0,
        tokenize_s: float = 0.0,
        chunks: int = 0,
        progress: Progress | None = None,
    ) -> None:
        self.ids = list(ids)
        self.lengths = [len(x) for x in self.ids]
        n = len(self.ids)
        self.sums = np.zeros((n, dim), dtype=np.float32)
        self.weights = np.ones(n, dtype=np.float32)
        self.remaining = n
        self.future: Future[Submission] = Future()
        self.truncated = truncated
        self.tokenize_s = tokenize_s
        self.chunks = chunks
        self.progress = progress
        self.submitted = time.perf_counter()
        self.first_batch: float | None = None
        self.padded_tokens = 0
        self.batches = 0
        self.inference_s = 0.0
        self.finished: float | None = None
        self._lock = threading.Lock()
        if n == 0:
            self.finished = self.submitted
            self.future.set_result(self)

    @property
    def tokens(self) -> int:
        return int(sum(self.lengths))

    def stats(self) -> Stats:
        tokens = self.tokens
        padded = self.padded_tokens
        end = self.finished if self.finished is not None else time.perf_counter()
        queue_s = (self.first_batch - self.submitted) if self.first_batch is not None else 0.0
        return Stats(
            texts=len(self.ids),
            tokens=tokens,
            padded_tokens=padded,
            padding_efficiency=(tokens / padded) if padded else 1.0,
            batches=self.batches,
            truncated=self.truncated,
            chunks=self.chunks,
            tokenize_ms=round(self.tokenize_s * 1000.0, 3),
            queue_ms=round(queue_s * 1000.0, 3),
            inference_ms=round(self.inference_s * 1000.0, 3),
            total_ms=round((end - self.submitted + self.tokenize_s) * 1000.0, 3),
        )

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.future.done():
                return
            self.finished = time.perf_counter()
        _settle(self.future.set_exception, exc)

    def cancel(self) -> None:
        """Mark the request abandoned; rows still running are discarded when they arrive."""
        self.future.cancel()

    def _deliver(self, rows: list[int], sums: np.ndarray, weights: np.ndarray, padded: int, started: float) -> None:
        now = time.perf_counter()
        with self._lock:
            if self.future.done():  # cancelled or failed meanwhile: nothing to hand back
                return
            self.sums[rows] = sums  # scattered by row: this is where the input order is restored
            self.weights[rows] = weights
            self.padded_tokens += padded
            self.batches += 1
            self.inference_s += now - started
            if self.first_batch is None or started < self.first_batch:
                self.first_batch = started
            self.remaining -= len(rows)
            done = self.remaining == 0
            if done:
                self.finished = now
        if self.progress is not None:
            self.progress(len(self.ids) - self.remaining, len(self.ids))
        if done:
            _settle(self.future.set_result, self)


def _settle(setter: Callable[[Any], None], value: Any) -> None:
    """Resolve a future unless a cancel won the race (a worker must never die of that)."""
    try:
        setter(value)
    except InvalidStateError:
        pass


def run_batch(backend: Backend, rows: Sequence[tuple[Submission, int]], width: int, spec: PoolSpec) -> float:
    """Run one batch of (request, row) pairs and hand every request its pooled rows; returns the seconds the
    backend took. A failure fails the requests in this batch only, with an E5rtError."""
    started = time.perf_counter()
    ids = [req.ids[row] for req, row in rows]
    try:
        feeds = build_feeds(ids, width, spec.pad_id, backend.input_names, backend.input_types, spec.sep_id)
        hidden = backend.run(feeds)
        if spec.check_finite and not np.isfinite(hidden).all():
            raise FloatingPointError(f"non-finite hidden states in a batch of {len(rows)} texts, width {width}")
        if spec.pooling == "logits":
            sums = np.asarray(hidden, dtype=np.float32).reshape(len(rows), -1)
            weights = np.ones(len(rows), dtype=np.float32)
        elif spec.pooling == "cls":
            sums = cls_pool(hidden)
            weights = np.ones(len(rows), dtype=np.float32)
        else:
            mask: Any = feeds.get("attention_mask")
            if mask is None:
                mask = np.arange(width)[None, :] < np.asarray([len(x) for x in ids])[:, None]
            sums, weights = pool_sum(hidden, mask)
    except Exception as exc:  # noqa: BLE001 - every failure reaches the callers, never the worker loop
        err = (
            exc
            if isinstance(exc, (E5rtError, FloatingPointError))
            else InternalError(
                f"inference failed on a batch of {len(rows)} texts, width {width}: {type(exc).__name__}: {exc}"
            )
        )
        for req in {id(r): r for r, _ in rows}.values():
            req.fail(err)
        return time.perf_counter() - started
    per_request: dict[int, tuple[Submission, list[int], list[int]]] = {}
    for pos, (req, row) in enumerate(rows):
        per_request.setdefault(id(req), (req, [], []))
        per_request[id(req)][1].append(row)
        per_request[id(req)][2].append(pos)
    for req, req_rows, positions in per_request.values():
        own = len(req_rows)
        padded = sum(req.lengths[r] for r in req_rows) if spec.packed else width * own
        req._deliver(req_rows, sums[positions], weights[positions], padded, started)
    return time.perf_counter() - started
