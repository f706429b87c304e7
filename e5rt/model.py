"""The model base every task stands on: a loaded graph, its tokenizer, the batching rule, the inline and the
queued way to run token ids, and the per-thread stats.

A task (e5rt.engine.Embedder, e5rt.rerank.Reranker, e5rt.classify.Classifier) is a subclass that adds two things
of its own: how its inputs become token ids, and how the rows the batch step hands back become its answer. It
says both at once by returning a ``Prepared`` from its prepare method; the library runs that inline
(``ModelBase.run``), a server submits the same ``Prepared`` to the model's queue and calls its ``finish`` on the
completed submission. So a request's vector or score is computed by one code path however it arrives, and a new
task adds its own module without touching the others.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from .backends.base import Backend
from .batching import BatchQueue, BatchRecord, PoolSpec, Progress, Submission, run_inline
from .config import BatchOptions, LoadOptions, serve_workers
from .core.plan import CostRule
from .core.tokenize import Encoded, TextTokenizer
from .core.types import EMPTY_STATS, Stats
from .errors import InputError, TooLongError, VariantError
from .manifest import Manifest, ModelKind, Variant, load_manifest, verify_files

log = logging.getLogger("e5rt")
R = TypeVar("R")
S = TypeVar("S")
M = TypeVar("M", bound="ModelBase")

# The class that serves each kind, imported only when a model of that kind is loaded by kind (the CLI, a server).
TASK_CLASSES: dict[ModelKind, str] = {
    ModelKind.EMBED: "e5rt.engine:Embedder",
    ModelKind.RERANK: "e5rt.rerank:Reranker",
    ModelKind.CLASSIFY: "e5rt.classify:Classifier",
}


@dataclass(frozen=True)
class ModelSpec:
    """What the pipeline needs to know about a graph: from the manifest, or given by the export stage while
    it validates a graph that has no manifest yet."""

    dim: int  # values per input the graph gives: the embedding size, or a scoring head's label count
    pad_token_id: int
    max_length: int
    pooling: str = "mean"
    prompt_scheme: str = "none"
    packed: bool = False
    name: str = ""
    sep_token_id: int | None = None  # cross-encoders with two-segment pairs (BERT): token_type_ids from [SEP]

    @classmethod
    def from_manifest(cls, manifest: Manifest, variant: Variant) -> ModelSpec:
        return cls(
            dim=manifest.dim,
            pad_token_id=manifest.pad_token_id,
            max_length=manifest.max_length,
            pooling=manifest.pooling,
            prompt_scheme=manifest.prompt_scheme,
            packed=variant.packed,
            name=manifest.name,
            sep_token_id=manifest.head.get("sep_token_id"),
        )


@dataclass(frozen=True)
class Prepared(Generic[R]):
    """A request shaped by its task: the token ids to run, and how the completed rows become its answer.

    finish() gets the completed Submission (it raises the batches' error, if any) and returns the answer with
    that request's stats."""

    ids: list[np.ndarray]
    finish: Callable[[Submission], tuple[R, Stats]]
    truncated: int = 0
    tokenize_s: float = 0.0
    chunks: int = 0

    def with_finish(self, finish: Callable[[Submission], tuple[S, Stats]]) -> Prepared[S]:
        """The same token ids (and counts), finished another way."""
        return Prepared(self.ids, finish, self.truncated, self.tokenize_s, self.chunks)


def finish_rows(convert: Callable[[np.ndarray, np.ndarray], R]) -> Callable[[Submission], tuple[R, Stats]]:
    """A finish step over what the batch step wrote, one row per input: the pooled sums (or a scoring head's
    logits) and the token counts; it raises the batches' error, if any."""

    def finish(request: Submission) -> tuple[R, Stats]:
        done = request.future.result()
        return convert(done.sums, done.weights), done.stats()

    return finish


class ModelBase:
    """Loading, sessions, tokenizer, batching rule, the inline run and the serving queue: what every task shares.
    Thread-safe: a task's methods may be called from several threads at once."""

    kind: ClassVar[ModelKind]

    def __init__(
        self,
        backend: Backend,
        tokenizer: TextTokenizer,
        spec: ModelSpec,
        batching: BatchOptions | None = None,
        *,
        provider: str = "cpu",
        manifest: Manifest | None = None,
        variant: str = "",
        model_dir: Path | None = None,
        check_finite: bool = False,
    ) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.spec = spec
        self.provider = provider
        self.batching = (batching or BatchOptions()).resolved(provider, spec.packed, spec.dim)
        self.rule = CostRule(
            max_batch_tokens=int(self.batching.max_batch_tokens or 1),
            pad_multiple=int(self.batching.pad_multiple or 1),
            packed=spec.packed,
            max_batch_size=self.batching.max_batch_size,
            min_efficiency=self.batching.min_efficiency,
            pad_allowance=int(self.batching.pad_allowance or 0),
        )
        self.pool_spec = PoolSpec(
            dim=spec.dim,
            pad_id=spec.pad_token_id,
            pooling=spec.pooling,
            packed=spec.packed,
            check_finite=check_finite,
            sep_id=spec.sep_token_id,
        )
        self.manifest = manifest
        self.model_dir = model_dir
        self._variant = variant
        self._local = threading.local()
        self._keep: Any = None  # what must live as long as the model (a fake's temporary tokenizer file)

    # --- loading -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls: type[M], model_dir: str | Path, options: LoadOptions | None = None, **overrides: Any) -> M:
        """Load a model directory written by 'e5rt export'.

        options (or keyword overrides of its fields, batching fields included: max_batch_tokens=2048) say
        which variant on which provider; verify checks every file of the chosen variant against the
        manifest's sha256."""
        return cls.open(model_dir, LoadOptions.build(options, **overrides))

    @classmethod
    def open(cls: type[M], model_dir: str | Path, opts: LoadOptions) -> M:
        from .backends.ort import OrtBackend, resolve_provider

        root = Path(model_dir)
        manifest = load_manifest(root)
        if manifest.kind is not cls.kind:
            raise VariantError(
                f"{root} holds {manifest.kind.words} (task {manifest.kind.value}); load it with "
                f"e5rt.{task_class(manifest.kind).__name__}.load, or serve it with e5rt serve"
            )
        prov = resolve_provider(opts.provider)
        chosen = manifest.pick(opts.variant, prov)
        if prov not in chosen.providers:
            usable = ", ".join(n for n, v in manifest.variants.items() if prov in v.providers) or "none"
            raise VariantError(
                f"variant {chosen.name!r} is built for {', '.join(chosen.providers)}, not {prov}"
                + ("; packed variants have CUDA kernels only" if chosen.packed else "")
                + f". Variants for {prov}: {usable}"
            )
        if not chosen.parity.passed and not opts.allow_failed_parity:
            raise VariantError(
                f"variant {chosen.name!r} failed its export parity check (min cos {chosen.parity.min_cos:.6f} < "
                f"{chosen.parity.threshold}); pass allow_failed_parity=True to use it anyway"
            )
        # The tokenizer first: a compact one loads on its own thread while the session is built.
        tokenizer = TextTokenizer(root / manifest.tokenizer, manifest.max_length, manifest.compact_tokenizer)
        if opts.verify:
            verify_files(root, chosen)
        backend = OrtBackend(
            root / chosen.model_file,
            prov,
            threads=opts.threads,
            io_binding=opts.io_binding,
            arena=opts.arena,
            spin=opts.spin,
            exact_int8=prov == "cpu" and chosen.exact_int8_needed,
            share_weights=opts.share_weights,
            arm64_bf16=opts.arm64_bf16,
        )
        model = cls(
            backend,
            tokenizer,
            ModelSpec.from_manifest(manifest, chosen),
            opts.batching,
            provider=prov,
            manifest=manifest,
            variant=chosen.name,
            model_dir=root,
        )
        log.info("e5rt: loaded %s variant %s on %s", manifest.name, chosen.name, ", ".join(backend.active_providers))
        if opts.warmup:
            # One tiny run allocates the session's buffers and kernels before the first real request.
            model.run(model.warmup())
            model._local.stats = EMPTY_STATS
        return model

    def warmup(self) -> Prepared[Any]:
        """A tiny request of this task (run once at load)."""
        return Prepared([self.tokenizer.encode(["warm-up"]).ids[0]], finish_rows(lambda sums, _: sums))

    # --- properties --------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def max_length(self) -> int:
        return self.spec.max_length

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self.backend.active_providers)

    @property
    def batch_invariant(self) -> bool:
        """Whether an input's output is the same alone and in any batch (see Variant.batch_invariant); a model
        without a manifest (the export's validation, the fakes) runs float graphs."""
        variant = self.manifest.variants.get(self._variant) if self.manifest is not None else None
        return True if variant is None else variant.batch_invariant

    @property
    def max_batch_tokens(self) -> int:
        return self.rule.max_batch_tokens

    @property
    def last_stats(self) -> Stats:
        """Stats of the last call made *by this thread* (per-thread, so concurrent callers never see each
        other's figures)."""
        return getattr(self._local, "stats", EMPTY_STATS)

    # --- running -----------------------------------------------------------------------------------------
    def run(self, work: Prepared[R], progress: Progress | None = None) -> tuple[R, Stats]:
        """Run a prepared request in the caller's thread, in the batches the scheduler cuts."""
        request = Submission(
            work.ids,
            self.dim,
            truncated=work.truncated,
            tokenize_s=work.tokenize_s,
            chunks=work.chunks,
            progress=progress,
        )
        result, stats = work.finish(run_inline(request, self.backend, self.pool_spec, self.rule))
        self._local.stats = stats
        return result, stats

    def submit(self, queue: BatchQueue, work: Prepared[Any], here: bool = False) -> Submission:
        """Queue a prepared request (a server's way); finish() it once its future resolves. here: a lone short
        text on an idle queue runs in this thread (BatchQueue.submit)."""
        return queue.submit(
            work.ids, truncated=work.truncated, tokenize_s=work.tokenize_s, chunks=work.chunks, here=here
        )

    def queue(
        self,
        max_queued_texts: int | None = None,
        workers: int | None = None,
        on_batch: Callable[[BatchRecord], None] | None = None,
        bulk_share: float | None = None,
    ) -> BatchQueue:
        """A cross-request batching queue over this model (for servers).

        workers: batches that run at once (None: config.serve_workers decides, with the measurements). With
        several on the CPU, each runs on a session of fewer threads holding this one's weights, and a lone
        one-input batch runs on this session's threads."""
        backend, wide = self.backend, None
        threads = backend.threads or os.cpu_count() or 1
        cpu = backend.device == "cpu" and backend.can_split
        workers, each = serve_workers(workers, threads, cpu)
        if cpu and each < threads:
            backend, wide = backend.with_threads(each), backend
        return BatchQueue(
            backend,
            self.pool_spec,
            self.rule,
            max_queued_texts=max_queued_texts,
            workers=workers,
            on_batch=on_batch,
            bulk_share=bulk_share,
            wide=wide,
        )

    # --- checks every task shares ------------------------------------------------------------------------
    def check_token_ids(self, ids: Sequence[Sequence[int]] | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Validate complete model inputs (special tokens included, as the model gets them): non-empty lists
        of ints within the vocabulary, max_length at most. They are run as they are: nothing is added."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise InputError(f"token ids must be a list of lists of int, got {type(ids).__name__}")
        vocab = self.tokenizer.vocab_size
        out = []
        for i, row in enumerate(ids):
            try:
                arr = np.asarray(row)
            except (OverflowError, ValueError):
                raise InputError(f"token ids[{i}] must be a non-empty list of int", param="input") from None
            if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
                raise InputError(f"token ids[{i}] must be a non-empty list of int", param="input")
            if arr.size > self.spec.max_length:
                raise TooLongError(
                    f"token ids[{i}] has {arr.size} tokens; token ids are the complete model input (special "
                    f"tokens included) and this model takes at most {self.spec.max_length}; send fewer, or send "
                    "the text",
                    param="input",
                )
            if arr.min() < 0 or arr.max() >= vocab:
                raise InputError(f"token ids[{i}] holds an id outside the vocabulary [0, {vocab})", param="input")
            out.append(arr.astype(np.int64, copy=False))
        return out


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """A str list as given (a numpy array of str is taken too), or the InputError that says what is wrong."""
    if texts is None:
        raise InputError(f"{name} is None; pass a string or a list of strings")
    if isinstance(texts, (bytes, bytearray)):
        raise InputError(f"{name} is bytes; decode it to str first")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, Sequence) or isinstance(texts, str):
        raise InputError(f"{name} must be a str or a list of str, got {type(texts).__name__}")
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            if isinstance(item, (list, tuple)):
                raise InputError(f"{name}[{i}] is a nested {type(item).__name__}; pass a flat list of strings")
            raise InputError(f"{name}[{i}] is {type(item).__name__}, not str" + (" (None)" if item is None else ""))
    return list(texts)


