"""Several models behind one server: embedders and rerankers side by side, each with its own queue and variant.

A request names its model (OpenAI's and Cohere's `model` field); TEI's routes carry none and go to the first model
of their task, as a TEI server serving one model would. The models share the metrics registry and the tokenizer
thread pool; /health is 200 only when every model is ready.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import SERVE_CPU_BATCH_TOKENS, BatchOptions, LoadOptions, ServeOptions, SourceOptions
from ..errors import ConfigError, NoModelError, WrongTaskError
from ..manifest import ModelKind, load_manifest
from ..model import ModelBase, task_class
from .metrics import ServerMetrics
from .service import InferenceService, Lifecycle


@dataclass(frozen=True)
class ModelEntry:
    """One model to serve: how to load it, and what its manifest says it does and is called."""

    loader: Callable[[], ModelBase]
    kind: ModelKind = ModelKind.EMBED
    name: str | None = None


class ModelSet:
    """The served models. Routes ask it for the model a request names; lifecycle calls go to every model."""

    def __init__(self, entries: list[ModelEntry], options: ServeOptions) -> None:
        if not entries:
            raise ConfigError("a server needs at least one model directory")
        self.options = options
        self.metrics = ServerMetrics()
        self.pool = ThreadPoolExecutor(options.tokenizer_threads, thread_name_prefix="e5rt-io")
        self.services = [
            InferenceService(e.loader, options, kind=e.kind, name=e.name, metrics=self.metrics, pool=self.pool)
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

    def pick(self, kind: ModelKind | None, model: str | None = None) -> InferenceService:
        """The model a request is for: the one it names (of the route's task), else the first of that task.
        A name this server does not serve is accepted when only one model has the task (clients send names
        like 'text-embedding-3-small'); with several, it is an error that lists them."""
        if len(self.services) == 1:
            return self.first  # one model: every request is for it (its ready() refuses another task)
        named = [s for s in self.services if model is not None and s.model_name == model]
        if named:
            service = named[0]
            if kind is not None and service.kind is not kind:
                raise WrongTaskError(service.kind, f"model {model!r} is {service.kind.words}", param="model")
            return service
        of_kind = [s for s in self.services if kind is None or s.kind is kind]
        listing = ", ".join(f"{s.model_name} ({s.kind.value})" for s in self.services)
        if not of_kind:
            raise NoModelError(f"this server has no {(kind or ModelKind.EMBED).words}; it serves {listing}")
        if model is not None and len(of_kind) > 1:
            raise NoModelError(f"unknown model {model!r}; this server serves {listing}", param="model")
        return of_kind[0]


# --- the serving policy: what `e5rt serve` and serve() from Python both do with their sources ---------------------
def serving_load_options(load: LoadOptions) -> LoadOptions:
    """How a served model is loaded: the provider resolved, CPU batches under the serving token budget (short
    batches keep a query's wait short), threads spinning only while a run goes (between runs they would take
    the cores the event loop and tokenizer threads need), weights mapped from the file so the workers'
    sessions share them."""
    from ..backends.ort import resolve_provider

    provider = resolve_provider(load.provider)
    budget = load.batching.max_batch_tokens or (SERVE_CPU_BATCH_TOKENS if provider == "cpu" else None)
    return replace(
        load,
        provider=provider,
        spin="run",
        share_weights=True,
        batching=replace(load.batching, max_batch_tokens=budget),
    )


def split_variant(model: str) -> tuple[str, str | None]:
    """SOURCE@VARIANT -> (SOURCE, VARIANT); a source without '@' in its last component, or a directory whose
    own name holds an '@', -> (SOURCE, None)."""
    head, sep, tail = model.rpartition("@")
    if not sep or "/" in tail or not head or Path(model).is_dir():
        return model, None
    return head, tail


def model_entries(
    sources: Sequence[str],
    options: ServeOptions,
    load: LoadOptions | None = None,
    source_options: SourceOptions | None = None,
    *,
    log_progress: bool = True,
) -> list[ModelEntry]:
    """The models a server serves, from its sources: exported directories (SOURCE@VARIANT picks one model's
    variant; load.variant the others), sources exported on first use into the model cache, or fake:DIM[:MS].
    Every check that can fail does so here, before a port is bound."""
    from ..pull import PullOptions, resolve_model

    if not sources:
        raise ConfigError("serve: name a model directory or source (or set E5RT_MODEL)", param="model")
    if len(sources) > 1 and options.served_model_name:
        raise ConfigError(
            "--served-model-name names one model (served_model_name); with several, each is served by its "
            "manifest's name",
            param="served_model_name",
        )
    load = load or LoadOptions()
    pull = PullOptions.of(source_options or SourceOptions(), progress=True, log_progress=log_progress)
    entries: list[ModelEntry] = []
    for source in sources:
        if source.startswith("fake:"):
            entries.append(
                ModelEntry(fake_loader(source, load.batching), ModelKind.EMBED, source if len(sources) > 1 else None)
            )
            continue
        src, variant = split_variant(source)
        # A source that is not an exported directory is exported into the cache first (once, under a lock).
        path = resolve_model(src, pull)
        manifest = load_manifest(path)
        if variant is not None and variant != "auto" and variant not in manifest.variants:
            have = ", ".join(sorted(manifest.variants))
            raise ConfigError(f"{src}@{variant}: this model has no variant {variant!r}; it has {have} (or auto)")
        opts = replace(load, variant=variant or load.variant)
        cls = task_class(manifest.kind)

        def loader(cls: type[ModelBase] = cls, path: Path = path, opts: LoadOptions = opts) -> ModelBase:
            return cls.open(path, serving_load_options(opts))

        entries.append(ModelEntry(loader, manifest.kind, manifest.name))
    names = [e.name for e in entries if e.name]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"two model directories have the name {', '.join(twice)}; serve them from separate servers")
    return entries


def fake_loader(source: str, batching: BatchOptions) -> Callable[[], ModelBase]:
    """fake:DIM[:MS_PER_BATCH]: a deterministic fake embedder (no files) to try the API."""
    from ..engine import Embedder

    dim, _, delay = source[5:].partition(":")
    if not dim.isdigit() or int(dim) < 1 or (delay and not delay.isdigit()):
        raise ConfigError(f"{source}: expected fake:DIM or fake:DIM:MS_PER_BATCH, e.g. fake:32 or fake:32:20")
    return lambda: Embedder.fake(int(dim), batching=batching, delay_s=int(delay or 0) / 1000.0)
