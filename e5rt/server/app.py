"""The HTTP layer: routes parse a body, hand texts to the shared batching queue, and answer.

Tokenization and response encoding run on a small thread pool and inference on the queue's worker thread, so
the event loop only moves bytes: one slow request never blocks the others. A client that disconnects has its
queued texts dropped (counted in e5rt_dropped_texts_total).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..batching import BatchQueue, Submission
from ..config import ServeOptions, flags_of
from ..core.prompts import TextKind
from ..core.tokenize import Direction, Encoded
from ..core.types import EmbedResult, Stats
from ..engine import Embedder, Windows
from .metrics import ServerMetrics
from .openapi import docs_html, openapi_spec
from .protocol import (
    ApiError,
    EmbedCall,
    cut_dimensions,
    decode_json,
    encode_vector,
    openai_body,
    parse_openai,
    parse_similarity,
    parse_tei_embed,
    parse_tokenize,
)

log = logging.getLogger("e5rt.server")
access = logging.getLogger("e5rt.access")
JSON_TYPES = ("application/json", "text/json", "text/plain", "")  # text/plain: curl -d without -H
_INLINE_ROWS = 8  # responses up to this many vectors are encoded on the event loop (a thread hop costs more)


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class Service:
    """The model, its queue and the server's state. Routes only parse, call this, and answer."""

    def __init__(self, loader: Callable[[], Embedder], options: ServeOptions) -> None:
        self.loader = loader
        self.options = options
        self.metrics = ServerMetrics()
        self.pool = ThreadPoolExecutor(options.tokenizer_threads, thread_name_prefix="e5rt-io")
        self.embedder: Embedder | None = None
        self.queue: BatchQueue | None = None
        self.state = "loading"  # loading -> ready -> draining; or failed
        self.error: str | None = None
        self.model_name = options.served_model_name or ""
        self.on_failed: Callable[[], None] | None = None  # the runner stops the server then

    # --- lifecycle ---------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load and warm up the model (in a background thread: /health answers 503 meanwhile)."""
        try:
            emb = self.loader()
            queue = emb.queue(max_queued_texts=self.options.max_concurrent_requests, on_batch=self.metrics.on_batch)
        except Exception as exc:  # noqa: BLE001 - reported on /health and in the log, then the server stops
            self.error = str(exc)
            self.state = "failed"
            log.error("e5rt: error: cannot load the model: %s", exc)
            if self.on_failed is not None:
                self.on_failed()
            return
        self.embedder, self.queue = emb, queue
        self.model_name = self.options.served_model_name or emb.spec.name or "e5rt"
        self.metrics.bind_queue(lambda: queue.queued_texts, lambda: queue.queued_tokens)
        if self.state == "loading":
            self.state = "ready"
            log.info("e5rt: serving %s (%s on %s)", self.model_name, emb.variant, ", ".join(emb.providers))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="e5rt-load", daemon=True)
        thread.start()
        return thread

    def drain(self) -> None:
        """Stop taking new requests (the server finishes those in flight, then calls close())."""
        if self.state in ("loading", "ready"):
            self.state = "draining"

    def close(self) -> None:
        self.drain()
        if self.queue is not None:
            self.queue.close(drain=True, timeout=self.options.shutdown_timeout_s)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- checks ------------------------------------------------------------------------------------------
    def ready(self) -> tuple[Embedder, BatchQueue]:
        if self.state == "ready" and self.embedder is not None and self.queue is not None:
            return self.embedder, self.queue
        why = {"loading": "the model is still loading", "draining": "the server is shutting down"}
        message = why.get(self.state, f"the model failed to load: {self.error}")
        raise ApiError(503, message, code=self.state, headers={"Retry-After": "1"})

    def check_auth(self, request: Request) -> None:
        key = self.options.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key; send 'Authorization: Bearer <key>'",
                code="unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def body(self, request: Request) -> Any:
        """The decoded JSON body, refusing oversized payloads before reading them whole."""
        limit = self.options.payload_limit
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in JSON_TYPES and not ctype.endswith("+json"):
            raise ApiError(415, f"content type {ctype!r} is not JSON; send application/json", code="unsupported_media")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(
                413, f"payload of {declared} bytes exceeds the limit of {limit} bytes", code="payload_too_large"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"payload exceeds the limit of {limit} bytes", code="payload_too_large")
            chunks.append(chunk)
        return decode_json(b"".join(chunks))

    # --- the work ----------------------------------------------------------------------------------------
    async def embed(self, request: Request, call: EmbedCall) -> tuple[np.ndarray, Stats]:
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
                    413,
                    f"input {i} is longer than this model's {emb.spec.max_length} tokens and "
                    "truncation is off; shorten it, send truncate=true, or embed it whole with long_text='chunk'",
                    param="input",
                    code="input_too_long",
                )
            ids, truncated = enc.ids, enc.truncated
        else:
            ids, truncated = self._wrap_tokens(emb, call.token_ids or [], call.truncate, call.direction)
            tokenize_s = 0.0
        result = await self.run(request, ids, truncated, tokenize_s, call.normalize, windows)
        return cut_dimensions(result.embeddings, call.dimensions, call.normalize), result.stats

    async def tokenize(
        self, emb: Embedder, texts: list[str], kind: TextKind, task: str | None, direction: Direction = "right"
    ) -> tuple[Encoded, float]:
        """Prompt and tokenize on the thread pool (tokenizers releases the GIL; the event loop keeps moving)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, emb.tokenize, texts, kind, task, direction)

    async def run(
        self,
        request: Request,
        ids: list[np.ndarray],
        truncated: int,
        tokenize_s: float,
        normalize: bool = True,
        windows: Windows | None = None,
    ) -> EmbedResult:
        """Queue token ids, wait for them (or drop them when the client leaves), and count the request."""
        emb, queue = self.ready()
        work = queue.submit(ids, truncated=truncated, tokenize_s=tokenize_s)
        await self._wait(request, queue, work)
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
        out, cut = [], 0
        for i, row in enumerate(rows):
            if len(row) > window:
                if not truncate:
                    raise ApiError(
                        413,
                        f"input {i} has {len(row)} tokens; this model takes {window} plus its special tokens",
                        param="input",
                        code="input_too_long",
                    )
                row, cut = (row[len(row) - window :] if direction == "left" else row[:window]), cut + 1
            out.append(np.asarray(row, dtype=np.int64))
        return self._check_ids(emb, [emb.tokenizer.wrap(x) for x in out]), cut

    @staticmethod
    def _check_ids(emb: Embedder, rows: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return emb.check_token_ids(rows)
        except OverflowError as exc:
            raise ApiError(422, f"token ids out of range ({exc})", param="input", code="invalid_tokens") from None

    async def _wait(self, request: Request, queue: BatchQueue, work: Submission) -> None:
        """Wait for the work, or drop it when the client disconnects first."""
        done: asyncio.Future[Any] = asyncio.wrap_future(work.future)
        gone: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not done.done():
            dropped = queue.cancel(work)
            self.metrics.dropped.inc(dropped)
            done.cancel()
            raise ClientGone
        done.result()  # raises the batch's error, if any

    async def encode_json(self, payload: Any, rows: int) -> bytes:
        if rows <= _INLINE_ROWS:
            return _dumps(payload)
        return await asyncio.get_running_loop().run_in_executor(self.pool, _dumps, payload)


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _timing_headers(stats: Stats) -> dict[str, str]:
    return {
        "x-e5rt-texts": str(stats.texts),
        "x-e5rt-tokens": str(stats.tokens),
        "x-e5rt-tokenize-ms": f"{stats.tokenize_ms:.3f}",
        "x-e5rt-queue-ms": f"{stats.queue_ms:.3f}",
        "x-e5rt-inference-ms": f"{stats.inference_ms:.3f}",
    }


Handler = Callable[[Request, dict[str, Any]], Awaitable[Response]]


def create_app(service: Service) -> Starlette:
    def endpoint(route: str, fn: Handler, auth: bool = True) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            t0 = time.perf_counter()
            info: dict[str, Any] = {"texts": 0, "tokens": 0}
            try:
                if auth:
                    service.check_auth(request)
                response = await fn(request, info)
            except ClientGone:
                response = Response(status_code=499)
            except Exception as exc:  # noqa: BLE001 - every failure becomes one JSON error, never a traceback
                api = ApiError.from_exception(exc)
                if api.status >= 500 and not isinstance(exc, ApiError):
                    log.exception("e5rt: %s failed", route)
                response = JSONResponse(api.body(), status_code=api.status, headers=api.headers)
            elapsed = time.perf_counter() - t0
            response.headers["x-e5rt-total-ms"] = f"{elapsed * 1000:.3f}"
            service.metrics.requests.labels(route, str(response.status_code)).inc()
            service.metrics.request.labels(route).observe(elapsed)
            # Never the text itself: only what and how much.
            access.info(
                "%s %s %d texts=%d tokens=%d ms=%.1f",
                request.method,
                route,
                response.status_code,
                info["texts"],
                info["tokens"],
                elapsed * 1000,
            )
            return response

        return handle

    async def openai_embeddings(request: Request, info: dict[str, Any]) -> Response:
        emb, _ = service.ready()
        body = await service.body(request)
        opts = service.options
        call = parse_openai(body, emb.dim, opts.max_client_batch_size, opts.auto_truncate, opts.accept_token_ids)
        vectors, stats = await service.embed(request, call)
        info.update(texts=stats.texts, tokens=stats.tokens)
        payload = openai_body(vectors, call.encoding, service.model_name, stats.tokens)
        raw = await service.encode_json(payload, len(vectors))
        return Response(raw, media_type="application/json", headers=_timing_headers(stats))

    async def tei_embed(request: Request, info: dict[str, Any]) -> Response:
        emb, _ = service.ready()
        body = await service.body(request)
        call = parse_tei_embed(body, emb.dim, service.options.max_client_batch_size, service.options.auto_truncate)
        vectors, stats = await service.embed(request, call)
        info.update(texts=stats.texts, tokens=stats.tokens)
        raw = await service.encode_json([encode_vector(v, "float") for v in vectors], len(vectors))
        return Response(raw, media_type="application/json", headers=_timing_headers(stats))

    async def similarity(request: Request, info: dict[str, Any]) -> Response:
        emb, _ = service.ready()
        call = parse_similarity(await service.body(request), service.options.max_client_batch_size)
        src, s1 = await service.tokenize(emb, [call.source], "query", call.task)
        docs, s2 = await service.tokenize(emb, call.sentences, call.kind, call.task)
        result = await service.run(request, src.ids + docs.ids, src.truncated + docs.truncated, s1 + s2)
        vecs = result.embeddings
        info.update(texts=result.stats.texts, tokens=result.stats.tokens)
        scores = (vecs[1:] @ vecs[0]).astype(float).tolist()
        return JSONResponse(scores, headers=_timing_headers(result.stats))

    async def tokenize(request: Request, info: dict[str, Any]) -> Response:
        emb, _ = service.ready()
        texts, specials, kind, task = parse_tokenize(await service.body(request), service.options.max_client_batch_size)
        if kind is not None:
            from ..core.prompts import format_texts

            texts = format_texts(texts, emb.spec.prompt_scheme, kind, task)
        out = await asyncio.get_running_loop().run_in_executor(service.pool, emb.tokenizer.tokens, texts, specials)
        info.update(texts=len(texts), tokens=sum(len(x) for x in out))
        return JSONResponse(out)

    async def health(request: Request, info: dict[str, Any]) -> Response:
        ok = service.state == "ready"
        body: dict[str, Any] = {"status": "ok" if ok else service.state}
        if service.error:
            body["error"] = service.error
        return JSONResponse(body, status_code=200 if ok else 503)

    async def model_info(request: Request, info: dict[str, Any]) -> Response:
        emb, _ = service.ready()
        return JSONResponse(server_info(service, emb))

    async def metrics(request: Request, info: dict[str, Any]) -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    async def models(request: Request, info: dict[str, Any]) -> Response:
        service.ready()
        return JSONResponse(
            {"object": "list", "data": [{"id": service.model_name, "object": "model", "owned_by": "e5rt"}]}
        )

    async def spec(request: Request, info: dict[str, Any]) -> Response:
        return JSONResponse(openapi_spec(__version__))

    async def docs(request: Request, info: dict[str, Any]) -> Response:
        return HTMLResponse(docs_html(openapi_spec(__version__)))

    routes = [
        Route("/v1/embeddings", endpoint("/v1/embeddings", openai_embeddings), methods=["POST"]),
        Route("/embeddings", endpoint("/embeddings", openai_embeddings), methods=["POST"]),
        Route("/embed", endpoint("/embed", tei_embed), methods=["POST"]),
        # TEI answers POST / by the model's task (huggingface_hub's InferenceClient(model=URL) posts there).
        Route("/", endpoint("/", tei_embed), methods=["POST"]),
        Route("/similarity", endpoint("/similarity", similarity), methods=["POST"]),
        Route("/tokenize", endpoint("/tokenize", tokenize), methods=["POST"]),
        Route("/v1/models", endpoint("/v1/models", models), methods=["GET"]),
        Route("/info", endpoint("/info", model_info), methods=["GET"]),
        Route("/health", endpoint("/health", health, auth=False), methods=["GET"]),
        Route("/metrics", endpoint("/metrics", metrics, auth=False), methods=["GET"]),
        Route("/openapi.json", endpoint("/openapi.json", spec, auth=False), methods=["GET"]),
        Route("/docs", endpoint("/docs", docs, auth=False), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.service = service
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse(ApiError(404, f"no route {request.url.path}; see /docs", code="not_found").body(), 404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    body = ApiError(405, f"{request.method} is not allowed on {request.url.path}; see /docs", code="bad_method")
    return JSONResponse(body.body(), 405)


def server_info(service: Service, emb: Embedder) -> dict[str, Any]:
    opts = service.options
    return {
        "model": service.model_name,
        "version": __version__,
        "dim": emb.dim,
        "max_length": emb.spec.max_length,
        "pooling": emb.spec.pooling,
        "prompt_scheme": emb.spec.prompt_scheme,
        "variant": emb.variant,
        "providers": list(emb.providers),
        "batch_invariant": emb.batch_invariant,
        "batching": asdict(emb.batching),
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
