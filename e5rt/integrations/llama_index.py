"""LlamaIndex: e5rt as a llama_index.core BaseEmbedding and a node postprocessor (reranker), in-process.

    from e5rt.integrations.llama_index import E5rtEmbedding, E5rtRerank
    Settings.embed_model = E5rtEmbedding("models/me5-small-r", task="web_search")
    engine = index.as_query_engine(node_postprocessors=[E5rtRerank("models/ms-marco-minilm", top_n=5)])

Texts (nodes) are embedded as passages, queries with the model's query prompt, as Embedder.encode does. The
reranker scores each node's content (MetadataMode.EMBED, as LlamaIndex's own rerankers read it) against the
query and keeps the top_n, best first, with the score as the node's score.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..engine import Embedder, LongText
from ..errors import InputError
from ..rerank import Reranker
from ._common import Prompting, check_top_n, missing

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as _exc:
    raise missing("llama-index-core", "llama-index", _exc) from None


class E5rtEmbedding(BaseEmbedding):
    """llama_index.core BaseEmbedding over an e5rt model directory.

    model_dir first, then Embedder.load's options (variant=, provider=, threads=, max_batch_tokens=, ...).
    embed_batch_size is how many texts LlamaIndex hands over per call (e5rt cuts its own token-budget batches
    inside a call, so a large value costs nothing). task: the instruction for instruct models' queries.
    """

    task: str | None = None
    long_text: str = "truncate"
    overlap: int = 0
    _embedder: Embedder = PrivateAttr()
    _prompting: Prompting = PrivateAttr()

    def __init__(
        self,
        model_dir: str | Path,
        *,
        task: str | None = None,
        long_text: LongText = "truncate",
        overlap: int = 0,
        embed_batch_size: int = 256,
        **load_options: Any,
    ) -> None:
        prompting = Prompting(task, long_text, overlap)
        embedder = Embedder.load(model_dir, **load_options)
        super().__init__(model_name=embedder.spec.name or str(model_dir), embed_batch_size=embed_batch_size)
        self.task, self.long_text, self.overlap = task, long_text, overlap
        self._embedder, self._prompting = embedder, prompting

    @classmethod
    def class_name(cls) -> str:
        return "E5rtEmbedding"

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._prompting.queries(self._embedder, [query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._prompting.passages(self._embedder, [text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._prompting.passages(self._embedder, texts)

    # Off the event loop: the session runs in a worker thread while the loop keeps serving.
    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class E5rtRerank(BaseNodePostprocessor):
    """llama_index.core node postprocessor over an e5rt rerank model directory: the top_n nodes (None: all) by
    relevance to the query, best first, each scored by Reranker.rerank.

    model_dir first, then Reranker.load's options (variant=, provider=, threads=, max_batch_tokens=, ...).
    """

    top_n: int | None = 3
    _reranker: Reranker = PrivateAttr()

    def __init__(self, model_dir: str | Path, *, top_n: int | None = 3, **load_options: Any) -> None:
        super().__init__()
        self.top_n = check_top_n(top_n)
        self._reranker = Reranker.load(model_dir, **load_options)

    @classmethod
    def class_name(cls) -> str:
        return "E5rtRerank"

    @property
    def reranker(self) -> Reranker:
        return self._reranker

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise InputError("E5rtRerank needs the query: call postprocess_nodes(nodes, query_str=...)")
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        results = self._reranker.rerank(query_bundle.query_str, texts, top_n=self.top_n)
        return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in results]