def check_truncation(
    enc: Encoded,
    truncate: bool,
    max_length: int,
    what: str,
    param: str,
    hint: str,
    positions: Sequence[int] | None = None,
) -> None:
    """With truncation off, an input that had to be cut is refused (TooLongError naming the first one, by its
    place in the caller's inputs: positions maps enc's rows there when enc holds a subset of them)."""
    if enc.truncated and not truncate:
        i = enc.truncated_indices[0] if positions is None else positions[enc.truncated_indices[0]]
        raise TooLongError(
            f"{what} {i} is longer than this model's {max_length} tokens and truncation is off; {hint}", param=param
        )


def load_model(model_dir: str | Path, options: LoadOptions | None = None, **overrides: Any) -> ModelBase:
    """Load a model directory as the task its manifest declares (an Embedder, a Reranker or a Classifier)."""
    kind = load_manifest(model_dir).kind
    return task_class(kind).load(model_dir, options, **overrides)


def task_class(kind: ModelKind) -> type[ModelBase]:
    module, _, name = TASK_CLASSES[kind].partition(":")
    cls: type[ModelBase] = getattr(importlib.import_module(module), name)
    return cls


def fake_tokenizer(max_length: int) -> tuple[Any, TextTokenizer]:
    """The byte-level fake tokenizer (FakeBackend's) in a temporary directory, which the fake model keeps."""
    import tempfile

    from .backends.fake import write_fake_tokenizer

    folder = tempfile.TemporaryDirectory(prefix="e5rt-fake-")
    path = write_fake_tokenizer(Path(folder.name) / "tokenizer.json")
    return folder, TextTokenizer(path, max_length)
