"""Haystack: e5rt as text and document embedder components and a ranker, in-process.

    from e5rt.integrations.haystack import E5rtDocumentEmbedder, E5rtRanker, E5rtTextEmbedder
    pipeline.add_component("embedder", E5rtTextEmbedder("models/me5-small-r", task="web_search"))
    pipeline.add_component("ranker", E5rtRanker("models/ms-marco-minilm", top_k=5))

The text embedder embeds queries (the model's query prompt), the document embedder passages; documents come
back as copies with `embedding` set and their content, id and meta unchanged. The ranker returns the top_k
documents by Reranker.rerank's score, best first, as copies with `score` set. The model loads in warm_up()
(Haystack calls it when a pipeline runs), or at the first run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import LoadOptions
from ..engine import Embedder, LongText
from ..errors import InputError
from ..rerank import Reranker
from ._common import Prompting, check_top_n, missing

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ImportError as _exc:
    raise missing("haystack-ai", "haystack", _exc) from None


def _documents(documents: Any, who: str, hint: str = "") -> list[Document]:
    if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
        raise InputError(f"{who} takes a list of Documents{hint}")
    return documents


def _text(doc: Document, meta_fields: list[str], separator: str) -> str:
    """The text a component reads: the named meta values, then the content (as Haystack's own components do)."""
    meta = [str(doc.meta[k]) for k in meta_fields if doc.meta.get(k) is not None]
    return separator.join([*meta, doc.content or ""])


class _E5rtComponent:
    """The model directory, load options and prompt settings both components keep (and serialize)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        task: str | None = None,
        long_text: LongText = "truncate",
        overlap: int = 0,
        **load_options: Any,
    ) -> None:
        self.prompting = Prompting(task, long_text, overlap)
        self.model_dir = str(model_dir)
        LoadOptions.build(**load_options)  # a wrong option fails when the pipeline is built, not at warm_up()
        self.load_options = dict(load_options)
        self._embedder: Embedder | None = None

    def warm_up(self) -> None:
        """Load the model (once)."""
        if self._embedder is None:
            self._embedder = Embedder.load(self.model_dir, **self.load_options)

    @property
    def embedder(self) -> Embedder:
        self.warm_up()
        assert self._embedder is not None
        return self._embedder

    def _init_parameters(self) -> dict[str, Any]:
        return {
            "model_dir": self.model_dir,
            "task": self.prompting.task,
            "long_text": self.prompting.long_text,
            "overlap": self.prompting.overlap,
            **self.load_options,
        }


@component
class E5rtTextEmbedder(_E5rtComponent):
    """Embeds one query string: run(text) -> {"embedding": list[float]}."""

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, **self._init_parameters())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> E5rtTextEmbedder:
        return default_from_dict(cls, data)

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise InputError("E5rtTextEmbedder takes one string; embed a list of Documents with E5rtDocumentEmbedder")
        return {"embedding": self.prompting.queries(self.embedder, [text])[0]}


@component
class E5rtDocumentEmbedder(_E5rtComponent):
    """Embeds Documents as passages: run(documents) -> {"documents": copies with `embedding` set}.

    meta_fields_to_embed: meta values put before the content (joined by embedding_separator), as Haystack's
    own document embedders do.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        **options: Any,
    ) -> None:
        # Explicit base: @component rebuilds the class, which breaks the zero-argument super().
        _E5rtComponent.__init__(self, model_dir, **options)
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            **self._init_parameters(),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> E5rtDocumentEmbedder:
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        documents = _documents(documents, "E5rtDocumentEmbedder", "; embed a single string with E5rtTextEmbedder")
        texts = [_text(d, self.meta_fields_to_embed, self.embedding_separator) for d in documents]
        vectors = self.prompting.passages(self.embedder, texts)
        return {"documents": [replace(d, embedding=v) for d, v in zip(documents, vectors, strict=True)]}


@component
class E5rtRanker:
    """Ranks Documents by relevance to a query: run(query, documents, top_k=None, score_threshold=None) ->
    {"documents": the top_k copies, best first, with `score` set}.

    meta_fields_to_embed: meta values put before the content (joined by embedding_separator), as Haystack's
    own rankers do. score_threshold drops documents scoring below it.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        top_k: int | None = 10,
        score_threshold: float | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        **load_options: Any,
    ) -> None:
        self.model_dir = str(model_dir)
        self.top_k = check_top_n(top_k, "top_k")
        self.score_threshold = score_threshold
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        LoadOptions.build(**load_options)  # a wrong option fails when the pipeline is built, not at warm_up()
        self.load_options = dict(load_options)
        self._reranker: Reranker | None = None

    def warm_up(self) -> None:
        """Load the model (once)."""
        if self._reranker is None:
            self._reranker = Reranker.load(self.model_dir, **self.load_options)

    @property
    def reranker(self) -> Reranker:
        self.warm_up()
        assert self._reranker is not None
        return self._reranker

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self,
            model_dir=self.model_dir,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            **self.load_options,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> E5rtRanker:
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, documents: list[Document], top_k: int | None = None, score_threshold: float | None = None
    ) -> dict[str, Any]:
        docs = _documents(documents, "E5rtRanker")
        texts = [_text(d, self.meta_fields_to_embed, self.embedding_separator) for d in docs]
        k = check_top_n(top_k, "top_k") if top_k is not None else self.top_k
        threshold = self.score_threshold if score_threshold is None else score_threshold
        results = self.reranker.rerank(query, texts, top_n=k)
        kept = [replace(docs[r.index], score=r.score) for r in results if threshold is None or r.score >= threshold]
        return {"documents": kept}
