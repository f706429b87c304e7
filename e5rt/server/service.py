"""The serving core: the model, its queue, tokenizing on a thread pool, submit, wait or cancel, metrics.

No HTTP in here (the HTTP adapter, e5rt.server.app, does auth, body limits, JSON and status codes), so the core
runs and is tested without Starlette. Tokenization runs on a small thread pool (the adapter encodes large
responses there too) and inference on the queue's worker thread, so the event loop only moves bytes. A caller that
goes away has its queued texts dropped (counted in e5rt_dropped_texts_total).
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
from typing import Any

import numpy as np

from .. import __version__
from ..batching import BatchQueue, Submission
from ..config import ServeOptions, flags_of
from ..core.prompts import TextKind, format_texts
from ..core.tokenize import Direction, Encoded, PairTokenizer
from ..core.types import EmbedResult, Stats
from ..engine import Embedder, Windows
from ..errors import InputError
from .metrics import ServerMetrics
from .protocol import ApiError, EmbedCall, RerankCall, SimilarityCall, cut_dimensions

log = logging.getLogger("e5rt.server")
Gone = Callable[[], Awaitable[None]]  # completes when the caller has gone away (the HTTP client disconnected)


class Lifecycle(Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class ClientGone(Exception):
    """The caller went away before its answer was ready."""


# What each task is called and where its requests go, for the errors that send a request to the other task.
TASK_WORDS = {"embed": "an embedding model", "rerank": "a reranker"}
TASK_ROUTES = {"embed": "POST /v1/embeddings or /embed", "rerank": "POST /rerank, /v1/rerank or /v2/rerank"}

# Requests up to this size are tokenized on the event loop: a one-line query takes ~30 us there, while the hop
# to the tokenizer pool and back (two futures, two thread wake-ups) cost the loop more than that at 64 clients.
_INLINE_TEXTS = 4
_INLINE_CHARS = 1024


class InferenceService:
    """The model, its queue and the server's state. The HTTP adapter only parses, calls this, and answers."""

    def __init__(
        self,
        loader: Callable[[], Embedder],
        options: ServeOptions,
        *,
        task: str | None = None,
        name: str | None = None,
        metrics: ServerMetrics | None = None,
        pool: ThreadPoolExecutor | None = None,
        workers: int | None = None,
    ) -> None:
        """task and name, when the caller knows them from the manifest, let requests be routed while the model
        loads; metrics and pool are shared by the models of one server (e5rt.server.models)."""
        self.loader = loader
        self.workers = workers  # batches run at once (None: config.serve_workers decides)
        self.options = options
        self.metrics = metrics or ServerMetrics()
        self._own_pool = pool is None
        self.pool = pool or ThreadPoolExecutor(options.tokenizer_threads, thread_name_prefix="e5rt-io")
        self.declared_task = task
        self.embedder: Embedder | None = None
        self.queue: BatchQueue | None = None
        self.state = Lifecycle.LOADING  # -> READY -> DRAINING; or FAILED
        self._drain_started: float | None = None  # monotonic time of the SIGTERM: the shutdown timeout counts from it
        self.error: str | None = None
        self.model_name = options.served_model_name or name or ""
        self.on_failed: Callable[[], None] | None = None  # the runner stops the server then
        self.pairs: PairTokenizer | None = None  # a reranker's (query, document) tokenizer

    # --- lifecycle ---------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load and warm up the model (in a background thread: /health answers 503 meanwhile)."""
        try:
            emb = self.loader()
            opts = self.options
            manifest = emb.manifest
            if manifest is not None and manifest.task == "rerank" and emb.model_dir is not None:
                self.pairs = PairTokenizer(emb.model_dir / manifest.tokenizer, manifest.max_length)
            queue = emb.queue(
                max_queued_texts=opts.max_concurrent_requests,
                on_batch=self.metrics.on_batch,
                bulk_share=opts.bulk_share,
                workers=self.workers,
            )
        except Exception as exc:  # noqa: BLE001 - reported on /health and in the log, then the server stops
            self.error = str(exc)
            self.state = Lifecycle.FAILED
            log.error("e5rt: error: cannot load the model: %s", exc)
            if self.on_failed is not None:
                self.on_failed()
            return
        self.embedder, self.queue = emb, queue
        self.model_name = self.options.served_model_name or self.model_name or emb.spec.name or "e5rt"
        self.metrics.bind_queue(lambda: queue.queued_texts, lambda: queue.queued_tokens)
        if self.state is Lifecycle.LOADING:
            self.state = Lifecycle.READY
            log.info("e5rt: serving %s (%s on %s)", self.model_name, emb.variant, ", ".join(emb.providers))

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
    def task(self) -> str:
        """embed or rerank: what the served model does (as declared while it loads; embed if not declared)."""
        if self.pairs is not None:
            return "rerank"
        return self.declared_task or "embed"

    def ready(self, task: str | None = "embed") -> tuple[Embedder, BatchQueue]:
        """The model and its queue, or the error that says why not (still loading, draining, failed, or a
        route of the other task: embeddings from a reranker, scores from an embedder)."""
        if self.state is Lifecycle.READY and self.embedder is not None and self.queue is not None:
            if task is not None and task != self.task:
                raise ApiError(
                    "not_found",
                    f"this server serves {TASK_WORDS[self.task]} ({self.model_name}); use {TASK_ROUTES[self.task]}",
                    code="wrong_model_task",
                )
            return self.embedder, self.queue
        why = {Lifecycle.LOADING: "the model is still loading", Lifecycle.DRAINING: "the server is shutting down"}
        message = why.get(self.state, f"the model failed to load: {self.error}")
        raise ApiError("unavailable", message, code=self.state.value, headers={"Retry-After": "1"})

    # --- the work ----------------------------------------------------------------------------------------
    async def embed(self, call: EmbedCall, gone: Gone) -> tuple[np.ndarray, Stats]:
        emb, queue = self.ready()
        # A full queue refuses before the texts are tokenized (submit checks again: others may come first).
        queue.check_room(len(call.texts if call.texts is not None else call.token_ids or []))
        loop = asyncio.get_running_loop()
        windows: Windows | None = None
        if call.long_text == "chunk":
            # Every window of every text is embedded; the texts' vectors are their token-weighted means.
            if call.texts is not None:
                windows = await loop.run_in_executor(
                    self.pool, emb.windows, call.texts, call.kind, call.task, call.overlap
                )
            else:
                contents = [np.asarray(row, dtype=np.int64) for row in call.token_ids or []]
                windows = emb.cut_windows(contents, call.overlap)
                self._check_ids(emb, windows.pieces)
            ids, truncated, tokenize_s = windows.pieces, 0, windows.tokenize_s
        elif call.texts is not None:
            enc, tokenize_s = await self.tokenize(emb, call.texts, call.kind, call.task, call.direction)
            if enc.truncated and not call.truncate:
                i = enc.truncated_indices[0]
                raise ApiError(
                    "too_large",
                    f"input {i} is longer than this model's {emb.spec.max_length} tokens and "
                    "truncation is off; shorten it, send truncate=true, or embed it whole with long_text='chunk'",
                    param="input",
                    code="input_too_long",
                )
            ids, truncated = enc.ids, enc.truncated
        else:
            ids, truncated = self._wrap_tokens(emb, call.token_ids or [], call.truncate, call.direction)
            tokenize_s = 0.0
        result = await self.run(gone, ids, truncated, tokenize_s, call.normalize, windows)
        return cut_dimensions(result.embeddings, call.dimensions, call.normalize), result.stats

    async def tokenize(
        self, emb: Embedder, texts: list[str], kind: TextKind, task: str | None, direction: Direction = "right"
    ) -> tuple[Encoded, float]:
        """Prompt and tokenize on the thread pool (tokenizers releases the GIL; the event loop keeps moving);
        a request of a few short texts on the event loop itself, where it takes less than the hop would."""
        if len(texts) <= _INLINE_TEXTS and sum(map(len, texts)) <= _INLINE_CHARS:
            return emb.tokenize(texts, kind, task, direction)
        return await asyncio.get_running_loop().run_in_executor(self.pool, emb.tokenize, texts, kind, task, direction)

    async def run(
        self,
        gone: Gone,
        ids: list[np.ndarray],
        truncated: int,
        tokenize_s: float,
        normalize: bool = True,
        windows: Windows | None = None,
    ) -> EmbedResult:
        """Queue token ids, wait for them (or drop them when the client leaves), and count the request."""
        emb, queue = self.ready(None)
        work = queue.submit(ids, truncated=truncated, tokenize_s=tokenize_s)
        await self._wait(gone, queue, work)
        result = emb.result(work, normalize) if windows is None else emb.combine(work, windows, normalize)
        stats = result.stats
        self.metrics.tokenize.observe(stats.tokenize_ms / 1000.0)
        self.metrics.queue.observe(stats.queue_ms / 1000.0)
        self.metrics.texts.inc(stats.texts)
        self.metrics.tokens.inc(stats.tokens)
        return result

    def _wrap_tokens(
        self, emb: Embedder, rows: list[list[int]], truncate: bool, direction: Direction = "right"
    ) -> tuple[list[np.ndarray], int]:
        """Token ids from the client are the text: add the model's special tokens around them."""
        window = emb.spec.max_length - emb.tokenizer.n_special
        if not truncate:
            i = next((i for i, row in enumerate(rows) if len(row) > window), None)
            if i is not None:
                raise ApiError(
                    "too_large",
                    f"input {i} has {len(rows[i])} tokens; this model takes {window} plus its special tokens",
                    param="input",
                    code="input_too_long",
                )
        enc = emb.tokenizer.fit([np.asarray(row, dtype=np.int64) for row in rows], direction)
        return self._check_ids(emb, enc.ids), enc.truncated

    @staticmethod
    def _check_ids(emb: Embedder, rows: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return emb.check_token_ids(rows)
        except OverflowError as exc:
            raise ApiError(
                "invalid_input", f"token ids out of range ({exc})", param="input", code="invalid_tokens"
            ) from None

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
            self.metrics.dropped.inc(dropped)
            done.cancel()
            raise ClientGone
        done.result()  # raises the batch's error, if any

    async def rerank(self, call: RerankCall, gone: Gone) -> tuple[np.ndarray, Stats]:
        """The logits of (query, document) pairs in input order; the document is cut to max length (or, with
        truncate off, a pair that does not fit is refused)."""
        emb, queue = self.ready("rerank")
        pairs = self.pairs
        assert pairs is not None
        queue.check_room(len(call.documents))
        loop = asyncio.get_running_loop()

        def encode() -> tuple[Encoded, float]:
            t0 = time.perf_counter()
            return pairs.encode([call.query] * len(call.documents), call.documents), time.perf_counter() - t0

        try:
            enc, tokenize_s = await loop.run_in_executor(self.pool, encode)
        except InputError as exc:  # the query alone leaves no room for a document
            raise ApiError("too_large", str(exc), param="query", code="input_too_long") from None
        if enc.truncated and not call.truncate:
            i = enc.truncated_indices[0]
            raise ApiError(
                "too_large",
                f"document {i} with the query is longer than this model's {emb.spec.max_length} tokens and "
                "truncation is off; shorten it or send truncate=true (the document's end is cut, never the query)",
                param="texts",
                code="input_too_long",
            )
        result = await self.run(gone, enc.ids, enc.truncated, tokenize_s, normalize=False)
        return result.embeddings[:, 0], result.stats

    async def similarity(self, call: SimilarityCall, gone: Gone) -> tuple[list[float], Stats]:
        """Cosine of the source sentence (embedded as a query) against each sentence."""
        emb, _ = self.ready()
        src, s1 = await self.tokenize(emb, [call.source], "query", call.task)
        docs, s2 = await self.tokenize(emb, call.sentences, call.kind, call.task)
        result = await self.run(gone, src.ids + docs.ids, src.truncated + docs.truncated, s1 + s2)
        vecs = result.embeddings
        return (vecs[1:] @ vecs[0]).astype(float).tolist(), result.stats

    async def tokens(
        self, texts: list[str], specials: bool, kind: TextKind | None, task: str | None
    ) -> list[list[dict[str, Any]]]:
        """Every token of every text (prompted when a kind is given), on the thread pool."""
        emb, _ = self.ready(None)
        if kind is not None:
            texts = format_texts(texts, emb.spec.prompt_scheme, kind, task)
        return await asyncio.get_running_loop().run_in_executor(self.pool, emb.tokenizer.tokens, texts, specials)


def server_info(service: InferenceService, emb: Embedder) -> dict[str, Any]:
    opts = service.options
    return {
        "model": service.model_name,
        "task": service.task,
        "version": __version__,
        "dim": emb.dim,
        "max_length": emb.spec.max_length,
        "pooling": emb.spec.pooling,
        "prompt_scheme": emb.spec.prompt_scheme,
        "variant": emb.variant,
        "providers": list(emb.providers),
        "batch_invariant": emb.batch_invariant,
        "batching": asdict(emb.batching),
        # batches run at once, and the ONNX Runtime threads of each (a lone one-text batch: all of them)
        "workers": queue.workers if (queue := service.queue) is not None else service.workers,
        "threads_per_worker": getattr(queue.backend, "threads", None) if queue is not None else None,
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
