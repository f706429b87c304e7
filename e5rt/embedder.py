"""Embedder: prompts → tokenize → plan → run → pool → normalize → restore order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .backend import OrtBackend, resolve_provider
from .errors import InputError, VariantError
from .manifest import Manifest, Variant, load_manifest, verify_files
from .pool import l2_normalize
from .prompts import Kind, format_texts
from .runner import EMPTY_STATS, Stats, embed_ids
from .tokenize import TextTokenizer

log = logging.getLogger("e5rt")

# Padded-token budgets per batch, chosen by measurement (see README, "Choosing max_batch_tokens").
DEFAULT_BATCH_TOKENS = {"cpu": 4096, "cuda": 16384, "tensorrt": 16384}
# A batch is also cut when the next text would leave under 95% of its padded tokens real (see plan_batches).
DEFAULT_MIN_EFFICIENCY = 0.95
LongText = Literal["truncate", "chunk"]
Progress = Callable[[int, int], None]


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


def pick_variant(manifest: Manifest, requested: str, provider: str) -> Variant:
    """'auto' means fp16 on CUDA, int8 on CPU when its parity passed, otherwise fp32."""
    variants = manifest.variants
    if requested != "auto":
        if requested not in variants:
            raise VariantError(f"unknown variant {requested!r}; this model has: {', '.join(sorted(variants))}")
        return variants[requested]
    if provider in ("cuda", "tensorrt"):
        order = ["fp16", "fp32"]
    else:
        order = ["int8", "fp32"]
    for name in order:
        v = variants.get(name)
        if v is None or not v.parity.passed or provider not in v.providers:
            continue
        speed = v.raw.get("cpu_speed") if v.precision == "int8" else None
        if isinstance(speed, dict) and float(speed.get("speedup_vs_fp32", 1.0)) < 1.0 and "fp32" in variants:
            # The export measured this int8 graph slower than fp32 on its CPU; prefer fp32.
            log.info("e5rt: int8 measured %.2fx fp32 at export; auto picks fp32", speed["speedup_vs_fp32"])
            continue
        return v
    for v in variants.values():
        if provider in v.providers and v.parity.passed:
            return v
    listing = ", ".join(f"{n} ({'/'.join(v.providers)})" for n, v in variants.items())
    raise VariantError(f"no variant of this model passed export parity and runs on {provider}; available: {listing}")


class Embedder:
    """Text embeddings from an e5rt model directory. Thread-safe: encode() may be called concurrently."""

    def __init__(
        self,
        model_dir: Path,
        manifest: Manifest,
        variant: Variant,
        backend: OrtBackend,
        tokenizer: TextTokenizer,
        max_batch_tokens: int,
        pad_multiple: int,
    ) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self._variant = variant
        self.backend = backend
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.pad_multiple = pad_multiple
        self.min_efficiency = DEFAULT_MIN_EFFICIENCY
        self._stats_lock = threading.Lock()
        self._last_stats = EMPTY_STATS
        self._dim = manifest.dim

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        variant: str = "auto",
        provider: str = "auto",
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        *,
        verify: bool = True,
        pad_multiple: int | None = None,
        io_binding: bool | None = None,
        arena: str = "default",
        allow_failed_parity: bool = False,
        warmup: bool = True,
    ) -> Embedder:
        """Load a model directory written by 'e5rt export'.

        verify checks every file of the chosen variant against the manifest's sha256 (pass False to skip).
        """
        root = Path(model_dir)
        manifest = load_manifest(root)
        prov = resolve_provider(provider)
        chosen = pick_variant(manifest, variant, prov)
        if prov not in chosen.providers:
            usable = ", ".join(n for n, v in manifest.variants.items() if prov in v.providers) or "none"
            raise VariantError(
                f"variant {chosen.name!r} is built for {', '.join(chosen.providers)}, not {prov}"
                + ("; packed variants have CUDA kernels only" if chosen.packed else "")
                + f". Variants for {prov}: {usable}"
            )
        if not chosen.parity.passed and not allow_failed_parity:
            raise VariantError(
                f"variant {chosen.name!r} failed its export parity check (min cos {chosen.parity.min_cos:.6f} < "
                f"{chosen.parity.threshold}); pass allow_failed_parity=True to use it anyway"
            )
        if verify:
            verify_files(root, chosen)
        backend = OrtBackend(root / chosen.model_file, prov, threads=threads, io_binding=io_binding, arena=arena)
        tok = TextTokenizer(root / manifest.tokenizer, manifest.max_length)
        budget = max_batch_tokens or DEFAULT_BATCH_TOKENS[prov]
        if pad_multiple is None:
            # Multiples of 8 suit GPU tensor cores; on CPU they only add padding (short queries most of all).
            pad_multiple = 8 if prov in ("cuda", "tensorrt") else 1
        emb = cls(root, manifest, chosen, backend, tok, budget, pad_multiple=1 if chosen.packed else pad_multiple)
        log.info("e5rt: loaded %s variant %s on %s", manifest.name, chosen.name, ", ".join(backend.active_providers))
        if warmup:
            # One tiny run allocates the session's buffers and kernels before the first real request.
            emb.encode(["warm-up"])
            emb._last_stats = EMPTY_STATS
        return emb

    # --- properties -------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def variant(self) -> str:
        return self._variant.name

    @property
    def providers(self) -> tuple[str, ...]:
        return self.backend.active_providers

    @property
    def last_stats(self) -> Stats:
        with self._stats_lock:
            return self._last_stats

    # --- public encode API ------------------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        kind: Kind = "passage",
        task: str | None = None,
        normalize: bool = True,
        long_text: LongText = "truncate",
        overlap: int = 0,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Embed texts as (N, dim) float32 in input order; a single str gives (dim,).

        long_text='chunk' embeds texts longer than max_length as windows and averages them by token count.
        """
        single = isinstance(texts, str)
        items = [texts] if isinstance(texts, str) else _check_texts(texts)
        if long_text not in ("truncate", "chunk"):
            raise ValueError(f"long_text must be 'truncate' or 'chunk', got {long_text!r}")
        prompted = format_texts(items, self.manifest.prompt_scheme, kind, task)
        if long_text == "chunk":
            out, stats = self._encode_chunked(prompted, overlap, normalize, progress)
        else:
            enc = self.tokenizer.encode(prompted)
            sums, counts, stats = self._run_ids(enc.ids, progress)
            stats = replace(stats, truncated=enc.truncated)
            out = self._finish(sums, counts, normalize)
        with self._stats_lock:
            self._last_stats = stats
        return out[0] if single else out

    def encode_queries(self, queries: str | Sequence[str], task: str | None = None, **kw: Any) -> np.ndarray:
        return self.encode(queries, kind="query", task=task, **kw)

    def encode_passages(self, passages: str | Sequence[str], **kw: Any) -> np.ndarray:
        return self.encode(passages, kind="passage", **kw)

    # --- internals --------------------------------------------------------------------------------------
    def _finish(self, sums: np.ndarray, counts: np.ndarray, normalize: bool) -> np.ndarray:
        """Weighted sums and their weights -> (optionally normalized) embeddings."""
        pooled = sums / np.maximum(counts, 1e-9)[:, None]
        if normalize:
            pooled = l2_normalize(pooled)
        return np.ascontiguousarray(pooled, dtype=np.float32)

    def _run_ids(self, ids_list: list[np.ndarray], progress: Progress | None) -> tuple[np.ndarray, np.ndarray, Stats]:
        return embed_ids(
            self.backend,
            ids_list,
            dim=self.dim,
            pad_id=self.manifest.pad_token_id,
            pooling=self.manifest.pooling,
            max_batch_tokens=self.max_batch_tokens,
            pad_multiple=self.pad_multiple,
            packed=self._variant.packed,
            progress=progress,
            min_efficiency=self.min_efficiency,
        )

    def _encode_chunked(
        self, texts: list[str], overlap: int, normalize: bool, progress: Progress | None
    ) -> tuple[np.ndarray, Stats]:
        window = self.manifest.max_length - self.tokenizer.n_special
        if not 0 <= overlap < window:
            raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
        step = window - overlap
        owners: list[int] = []
        pieces: list[np.ndarray] = []
        for i, content in enumerate(self.tokenizer.encode_content(texts)):
            starts = range(0, max(len(content) - overlap, 1), step) if len(content) > window else range(1)
            for s in starts:
                pieces.append(self.tokenizer.wrap(content[s : s + window]))
                owners.append(i)
        sums, counts, stats = self._run_ids(pieces, progress)
        if self.manifest.pooling == "cls":
            # CLS has no per-token sum; weight each window's CLS vector by its token count instead.
            counts = np.asarray([len(p) for p in pieces], dtype=np.float32)
            sums = sums * counts[:, None]
        total = np.zeros((len(texts), self.dim), dtype=np.float32)
        weight = np.zeros(len(texts), dtype=np.float32)
        owner_idx = np.asarray(owners, dtype=np.int64)
        np.add.at(total, owner_idx, sums)  # sum of masked sums = token-weighted mean of window means
        np.add.at(weight, owner_idx, counts)
        out = self._finish(total, weight, normalize)
        stats = replace(stats, texts=len(texts), chunks=len(pieces))
        return out, stats
