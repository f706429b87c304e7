"""Prometheus metrics of one server, in a registry of its own (two apps in one process never mix figures)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..batching import BatchRecord

_MS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._queues: list[tuple[Callable[[], float], Callable[[], float]]] = []
        self.requests = Counter("e5rt_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.texts = Counter("e5rt_texts", "texts embedded", registry=r)
        self.tokens = Counter("e5rt_tokens", "tokens embedded (real, not padded)", registry=r)
        self.dropped = Counter("e5rt_dropped_texts", "queued texts dropped because their client went away", registry=r)
        self.queue_texts = Gauge("e5rt_queue_texts", "texts queued or running", registry=r)
        self.queue_tokens = Gauge("e5rt_queue_tokens", "tokens waiting in the queue", registry=r)
        self.batch_size = Histogram(
            "e5rt_batch_size", "texts per batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r
        )
        self.batch_tokens = Histogram(
            "e5rt_batch_tokens",
            "padded tokens per batch",
            buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
            registry=r,
        )
        self.padding = Histogram(
            "e5rt_batch_padding_efficiency",
            "real / padded tokens per batch",
            buckets=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0),
            registry=r,
        )
        self.tokenize = Histogram("e5rt_tokenize_seconds", "tokenization per request", buckets=_MS, registry=r)
        self.queue = Histogram("e5rt_queue_seconds", "wait until a request's first batch", buckets=_MS, registry=r)
        self.inference = Histogram("e5rt_inference_seconds", "batch run time", buckets=_MS, registry=r)
        self.request = Histogram("e5rt_request_seconds", "whole request", ["route"], buckets=_MS, registry=r)

    def bind_queue(self, texts: Callable[[], float], tokens: Callable[[], float]) -> None:
        """Add a queue to the depth gauges (a server of several models reports the sum of its queues)."""
        self._queues.append((texts, tokens))
        self.queue_texts.set_function(lambda: sum(t() for t, _ in self._queues))
        self.queue_tokens.set_function(lambda: sum(k() for _, k in self._queues))

    def on_batch(self, batch: BatchRecord) -> None:
        self.batch_size.observe(batch.texts)
        self.batch_tokens.observe(batch.padded_tokens)
        self.padding.observe(batch.real_tokens / max(batch.padded_tokens, 1))
        self.inference.observe(batch.seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
