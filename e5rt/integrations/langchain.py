"""LangChain: e5rt as a langchain_core Embeddings, in-process.

    from e5rt.integrations.langchain import E5rtEmbeddings
    emb = E5rtEmbeddings("models/me5-small-r", task="web_search")
    vectors = emb.embed_documents(["..."]); q = emb.embed_query("...")

Documents are embedded as passages and queries with the model's query prompt (the instruct task for instruct
models), exactly as Embedder.encode_passages / encode_queries do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..engine import Embedder, LongText
from ._common import Prompting, missing

try:
    from langchain_core.embeddings import Embeddings
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
