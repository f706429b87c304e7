"""Embedder: prompts → tokenize → schedule batches → run → pool → normalize → restore order.

The synchronous pipeline. Its batches are cut by the same scheduler and batch step as the server's queue
(e5rt.batching); embed() returns each call's own stats, so concurrent callers never see each other's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .backends.base import Backend
from .batching import BatchQueue, BatchRecord, PoolSpec, Progress, Submission, run_inline
from .batching.scheduler import DEFAULT_BULK_SHARE
from .config import BatchOptions, LoadOptions, serve_workers
from .core.plan import CostRule
from .core.pool import vectors_from_sums
from .core.prompts import TextKind, format_texts
from .core.tokenize import Direction, Encoded, TextTokenizer
from .core.types import EMPTY_STATS, EmbedResult, Stats
from .errors import InputError, InvalidInputError, VariantError
from .manifest import Manifest, Variant, load_manifest, verify_files

log = logging.getLogger("e5rt")

LongText = Literal["truncate", "chunk"]


@dataclass(frozen=True)
class ModelSpec:
    """What the pipeline needs to know about a graph: from the manifest, or given by the export stage while
    it validates a graph that has no manifest yet."""

    dim: int
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
            sep_token_id=manifest.rerank.get("sep_token_id"),
        )


def _check_texts(texts: Any) -> list[str]:
    if texts is None:
        raise InputError("texts is None; pass a string or a list of strings")
    if isinstance(texts, (bytes, bytearray)):
        raise InputError("texts is bytes; decode it to str first")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, Sequence) or isinstance(texts, str):
        raise InputError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            if isinstance(item, (list, tuple)):
                raise InputError(f"texts[{i}] is a nested {type(item).__name__}; pass a flat list of strings")
            raise InputError(f"texts[{i}] is {type(item).__name__}, not str" + (" (None)" if item is None else ""))
    return list(texts)


class Embedder:
    """Text embeddings from an e5rt model directory. Thread-safe: encode()/embed() may be called concurrently.

    Build one with Embedder.load(model_dir, ...); the constructor takes any Backend (tests use FakeBackend).
    """

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
        self._keep: Any = None

    @classmethod
    def load(cls, model_dir: str | Path, options: LoadOptions | None = None, **overrides: Any) -> Embedder:
        """Load a model directory written by 'e5rt export'.

        options (or keyword overrides of its fields, batching fields included: max_batch_tokens=2048) say
        which variant on which provider; verify checks every file of the chosen variant against the
        manifest's sha256.
        """
        return cls._load(model_dir, "embed", LoadOptions.build(options, **overrides))

    @classmethod
    def _load(cls, model_dir: str | Path, task: str, opts: LoadOptions) -> Embedder:
        """The pipeline over a model directory of the given task (e5rt.Reranker loads through here too)."""
        from .backends.ort import OrtBackend, resolve_provider

        root = Path(model_dir)
        manifest = load_manifest(root)
        if manifest.task != task:
            other = {"embed": "e5rt.Embedder.load", "rerank": "e5rt.Reranker.load"}[manifest.task]
            raise VariantError(
                f"{root} holds a {'reranker' if manifest.task == 'rerank' else 'text embedder'} "
                f"(task {manifest.task}); load it with {other}"
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
        )
        tok = TextTokenizer(root / manifest.tokenizer, manifest.max_length)
        emb = cls(
            backend,
            tok,
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
            emb.embed(["warm-up"])
            emb._local.stats = EMPTY_STATS
        return emb

    @classmethod
    def from_onnx(
        cls,
        model_path: str | Path,
        tokenizer_path: str | Path,
        spec: ModelSpec,
        *,
        provider: str = "cpu",
        batching: BatchOptions | None = None,
        threads: int | None = None,
        check_finite: bool = False,
        exact_int8: bool = False,
    ) -> Embedder:
        """The pipeline on one ONNX file without a manifest (the export stage validates graphs this way)."""
        from .backends.ort import OrtBackend

        backend = OrtBackend(model_path, provider, threads=threads, exact_int8=exact_int8)
        tok = TextTokenizer(tokenizer_path, spec.max_length)
        return cls(backend, tok, spec, batching, provider=provider, check_finite=check_finite)

    @classmethod
    def fake(
        cls,
        dim: int = 32,
        max_length: int = 128,
        prompt_scheme: str = "query-passage",
        batching: BatchOptions | None = None,
        delay_s: float = 0.0,
        per_token_s: float = 0.0,
    ) -> Embedder:
        """A deterministic Embedder without model files (FakeBackend + a byte-level tokenizer): for tests of
        servers, queues and CLIs. Its vectors are reproducible and batch-invariant, and mean nothing."""
        import tempfile

        from .backends.fake import FAKE_PAD_ID, FAKE_VOCAB, FakeBackend, write_fake_tokenizer

        folder = tempfile.TemporaryDirectory(prefix="e5rt-fake-")
        tok = TextTokenizer(write_fake_tokenizer(Path(folder.name) / "tokenizer.json"), max_length)
        backend = FakeBackend(dim=dim, vocab_size=FAKE_VOCAB, delay_s=delay_s, per_token_s=per_token_s)
        spec = ModelSpec(
            dim=dim, pad_token_id=FAKE_PAD_ID, max_length=max_length, prompt_scheme=prompt_scheme, name="fake"
        )
        emb = cls(backend, tok, spec, batching, provider="cpu", variant="fake")
        emb._keep = folder  # the tokenizer file lives as long as the embedder
        return emb

    # --- properties -------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self.backend.active_providers)

    @property
    def batch_invariant(self) -> bool:
        """Whether a text's vector is the same alone and in any batch (see Variant.batch_invariant); a model
        without a manifest (the export's validation, the fake) runs float graphs."""
        variant = self.manifest.variants.get(self._variant) if self.manifest is not None else None
        return True if variant is None else variant.batch_invariant

    @property
    def max_batch_tokens(self) -> int:
        return self.rule.max_batch_tokens

    @property
    def last_stats(self) -> Stats:
        """Stats of the last encode()/embed() call made *by this thread* (per-thread, so concurrent callers
        never see each other's figures). Prefer embed(), which returns them with the embeddings."""
        return getattr(self._local, "stats", EMPTY_STATS)

    def with_batching(self, batching: BatchOptions) -> Embedder:
        """The same loaded model and session with other batching options (no reload)."""
        return Embedder(
            self.backend,
            self.tokenizer,
            self.spec,
            batching,
            provider=_provider_of(self.providers),
            manifest=self.manifest,
            variant=self._variant,
            model_dir=self.model_dir,
            check_finite=self.pool_spec.check_finite,
        )

    # --- public encode API ------------------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        kind: TextKind = "passage",
        task: str | None = None,
        normalize: bool = True,
        long_text: LongText = "truncate",
        overlap: int = 0,
        progress: Progress | None = None,
        prompt: str | None = None,
    ) -> np.ndarray:
        """Embed texts as (N, dim) float32 in input order; a single str gives (dim,).

        long_text='chunk' embeds texts longer than max_length as windows and averages them by token count.
        prompt, when given, is put before every text instead of the model's own prompts ("" embeds the texts
        as they are).
        """
        result = self.embed(texts, kind, task, normalize, long_text, overlap, progress, prompt)
        return result.embeddings[0] if isinstance(texts, str) else result.embeddings

    def encode_queries(self, queries: str | Sequence[str], task: str | None = None, **kw: Any) -> np.ndarray:
        return self.encode(queries, kind="query", task=task, **kw)

    def encode_passages(self, passages: str | Sequence[str], **kw: Any) -> np.ndarray:
        return self.encode(passages, kind="passage", **kw)

    def embed(
        self,
        texts: str | Sequence[str],
        kind: TextKind = "passage",
        task: str | None = None,
        normalize: bool = True,
        long_text: LongText = "truncate",
        overlap: int = 0,
        progress: Progress | None = None,
        prompt: str | None = None,
    ) -> EmbedResult:
        """Like encode(), but always (N, dim) and with this call's own Stats (tokens, padding, batches,
        truncation, and tokenize / queue / inference / total milliseconds)."""
        items = [texts] if isinstance(texts, str) else _check_texts(texts)
        if long_text not in ("truncate", "chunk"):
            raise InvalidInputError(f"long_text must be 'truncate' or 'chunk', got {long_text!r}")
        if long_text == "chunk":
            result = self._embed_chunked(items, kind, task, overlap, normalize, progress, prompt)
        else:
            enc, tokenize_s = self.tokenize(items, kind, task, prompt=prompt)
            request = Submission(enc.ids, self.dim, truncated=enc.truncated, tokenize_s=tokenize_s, progress=progress)
            result = self.result(run_inline(request, self.backend, self.pool_spec, self.rule), normalize)
        self._local.stats = result.stats
        return result

    def embed_tokens(self, ids: Sequence[Sequence[int]] | Sequence[np.ndarray], normalize: bool = True) -> EmbedResult:
        """Embed pre-tokenized inputs: complete model inputs, special tokens included, at most max_length each."""
        arrays = self.check_token_ids(ids)
        request = Submission(arrays, self.dim)
        result = self.result(run_inline(request, self.backend, self.pool_spec, self.rule), normalize)
        self._local.stats = result.stats
        return result

    # --- the pieces a server composes -------------------------------------------------------------------
    def tokenize(
        self,
        texts: Sequence[str],
        kind: TextKind = "passage",
        task: str | None = None,
        direction: Direction = "right",
        prompt: str | None = None,
    ) -> tuple[Encoded, float]:
        """Prompted and tokenized (truncated to max_length from the given end), with the seconds it took."""
        t0 = time.perf_counter()
        enc = self.tokenizer.encode(format_texts(list(texts), self.spec.prompt_scheme, kind, task, prompt), direction)
        return enc, time.perf_counter() - t0

    def check_token_ids(self, ids: Sequence[Sequence[int]] | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Validate pre-tokenized inputs: non-empty lists of ints within the vocabulary, max_length at most."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise InputError(f"token ids must be a list of lists of int, got {type(ids).__name__}")
        vocab = self.tokenizer.vocab_size
        out = []
        for i, row in enumerate(ids):
            arr = np.asarray(row)
            if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
                raise InputError(f"token ids[{i}] must be a non-empty list of int")
            if arr.size > self.spec.max_length:
                raise InputError(
                    f"token ids[{i}] has {arr.size} tokens; this model takes at most {self.spec.max_length}"
                )
            if arr.min() < 0 or arr.max() >= vocab:
                raise InputError(f"token ids[{i}] holds an id outside the vocabulary [0, {vocab})")
            out.append(arr.astype(np.int64, copy=False))
        return out

    def queue(
        self,
        max_queued_texts: int | None = None,
        workers: int | None = None,
        on_batch: Callable[[BatchRecord], None] | None = None,
        bulk_share: float = DEFAULT_BULK_SHARE,
    ) -> BatchQueue:
        """A cross-request batching queue over this model (for servers): submit token ids from any thread,
        get a Submission whose future resolves when its rows are done; result() turns it into an EmbedResult.

        workers: batches that run at once (None: config.serve_workers decides, with the measurements). With
        several on the CPU, each runs on a session of fewer threads holding this one's weights, and a lone
        one-text batch runs on this session's threads."""
        backend, wide = self.backend, None
        threads = getattr(backend, "threads", None) or os.cpu_count() or 1
        sibling = getattr(backend, "with_threads", None)  # OrtBackend's: a session of other threads, same weights
        cpu = getattr(backend, "device", "cpu") == "cpu" and sibling is not None
        workers, each = serve_workers(workers, threads, cpu)
        if sibling is not None and cpu and each < threads:
            backend, wide = sibling(each), backend
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

    def result(self, request: Submission, normalize: bool = True) -> EmbedResult:
        """A completed request as embeddings in input order, with its stats (raises the request's error)."""
        done = request.future.result()
        return EmbedResult(vectors_from_sums(done.sums, done.weights, normalize), done.stats())

    # --- internals --------------------------------------------------------------------------------------
    def _embed_chunked(
        self,
        texts: list[str],
        kind: TextKind,
        task: str | None,
        overlap: int,
        normalize: bool,
        progress: Progress | None,
        prompt: str | None = None,
    ) -> EmbedResult:
        win = self.windows(texts, kind, task, overlap, prompt)
        request = Submission(win.pieces, self.dim, tokenize_s=win.tokenize_s, chunks=len(win.pieces), progress=progress)
        return self.combine(run_inline(request, self.backend, self.pool_spec, self.rule), win, normalize)

    def windows(
        self,
        texts: Sequence[str],
        kind: TextKind = "passage",
        task: str | None = None,
        overlap: int = 0,
        prompt: str | None = None,
    ) -> Windows:
        """Prompted texts as windows of max_length - specials content tokens (overlapping by `overlap`), each
        wrapped in the special tokens: long_text="chunk"'s first half (combine() is the second)."""
        t0 = time.perf_counter()
        prompted = format_texts(list(texts), self.spec.prompt_scheme, kind, task, prompt)
        return self.cut_windows(self.tokenizer.encode_content(prompted), overlap, t0)

    def cut_windows(self, contents: Sequence[np.ndarray], overlap: int = 0, t0: float | None = None) -> Windows:
        """Token ids without special tokens (one array per text) as wrapped windows; see windows()."""
        t0 = time.perf_counter() if t0 is None else t0
        window = self.spec.max_length - self.tokenizer.n_special
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < window:
            raise InvalidInputError(f"overlap must be an integer in [0, {window}), got {overlap!r}")
        step = window - overlap
        owners: list[int] = []
        pieces: list[np.ndarray] = []
        for i, content in enumerate(contents):
            starts = range(0, max(len(content) - overlap, 1), step) if len(content) > window else range(1)
            for s in starts:
                pieces.append(self.tokenizer.wrap(content[s : s + window]))
                owners.append(i)
        return Windows(pieces, np.asarray(owners, dtype=np.int64), len(contents), time.perf_counter() - t0)

    def combine(self, request: Submission, windows: Windows, normalize: bool = True) -> EmbedResult:
        """A completed request of windows as one vector per text: the token-weighted mean of its windows."""
        done = request.future.result()
        sums, counts = done.sums, done.weights
        if self.spec.pooling == "cls":
            # CLS has no per-token sum; weight each window's CLS vector by its token count instead.
            counts = np.asarray(done.lengths, dtype=np.float32)
            sums = sums * counts[:, None]
        total = np.zeros((windows.texts, self.dim), dtype=np.float32)
        weight = np.zeros(windows.texts, dtype=np.float32)
        np.add.at(total, windows.owners, sums)  # sum of masked sums = token-weighted mean of window means
        np.add.at(weight, windows.owners, counts)
        return EmbedResult(vectors_from_sums(total, weight, normalize), replace(done.stats(), texts=windows.texts))


@dataclass(frozen=True)
class Windows:
    """Texts cut into model-sized windows: the pieces to embed and which text each belongs to."""

    pieces: list[np.ndarray]
    owners: np.ndarray  # text index of each piece
    texts: int
    tokenize_s: float


def _provider_of(active: Sequence[str]) -> str:
    first = active[0] if active else "CPUExecutionProvider"
    return {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}.get(first, "cpu")
