"""The in-process integration classes with their real frameworks (langchain-core, llama-index-core,
haystack-ai) and the sentence-transformers stand-in: each gives Embedder.encode's vectors for the same texts
and prompts (<= 1e-6), sync and async, and each bad option is one clear error.

The model is all-MiniLM-L6-v2's real weights under the instruct prompt scheme (see conftest), so queries get
the instruction and passages do not."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e5rt import E5rtError, Embedder
from e5rt.core.prompts import TASKS

TEXTS = ["Kimchi is a Korean side dish.", "김치는 한국 음식이다.", "Paris is the capital of France. " * 80]
QUERY = "what is kimchi?"


@pytest.fixture(scope="module")
def lib(instruct_minilm: Path) -> Embedder:
    return Embedder.load(instruct_minilm, variant="fp32")


def same(got: object, want: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), want, atol=1e-6)


def test_langchain_embeddings(instruct_minilm: Path, lib: Embedder) -> None:
    from langchain_core.embeddings import Embeddings

    from e5rt.integrations.langchain import E5rtEmbeddings

    emb = E5rtEmbeddings(instruct_minilm, variant="fp32", task="qa")
    assert isinstance(emb, Embeddings)
    same(emb.embed_documents(TEXTS), lib.encode_passages(TEXTS))
    same(emb.embed_query(QUERY), lib.encode_queries(QUERY, task="qa"))
    same(asyncio.run(emb.aembed_documents(TEXTS)), lib.encode_passages(TEXTS))
    same(asyncio.run(emb.aembed_query(QUERY)), lib.encode_queries(QUERY, task="qa"))
    assert emb.embed_documents([]) == []
    chunked = E5rtEmbeddings(instruct_minilm, variant="fp32", long_text="chunk", overlap=8)
    same(chunked.embed_documents(TEXTS), lib.encode(TEXTS, long_text="chunk", overlap=8))
    with pytest.raises(E5rtError, match="unknown load option"):
        E5rtEmbeddings(instruct_minilm, variant="fp32", device_map="auto")


def test_langchain_async_runs_off_the_event_loop(instruct_minilm: Path) -> None:
    from e5rt.integrations.langchain import E5rtEmbeddings

    emb = E5rtEmbeddings(instruct_minilm, variant="fp32")
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(1000):
            ticks.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.001)

    async def go() -> None:
        tick = asyncio.create_task(ticker())
        await emb.aembed_documents(TEXTS * 40)
        tick.cancel()

    asyncio.run(go())
    assert len(ticks) > 3  # the loop kept running while the documents were embedded


def test_llama_index_embedding(instruct_minilm: Path, lib: Embedder) -> None:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from e5rt.integrations.llama_index import E5rtEmbedding

    emb = E5rtEmbedding(instruct_minilm, variant="fp32", task="web_search")
    assert isinstance(emb, BaseEmbedding) and emb.model_name == lib.spec.name
    same(emb.get_text_embedding_batch(TEXTS), lib.encode_passages(TEXTS))
    same(emb.get_text_embedding(TEXTS[0]), lib.encode_passages(TEXTS[0]))
    same(emb.get_query_embedding(QUERY), lib.encode_queries(QUERY, task="web_search"))
    same(asyncio.run(emb.aget_query_embedding(QUERY)), lib.encode_queries(QUERY, task="web_search"))
    same(asyncio.run(emb.aget_text_embedding_batch(TEXTS)), lib.encode_passages(TEXTS))
    same(asyncio.run(emb.aget_text_embedding(TEXTS[1])), lib.encode_passages(TEXTS[1]))


def test_haystack_components(instruct_minilm: Path, lib: Embedder) -> None:
    from haystack import Document, Pipeline

    from e5rt.integrations.haystack import E5rtDocumentEmbedder, E5rtTextEmbedder

    docs = E5rtDocumentEmbedder(instruct_minilm, variant="fp32", meta_fields_to_embed=["title"])
    documents = [Document(content=t, meta={"title": f"T{i}", "n": i}) for i, t in enumerate(TEXTS)]
    out = docs.run(documents)["documents"]
    same([d.embedding for d in out], lib.encode_passages([f"T{i}\n{t}" for i, t in enumerate(TEXTS)]))
    assert [(d.id, d.content, d.meta) for d in out] == [(d.id, d.content, d.meta) for d in documents]
    assert all(d.embedding is None for d in documents)  # the inputs are not modified
    again = E5rtDocumentEmbedder.from_dict(docs.to_dict())
    assert again.to_dict() == docs.to_dict() and again.load_options == {"variant": "fp32"}
    pipe = Pipeline()
    pipe.add_component("query", E5rtTextEmbedder(str(instruct_minilm), variant="fp32", task="qa"))
    result = pipe.run({"query": {"text": QUERY}})
    same(result["query"]["embedding"], lib.encode_queries(QUERY, task="qa"))
    # Haystack 3 deserializes only allow-listed modules; a pipeline file with e5rt components names ours.
    restored = Pipeline.loads(pipe.dumps(), allowed_modules=["e5rt.integrations.haystack"])
    same(restored.run({"query": {"text": QUERY}})["query"]["embedding"], lib.encode_queries(QUERY, task="qa"))
    with pytest.raises(E5rtError, match="list of Documents"):
        docs.run("not documents")  # type: ignore[arg-type]
    with pytest.raises(E5rtError, match="unknown load option"):
        E5rtTextEmbedder(instruct_minilm, varaint="fp32")  # checked when the component is built
    with pytest.raises(E5rtError, match="long_text"):
        E5rtTextEmbedder(instruct_minilm, long_text="split")  # type: ignore[arg-type]


def test_sentence_transformers_calls(instruct_minilm: Path, lib: Embedder) -> None:
    from e5rt.integrations.sentence_transformers import SentenceTransformer

    model = SentenceTransformer(instruct_minilm, variant="fp32")
    # The seed article's calls: encode(list), encode([q])[0], cosine similarity of the results.
    emb = model.encode(TEXTS)
    assert isinstance(emb, np.ndarray) and emb.shape == (3, lib.dim) and emb.dtype == np.float32
    same(emb, lib.encode(TEXTS, prompt=""))  # no prompt, as sentence-transformers does without prompt_name
    same(model.encode(TEXTS[0]), lib.encode(TEXTS[0], prompt=""))
    same(model.encode(TEXTS, batch_size=2, show_progress_bar=False, normalize_embeddings=True), emb)
    same(model.encode(TEXTS, prompt_name="query"), lib.encode_queries(TEXTS))
    same(model.encode(TEXTS, prompt_name="qa"), lib.encode_queries(TEXTS, task="qa"))
    same(model.encode(TEXTS, prompt="query: "), lib.encode(TEXTS, prompt="query: "))
    same(model.encode_query(QUERY), lib.encode_queries(QUERY))
    same(model.encode_document(TEXTS), lib.encode_passages(TEXTS))
    rows = model.encode(TEXTS, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 3
    sims = model.similarity(model.encode_query([QUERY]), model.encode_document(TEXTS))
    same(sims, lib.encode_queries([QUERY]) @ lib.encode_passages(TEXTS).T)
    assert model.get_sentence_embedding_dimension() == lib.dim and model.max_seq_length == lib.spec.max_length
    assert set(TASKS) <= set(model.prompts) and model.prompts["document"] == ""
    cut = SentenceTransformer(instruct_minilm, variant="fp32", truncate_dim=64)
    assert cut.encode(TEXTS).shape == (3, 64) and cut.get_sentence_embedding_dimension() == 64
    import torch

    tensor = model.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (3, lib.dim)
    for bad in (
        {"output_value": "token_embeddings"},
        {"precision": "int8"},
        {"batch_size": 0},
        {"prompt_name": "nope"},
        {"truncate_dim": 10_000},
        {"trust_remote_code": True},
    ):
        with pytest.raises(E5rtError):
            model.encode(TEXTS, **bad)  # type: ignore[arg-type]
    with pytest.raises(E5rtError, match="max_seq_length is fixed"):
        model.max_seq_length = 64


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_without_torch_convert_to_tensor_is_one_clear_error(instruct_minilm: Path) -> None:
    code = f"""
import sys
sys.modules["torch"] = None  # as if torch were not installed
from e5rt.integrations.sentence_transformers import SentenceTransformer
from e5rt import E5rtError
model = SentenceTransformer({str(instruct_minilm)!r}, variant="fp32")
print(model.encode(["a"]).shape)
try:
    model.encode(["a"], convert_to_tensor=True)
except E5rtError as exc:
    print("error:", exc)
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert "convert_to_tensor=True needs torch" in proc.stdout


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("langchain", "langchain_core", "langchain"),
        ("llama_index", "llama_index", "llama-index"),
        ("haystack", "haystack", "haystack"),
    ],
)
def test_missing_framework_names_the_extra(module: str, framework: str, extra: str) -> None:
    code = f"""
import sys
sys.modules[{framework!r}] = None
try:
    import e5rt.integrations.{module}
except ImportError as exc:
    print(type(exc).__name__, exc)
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("MissingExtraError") and f"pip install 'e5rt[{extra}]'" in proc.stdout
