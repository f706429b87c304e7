"""Reranker: (query, document) pairs → the model's pair template → length-sorted token-budget batches → one score
per pair.

A cross-encoder reads the query and a document together and gives one logit: how relevant the document is. It
runs on the same pipeline as the embedder (e5rt.batching's scheduler and batch step, the manifest's variants and
parity gate); only the tokenization (pairs, the document cut, never the query) and the output (the graph's logits,
no pooling) differ. Scores are the logit's sigmoid by default, as TEI and sentence-transformers' CrossEncoder
give them for one-label models; raw_scores=True keeps the logit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .batching import Submission, run_inline
from .config import LoadOptions
from .core.tokenize import PairTokenizer
from .core.types import EMPTY_STATS, Stats
from .engine import Embedder, _check_texts
from .errors import InputError, InvalidInputError


@dataclass(frozen=True)
class RerankResult:
    """One document's place in a reranking: its index in the caller's list, its score, and (when asked) the
    document itself."""

    index: int
    score: float
    document: str | None = None


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large |x| (float32 in, float32 out)."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def ranked(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices by score, best first (ties keep input order), cut to top_n: the library's and the server's order."""
    return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")[: top_n or len(scores)]]


class Reranker:
    """Relevance scores of (query, document) pairs from an e5rt rerank model directory. Thread-safe.

    Build one with Reranker.load(model_dir, ...) (the same options as Embedder.load: variant, provider,
    threads, batching).
    """

    def __init__(self, pipeline: Embedder, pairs: PairTokenizer) -> None:
        self.pipeline = pipeline
        self.pairs = pairs

    @classmethod
    def load(cls, model_dir: str | Path, options: LoadOptions | None = None, **overrides: Any) -> Reranker:
        opts = LoadOptions.build(options, **overrides)
        pipeline = Embedder._load(model_dir, "rerank", opts)
        manifest = pipeline.manifest
        assert manifest is not None
        return cls(pipeline, PairTokenizer(Path(model_dir) / manifest.tokenizer, manifest.max_length))

    # --- properties -------------------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        return self.pipeline.variant

    @property
    def max_length(self) -> int:
        return self.pipeline.spec.max_length

    @property
    def last_stats(self) -> Stats:
        """Stats of the last score()/rerank() call made by this thread."""
        return getattr(self.pipeline._local, "stats", EMPTY_STATS)

    # --- public API -------------------------------------------------------------------------------------
    def score(self, pairs: Sequence[tuple[str, str]] | Sequence[Sequence[str]]) -> np.ndarray:
        """Raw scores (the model's logits) of (query, document) pairs, in input order: (N,) for a one-label
        model, (N, labels) otherwise."""
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise InputError(f"pairs must be a list of (query, document) pairs, got {type(pairs).__name__}")
        queries, documents = [], []
        for i, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise InputError(f"pairs[{i}] must be a (query, document) pair of two strings")
            q, d = pair
            if not isinstance(q, str) or not isinstance(d, str):
                raise InputError(f"pairs[{i}] must hold two strings, got {type(q).__name__}, {type(d).__name__}")
            queries.append(q)
            documents.append(d)
        return self._logits(queries, documents)

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        return_documents: bool = False,
        raw_scores: bool = False,
    ) -> list[RerankResult]:
        """The documents ordered by relevance to the query, best first (ties keep input order): each with its
        index in `documents` and its score (sigmoid of the logit; raw_scores=True: the logit itself)."""
        if not isinstance(query, str):
            raise InputError(f"query must be a str, got {type(query).__name__}")
        docs = _check_texts(documents) if not isinstance(documents, str) else None
        if docs is None:
            raise InputError("documents must be a list of str, not one str; wrap it in a list")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise InvalidInputError(f"top_n must be a positive integer or None, got {top_n!r}", param="top_n")
        if not docs:
            return []
        logits = self._logits([query] * len(docs), docs)
        if logits.ndim != 1:
            raise InvalidInputError(
                f"this model gives {logits.shape[1]} scores per pair; rerank() needs a one-label model "
                "(use score() for the raw logits)"
            )
        scores = logits if raw_scores else sigmoid(logits)
        return [RerankResult(i, float(scores[i]), docs[i] if return_documents else None) for i in ranked(scores, top_n)]

    # --- internals --------------------------------------------------------------------------------------
    def _logits(self, queries: list[str], documents: list[str]) -> np.ndarray:
        p = self.pipeline
        if not queries:
            return np.zeros((0,) if p.spec.dim == 1 else (0, p.spec.dim), dtype=np.float32)
        t0 = time.perf_counter()
        enc = self.pairs.encode(queries, documents)
        request = Submission(enc.ids, p.dim, truncated=enc.truncated, tokenize_s=time.perf_counter() - t0)
        done = run_inline(request, p.backend, p.pool_spec, p.rule).future.result()
        p._local.stats = done.stats()
        logits = np.asarray(done.sums, dtype=np.float32)
        return logits[:, 0] if logits.shape[1] == 1 else logits
