"""The serving core: one model, its queue, its lifecycle, and the one way a request goes through it.

A route hands call() the task's own prepare step (Embedder.prepare, Reranker.prepare, Classifier.prepare, ...);
the core shapes the request with it (on a small thread pool, or on the event loop for a few short inputs), queues
the token ids, waits (dropping them if the caller goes away), and calls the request's finish step. The core knows
no task and no HTTP: it raises e5rt errors, and the HTTP adapter (e5rt.server.app) turns them into statuses.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from enum import Enum
from typing import Any, TypeVar

from .. import __version__
from ..batching import BatchQueue, Submission
from ..config import ServeOptions, flags_of
from ..core.types import Stats
from ..errors import NotReadyError, WrongTaskError
from ..manifest import ModelKind
from ..model import ModelBase, Prepared
from .metrics import ServerMetrics

log = logging.getLogger("e5rt.server")
Gone = Callable[[], Awaitable[None]]  # completes when the caller has gone away (the HTTP client disconnected)
R = TypeVar("R")


class Lifecycle(Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class ClientGone(Exception):
    """The caller went away before its answer was ready."""


# Requests up to this size are shaped on the event loop: a one-line query takes ~30 us there, while the hop to the
# tokenizer pool and back (two futures, two thread wake-ups) cost the loop more than that at 64 clients.
_INLINE_INPUTS = 4
_INLINE_CHARS = 1024


class InferenceService:
    """One served model: its loader, queue and state. The HTTP adapter parses, calls call(), and answers."""

    def __init__(
        self,
        loader: Callable[[], ModelBase],
        options: ServeOptions,
        *,
        kind: ModelKind | None = None,
        name: str | None = None,
        metrics: ServerMetrics | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        """kind and name, when the caller knows them from the manifest, let requests be routed while the model
        loads; metrics and pool are shared by the models of one server (e5rt.server.models)."""
        self.loader = loader
        self.options = options
        self.metrics = metrics or ServerMetrics()
        self._own_pool = pool is None
        self.pool = pool or ThreadPoolExecutor(options.tokenizer_threads, thread_name_prefix="e5rt-io")
        self.declared_kind = kind
        self.model: ModelBase | None = None
        self.queue: BatchQueue | None = None
        self.state = Lifecycle.LOADING  # -> READY -> DRAINING; or FAILED
        self._drain_started: float | None = None  # monotonic time of the SIGTERM: the shutdown timeout counts from it
        self.error: str | None = None
        self.model_name = options.served_model_name or name or ""
        self.on_failed: Callable[[], None] | None = None  # the runner stops the server then
        self._count: Callable[[Stats], None] = lambda stats: None  # the model's request metrics, once loaded

    # --- lifecycle ---------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load and warm up the model (in a background thread: /health answers 503 meanwhile)."""
        try:
            model = self.loader()
            opts = self.options
            name = opts.served_model_name or self.model_name or model.name or "e5rt"
            queue = model.queue(
                max_queued_texts=opts.max_concurrent_requests,
                workers=opts.workers,
                on_batch=self.metrics.batches_of(name),
                bulk_share=opts.bulk_share,
            )
        except Exception as exc:  # noqa: BLE001 - reported on /health and in the log, then the server stops
            self.error = str(exc)
            self.state = Lifecycle.FAILED
            log.error("e5rt: error: cannot load the model: %s", exc)
            if self.on_failed is not None:
                self.on_failed()
            return
        self.model, self.queue, self.model_name = model, queue, name
        self._count = self.metrics.requests_of(name)
        self.metrics.bind_queue(name, lambda: queue.queued_texts, lambda: queue.queued_tokens)
        if self.state is Lifecycle.LOADING:
            self.state = Lifecycle.READY
            log.info("e5rt: serving %s (%s on %s)", name, model.variant, ", ".join(model.providers))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="e5rt-load", daemon=True)
        thread.start()
        return thread

    def drain(self) -> None:
        """Stop taking new requests (the server finishes those in flight, then calls close())."""
        if self.state in (Lifecycle.LOADING, Lifecycle.READY):
            self.state = Lifecycle.DRAINING
            self._drain_started = time.monotonic()

    def close(self) -> None:
        """Finish the queued work within what is left of the shutdown timeout (counted from the drain: the HTTP
        server has spent part of it on requests in flight), then drop the rest, so a stop never outlives the
        timeout by more than the batches running (a supervisor's SIGKILL would cut them anyway)."""
        self.drain()
        if self.queue is not None:
            started = self._drain_started if self._drain_started is not None else time.monotonic()
            left = max(0.0, self.options.shutdown_timeout_s - (time.monotonic() - started))
            if not self.queue.close(drain=True, timeout=left):
                log.warning("e5rt: the shutdown timeout (%.0f s) passed with work queued; dropping it", left)
                self.queue.close(drain=False, timeout=30.0)
        if self._own_pool:
            self.pool.shutdown(wait=False, cancel_futures=True)

    # --- checks ------------------------------------------------------------------------------------------
    @property
    def kind(self) -> ModelKind:
        """What the served model does (as declared while it loads; an embedder if not declared)."""
        if self.model is not None:
            return self.model.kind
        return self.declared_kind or ModelKind.EMBED

    def ready(self, kind: ModelKind | None = ModelKind.EMBED) -> ModelBase:
        """The loaded model, or the error that says why not (still loading, draining, failed, or a request of
        another task: embeddings from a reranker, scores from an embedder)."""
        if self.state is Lifecycle.READY and self.model is not None:
            if kind is not None and kind is not self.kind:
                raise WrongTaskError(self.kind, f"this server serves {self.kind.words} ({self.model_name})")
            return self.model
        if self.state is Lifecycle.LOADING:
            raise NotReadyError("the model is still loading", code="loading")
        if self.state is Lifecycle.DRAINING:
            raise NotReadyError("the server is shutting down", code="draining")
        raise NotReadyError(f"the model failed to load: {self.error}", code="failed")

    # --- the work ----------------------------------------------------------------------------------------
    async def call(
        self,
        kind: ModelKind,
        prepare: Callable[[Any], Prepared[R]],
        gone: Gone,
        inputs: int,
        chars: int = 0,
    ) -> tuple[R, Stats]:
        """Shape a request with the task's prepare step, queue it, wait, and finish it: the one road of every
        request. inputs and chars size it: the queue's room is checked before tokenizing, and a few short
        inputs are shaped on the event loop (cheaper there than the hop to the pool)."""
        model = self.ready(kind)
        queue = self.queue
        assert queue is not None
        # A full queue refuses before the inputs are tokenized (submit checks again: others may come first).
        queue.check_room(inputs)
        inline = inputs <= _INLINE_INPUTS and chars <= _INLINE_CHARS
        if inline:
            work = prepare(model)
        else:
            work = await asyncio.get_running_loop().run_in_executor(self.pool, prepare, model)
        # A lone short text on a queue that is idle, and was a moment ago (HERE_QUIET_S), runs right here, on
        # the event loop's thread: nothing else is running or waiting, so the loop has nothing to do meanwhile
        # but read new requests, which would wait for this run anyway (it holds every thread); those that did
        # are queued and batched afterwards (BatchQueue._run_here), not run here one by one.
        submission = model.submit(queue, work, here=inline)
        if not submission.future.done():
            await self._wait(gone, queue, submission)
        result, stats = work.finish(submission)
        self._count(stats)
        return result, stats

    async def off_loop(self, fn: Callable[[], R]) -> R:
        """Run fn on the service's thread pool (tokenizing for /tokenize, encoding a large response)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    async def _wait(self, gone: Gone, queue: BatchQueue, work: Submission) -> None:
        """Wait for the work; a request larger than one batch is dropped when its client disconnects first."""
        done: asyncio.Future[Any] = asyncio.wrap_future(work.future)
        if sum(work.lengths) <= queue.rule.max_batch_tokens:
            # A request that fits in one batch is not watched for its client leaving: that costs at most one
            # batch's work, and the watcher (a task per request, asyncio.wait, the cancel) is loop time that 64
            # query clients feel (interleaved c64 runs with 2 workers: 389-396 texts/s without it, 366-400 with).
            await done
            return
        left: asyncio.Future[Any] = asyncio.ensure_future(gone())
        try:
            await asyncio.wait({done, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
        if not done.done():
            dropped = queue.cancel(work)
            self.metrics.dropped.labels(self.model_name).inc(dropped)
            done.cancel()
            raise ClientGone
        done.result()  # raises the batch's error, if any


def server_info(service: InferenceService, model: ModelBase) -> dict[str, Any]:
    opts = service.options
    queue = service.queue
    info: dict[str, Any] = {
        "model": service.model_name,
        "task": service.kind.value,
        "version": __version__,
        "dim": model.dim,
        "max_length": model.spec.max_length,
        "pooling": model.spec.pooling,
        "prompt_scheme": model.spec.prompt_scheme,
        "variant": model.variant,
        "providers": list(model.providers),
        "batch_invariant": model.batch_invariant,
        "batching": asdict(model.batching),
        # batches run at once, and the ONNX Runtime threads of each (a lone one-input batch: all of them)
        "workers": queue.workers if queue is not None else opts.workers,
        "threads_per_worker": queue.backend.threads if queue is not None else None,
        "dimensions": (
            "'dimensions' keeps the first N values and re-normalizes. E5 models were not trained for this "
            "(no Matryoshka loss), so shortened vectors lose retrieval quality quickly; measure before using it."
        ),
        # The options declared as limits (config.Flag(limit=True)), and whether a key is required.
        "limits": {
            **{name: getattr(opts, name) for name, flag in flags_of(ServeOptions) if flag.limit},
            "auth": opts.api_key is not None,
        },
    }
    labels = getattr(model, "labels", None)
    if labels is not None:
        info["labels"] = list(labels)
    return info
