"""LangChain: e5rt as a langchain_core Embeddings and a document compressor (reranker), in-process.

    from e5rt.integrations.langchain import E5rtEmbeddings, E5rtReranker
    emb = E5rtEmbeddings("models/me5-small-r", task="web_search")
    vectors = emb.embed_documents(["..."]); q = emb.embed_query("...")
    compressor = E5rtReranker("models/ms-marco-minilm", top_n=5)  # ContextualCompressionRetriever(base_compressor=...)

Documents are embedded as passages and queries with the model's query prompt (the instruct task for instruct
models), exactly as Embedder.encode_passages / encode_queries do. The reranker keeps the top_n documents by
Reranker.rerank's score, best first, each with `relevance_score` added to its metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine import Embedder, LongText
from ..rerank import Reranker
from ._common import Prompting, check_top_n, missing

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import Document
    from langchain_core.documents.compressor import BaseDocumentCompressor
    from langchain_core.embeddings import Embeddings
    from pydantic import PrivateAttr
except ImportError as _exc:
    raise missing("langchain-core", "langchain", _exc) from None


class E5rtEmbeddings(Embeddings):
    """langchain_core Embeddings over an e5rt model directory.

    model_dir first, then Embedder.load's options (variant=, provider=, threads=, max_batch_tokens=, ...).
    task: the instruction for queries of instruct models (a name from e5rt.TASKS or free text).
    long_text: "truncate" (default) or "chunk" (long documents as token-weighted windows).
    """

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
        self.embedder = Embedder.load(model_dir, **load_options)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.prompting.passages(self.embedder, texts)

    def embed_query(self, text: str) -> list[float]:
        return self.prompting.queries(self.embedder, [text])[0]

    # The session runs in a worker thread, so an async caller's event loop keeps serving while it computes.
    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


class E5rtReranker(BaseDocumentCompressor):
    """langchain_core document compressor over an e5rt rerank model directory: the top_n documents (None: all)
    by relevance to the query, best first, as copies with metadata["relevance_score"] set.

    model_dir first, then Reranker.load's options (variant=, provider=, threads=, max_batch_tokens=, ...).
    """

    top_n: int | None = 3
    _reranker: Reranker = PrivateAttr()

    def __init__(self, model_dir: str | Path, *, top_n: int | None = 3, **load_options: Any) -> None:
        super().__init__()
        self.top_n = check_top_n(top_n)
        self._reranker = Reranker.load(model_dir, **load_options)

    @property
    def reranker(self) -> Reranker:
        return self._reranker

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        docs = list(documents)
        results = self._reranker.rerank(query, [d.page_content for d in docs], top_n=self.top_n)
        return [
            Document(
                page_content=docs[r.index].page_content,
                metadata={**docs[r.index].metadata, "relevance_score": r.score},
                id=docs[r.index].id,
            )
            for r in results
        ]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
