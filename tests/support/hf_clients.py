"""Runs as a process of its own (the suite sets HF_HUB_OFFLINE, and huggingface_hub then refuses every URL): calls
URL through huggingface_hub's InferenceClient and Haystack's Hugging Face API embedders, exactly as users
write them, and prints every result as JSON for tests/test_clients.py to compare with the library.

usage: .venv/bin/python tests/support/hf_clients.py URL < texts.json
       .venv/bin/python tests/support/hf_clients.py URL --rerank < {"query": ..., "texts": [...]}
         (Haystack's HuggingFaceTEIRanker against a served reranker)
       .venv/bin/python tests/support/hf_clients.py URL --classify < ["text", ...]
         (InferenceClient.text_classification against a served classifier)
"""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import json
import sys


def rerank(url: str) -> None:
    from haystack import Document
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker

    job = json.load(sys.stdin)
    docs = [Document(content=t, meta={"i": i}) for i, t in enumerate(job["texts"])]
    out: dict[str, object] = {}
    for name, ranker in (
        ("default", HuggingFaceTEIRanker(url=url, top_k=len(docs))),
        ("raw_top2", HuggingFaceTEIRanker(url=url, top_k=2, raw_scores=True)),
    ):
        ranked = ranker.run(query=job["query"], documents=docs)["documents"]
        out[name] = [{"i": d.meta["i"], "score": d.score} for d in ranked]
    print(json.dumps(out))


def classify(url: str) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=url)
    texts: list[str] = json.load(sys.stdin)
    out = [[{"label": e.label, "score": e.score} for e in client.text_classification(t, top_k=10)] for t in texts]
    print(json.dumps(out))


def main() -> None:
    url = sys.argv[1]
    if sys.argv[2:] == ["--rerank"]:
        return rerank(url)
    if sys.argv[2:] == ["--classify"]:
        return classify(url)
    texts: list[str] = json.load(sys.stdin)
    from haystack import Document
    from haystack_integrations.components.embedders.huggingface_api import (
        HuggingFaceAPIDocumentEmbedder,
        HuggingFaceAPITextEmbedder,
    )
    from huggingface_hub import AsyncInferenceClient, InferenceClient

    client = InferenceClient(model=url)
    out: dict[str, object] = {
        "versions": {p: md.version(p) for p in ("huggingface_hub", "haystack-ai", "huggingface-api-haystack")},
        "one": client.feature_extraction(texts[0]).tolist(),
        "batch": client.feature_extraction(texts).tolist(),
        "query": client.feature_extraction(texts, prompt_name="query").tolist(),
        "left": client.feature_extraction(texts, truncate=True, truncation_direction="left").tolist(),
        "raw": client.feature_extraction(texts, normalize=False).tolist(),
    }

    async def concurrently() -> list[list[float]]:
        aclient = AsyncInferenceClient(model=url)
        rows = await asyncio.gather(*(aclient.feature_extraction(t) for t in texts))
        await aclient.close()
        return [row.reshape(-1).tolist() for row in rows]

    out["async"] = asyncio.run(concurrently())
    params = {"url": url}
    docs = HuggingFaceAPIDocumentEmbedder(api_type="text_embeddings_inference", api_params=params)
    embedded = docs.run([Document(content=t, meta={"i": i}) for i, t in enumerate(texts)])["documents"]
    out["haystack_docs"] = [d.embedding for d in embedded]
    out["haystack_meta"] = [d.meta for d in embedded]
    text = HuggingFaceAPITextEmbedder(api_type="text_embeddings_inference", api_params=params)
    out["haystack_text"] = text.run(texts[0])["embedding"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
