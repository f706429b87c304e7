"""Several models behind one server: embedders and rerankers side by side, each with its own queue and variant.

A request names its model (OpenAI's and Cohere's `model` field); TEI's routes carry none and go to the first model
of their task, as a TEI server serving one model would. The models share the metrics registry and the tokenizer
thread pool; /health is 200 only when every model is ready.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..config import ServeOptions
from ..engine import Embedder
from ..errors import ConfigError
from .metrics import ServerMetrics
from .protocol import ApiError
from .service import TASK_ROUTES, TASK_WORDS, InferenceService, Lifecycle


@dataclass(frozen=True)
class ModelEntry:
    """One model to serve: how to load it, and what the manifest says it is called and does."""

    loader: Callable[[], Embedder]
    task: str = "embed"
    name: str | None = None
    workers: int | None = None  # batches this model runs at once (None: config.serve_workers decides)


class ModelSet:
    """The served models. Routes ask it for the model a request names; lifecycle calls go to every model."""

    def __init__(self, entries: list[ModelEntry], options: ServeOptions) -> None:
        if not entries:
            raise ConfigError("a server needs at least one model directory")
        self.options = options
        self.metrics = ServerMetrics()
        self.pool = ThreadPoolExecutor(options.tokenizer_threads, thread_name_prefix="e5rt-io")
        self.services = [
            InferenceService(
                e.loader,
                options,
                task=e.task,
                name=e.name,
                metrics=self.metrics,
                pool=self.pool,
                workers=e.workers,
            )
            for e in entries
        ]

    # --- lifecycle ---------------------------------------------------------------------------------------
    @property
    def state(self) -> Lifecycle:
        """FAILED if any model failed, else DRAINING if any drains, else LOADING until all are READY."""
        states = {s.state for s in self.services}
        for state in (Lifecycle.FAILED, Lifecycle.DRAINING, Lifecycle.LOADING):
            if state in states:
                return state
        return Lifecycle.READY

    @property
    def error(self) -> str | None:
        errors = [f"{s.model_name or 'model'}: {s.error}" for s in self.services if s.error]
        return "; ".join(errors) or None

    def set_on_failed(self, callback: Callable[[], None]) -> None:
        for s in self.services:
            s.on_failed = callback

    def start(self) -> list[threading.Thread]:
        return [s.start() for s in self.services]

    def drain(self) -> None:
        for s in self.services:
            s.drain()

    def close(self) -> None:
        for s in self.services:
            s.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- routing -----------------------------------------------------------------------------------------
    @property
    def first(self) -> InferenceService:
        return self.services[0]

    def pick(self, task: str | None, model: str | None = None) -> InferenceService:
        """The model a request is for: the one it names (of the route's task), else the first of that task.
        A name this server does not serve is accepted when only one model has the task (clients send names
        like 'text-embedding-3-small'); with several, it is a 404 that lists them."""
        if len(self.services) == 1:
            return self.first  # one model: every request is for it (its ready() refuses the other task)
        named = [s for s in self.services if model is not None and s.model_name == model]
        if named:
            service = named[0]
            if task is not None and service.task != task:
                raise ApiError(
                    "not_found",
                    f"model {model!r} is {TASK_WORDS[service.task]}; use {TASK_ROUTES[service.task]}",
                    param="model",
                    code="wrong_model_task",
                )
            return service
        of_task = [s for s in self.services if task is None or s.task == task]
        listing = ", ".join(f"{s.model_name} ({s.task})" for s in self.services)
        if not of_task:
            raise ApiError(
                "not_found", f"this server has no {TASK_WORDS[task or 'embed']}; it serves {listing}", code="no_model"
            )
        if model is not None and len(of_task) > 1:
            raise ApiError(
                "not_found", f"unknown model {model!r}; this server serves {listing}", param="model", code="no_model"
            )
        return of_task[0]
