"""Reranker: (query, document) pairs → the model's pair template → length-sorted token-budget batches → one score
per pair.

A cross-encoder reads the query and a document together and gives one logit: how relevant the document is. It is
a task on the model base (e5rt.model) like the embedder: only its input shaping (pairs, the document cut, never
the query) and its output (the graph's logits through the manifest's activation, sigmoid for the rerankers e5rt
exports, as TEI and sentence-transformers' CrossEncoder give them) are its own. raw_scores=True keeps the logit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .config import BatchOptions
from .core.activations import activate, ranked, sigmoid
from .errors import InputError, InvalidInputError, TooLongError
from .manifest import ModelKind
from .model import ModelBase, ModelSpec, Prepared, check_texts, check_truncation, fake_tokenizer, finish_rows

__all__ = ["RerankResult", "Reranker", "ranked", "sigmoid"]


@dataclass(frozen=True)
class RerankResult:
    """One document's place in a reranking: its index in the caller's list, its score, and (when asked) the
    document itself."""

    index: int
    score: float
    document: str | None = None


def check_pairs(pairs: Any) -> tuple[list[str], list[str]]:
    """(query, document) pairs as two lists, or the InputError naming the first bad pair."""
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
    return queries, documents


class Reranker(ModelBase):
    """Relevance scores of (query, document) pairs from an e5rt rerank model directory. Thread-safe.

    Build one with Reranker.load(model_dir, ...) (the same options as Embedder.load: variant, provider,
    threads, batching).
    """

    kind: ClassVar[ModelKind] = ModelKind.RERANK

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pairs = self.tokenizer.pairs()
        self.activation = self.manifest.activation if self.manifest is not None else "sigmoid"

    @classmethod
    def fake(cls, max_length: int = 128, batching: BatchOptions | None = None, delay_s: float = 0.0) -> Reranker:
        """A deterministic one-label reranker without model files (FakeBackend giving logits + a byte-level pair
        tokenizer): for serving tests. Its scores are reproducible and batch-invariant, and mean nothing."""
        from .backends.fake import FAKE_PAD_ID, FAKE_VOCAB, FakeBackend

        folder, tok = fake_tokenizer(max_length)
        backend = FakeBackend(dim=32, vocab_size=FAKE_VOCAB, delay_s=delay_s, logits=1)
        spec = ModelSpec(dim=1, pad_token_id=FAKE_PAD_ID, max_length=max_length, pooling="logits", name="fake-rerank")
        model = cls(backend, tok, spec, batching, provider="cpu", variant="fake")
        model._keep = folder
        return model

    # --- public API -------------------------------------------------------------------------------------
    def score(self, pairs: Sequence[tuple[str, str]] | Sequence[Sequence[str]]) -> np.ndarray:
        """Raw scores (the model's logits) of (query, document) pairs, in input order: (N,) for a one-label
        model, (N, labels) otherwise."""
        queries, documents = check_pairs(pairs)
        return self.run(self.prepare_pairs(queries, documents))[0]

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        return_documents: bool = False,
        raw_scores: bool = False,
        truncate: bool = True,
    ) -> list[RerankResult]:
        """The documents ordered by relevance to the query, best first (ties keep input order): each with its
        index in `documents` and its score (the manifest's activation of the logit, sigmoid for e5rt's exports;
        raw_scores=True: the logit itself). truncate=False refuses a pair longer than max_length instead of
        cutting the document's end."""
        return self.run(self.prepare(query, documents, top_n, return_documents, raw_scores, truncate))[0]

    # --- the request, shaped once for the library and the server ---------------------------------------------
    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        return_documents: bool = False,
        raw_scores: bool = False,
        truncate: bool = True,
    ) -> Prepared[list[RerankResult]]:
        """A rerank request as pair ids, and the finish step that scores and orders them."""
        if not isinstance(query, str):
            raise InputError(f"query must be a str, got {type(query).__name__}", param="query")
        if isinstance(documents, str):
            raise InputError("documents must be a list of str, not one str; wrap it in a list", param="documents")
        docs = check_texts(documents, "documents")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise InvalidInputError(f"top_n must be a positive integer or None, got {top_n!r}", param="top_n")
        if self.dim != 1:
            raise InvalidInputError(
                f"this model gives {self.dim} scores per pair; rerank() needs a one-label model "
                "(use score() for the raw logits)"
            )
        activation = "none" if raw_scores else self.activation

        def results(logits: np.ndarray, _: np.ndarray) -> list[RerankResult]:
            scores = activate(logits[:, 0], activation)
            keep = return_documents
            return [RerankResult(i, float(scores[i]), docs[i] if keep else None) for i in ranked(scores, top_n)]

        pairs = self.prepare_pairs([query] * len(docs), docs, truncate)
        return pairs.with_finish(finish_rows(results))

    def prepare_pairs(self, queries: list[str], documents: list[str], truncate: bool = True) -> Prepared[np.ndarray]:
        """Pairs through the model's template (the document's end cut to fit), finishing as the logits."""
        t0 = time.perf_counter()
        try:
            enc = self.pairs.encode(queries, documents)
        except TooLongError as exc:  # the query alone leaves no room for a document: never cut, so refused
            raise TooLongError(str(exc), param="query") from None
        check_truncation(
            enc,
            truncate,
            self.spec.max_length,
            "document",
            "documents",
            "shorten it or send truncate=true (the document's end is cut, never the query)",
        )

        def logits(rows: np.ndarray, _: np.ndarray) -> np.ndarray:
            out = np.asarray(rows, dtype=np.float32)
            return out[:, 0] if out.shape[1] == 1 else out

        return Prepared(enc.ids, finish_rows(logits), truncated=enc.truncated, tokenize_s=time.perf_counter() - t0)

    def warmup(self) -> Prepared[Any]:
        return self.prepare_pairs(["warm-up"], ["warm-up"])
