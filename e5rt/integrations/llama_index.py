"""LlamaIndex: e5rt as a llama_index.core BaseEmbedding, in-process.

    from e5rt.integrations.llama_index import E5rtEmbedding
    Settings.embed_model = E5rtEmbedding("models/me5-small-r", task="web_search")

Texts (nodes) are embedded as passages, queries with the model's query prompt, as Embedder.encode does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..engine import Embedder, LongText
from ._common import Prompting, missing

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr
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
