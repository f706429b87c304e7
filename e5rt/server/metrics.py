"""Prometheus metrics of one server, in a registry of its own (two apps in one process never mix figures).

Work figures carry the served model's name (label ``model``); the queue depth gauges without a label are the sum
over the server's models (what an autoscaler reads per pod), e5rt_model_queue_texts{model} each model's share.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..batching import BatchRecord
from ..core.types import Stats

_MS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._queues: list[tuple[Callable[[], float], Callable[[], float]]] = []
        m = ["model"]
        self.requests = Counter("e5rt_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.texts = Counter("e5rt_texts", "inputs run (texts, pairs)", m, registry=r)
        self.tokens = Counter("e5rt_tokens", "tokens run (real, not padded)", m, registry=r)
        self.dropped = Counter(
            "e5rt_dropped_texts", "queued inputs dropped because their client went away", m, registry=r
        )
        self.queue_texts = Gauge("e5rt_queue_texts", "inputs queued or running, all models", registry=r)
        self.queue_tokens = Gauge("e5rt_queue_tokens", "tokens waiting in the queues, all models", registry=r)
        self.model_queue_texts = Gauge("e5rt_model_queue_texts", "inputs queued or running", m, registry=r)
        self.batch_size = Histogram(
            "e5rt_batch_size", "inputs per batch", m, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r
        )
        self.batch_tokens = Histogram(
            "e5rt_batch_tokens",
            "padded tokens per batch",
            m,
            buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
            registry=r,
        )
        self.padding = Histogram(
            "e5rt_batch_padding_efficiency",
            "real / padded tokens per batch",
            m,
            buckets=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0),
            registry=r,
        )
        self.tokenize = Histogram("e5rt_tokenize_seconds", "tokenization per request", m, buckets=_MS, registry=r)
        self.queue = Histogram("e5rt_queue_seconds", "wait until a request's first batch", m, buckets=_MS, registry=r)
        self.inference = Histogram("e5rt_inference_seconds", "batch run time", m, buckets=_MS, registry=r)
        self.request = Histogram("e5rt_request_seconds", "whole request", ["route"], buckets=_MS, registry=r)

    def bind_queue(self, model: str, texts: Callable[[], float], tokens: Callable[[], float]) -> None:
        """Add a model's queue to the depth gauges."""
        self._queues.append((texts, tokens))
        self.queue_texts.set_function(lambda: sum(t() for t, _ in self._queues))
        self.queue_tokens.set_function(lambda: sum(k() for _, k in self._queues))
        self.model_queue_texts.labels(model).set_function(texts)

    def batches_of(self, model: str) -> Callable[[BatchRecord], None]:
        """The queue's per-batch callback for one model (its label children are looked up once, not per batch)."""
        size, tokens = self.batch_size.labels(model), self.batch_tokens.labels(model)
        padding, inference = self.padding.labels(model), self.inference.labels(model)

        def on_batch(batch: BatchRecord) -> None:
            size.observe(batch.texts)
            tokens.observe(batch.padded_tokens)
            padding.observe(batch.real_tokens / max(batch.padded_tokens, 1))
            inference.observe(batch.seconds)

        return on_batch

    def requests_of(self, model: str) -> Callable[[Stats], None]:
        """The per-request callback for one model: a finished request's figures (label children looked up once)."""
        tokenize, queue = self.tokenize.labels(model), self.queue.labels(model)
        texts, tokens = self.texts.labels(model), self.tokens.labels(model)

        def count(stats: Stats) -> None:
            tokenize.observe(stats.tokenize_ms / 1000.0)
            queue.observe(stats.queue_ms / 1000.0)
            texts.inc(stats.texts)
            tokens.inc(stats.tokens)

        return count

    def render(self) -> bytes:
        return generate_latest(self.registry)
