"""The client packages users already call embedding servers through, unchanged, against `e5rt serve` on
127.0.0.1: openai (sync and async, 2,048 inputs), LangChain's OpenAIEmbeddings (what it sends by default, and
with check_embedding_ctx_length=False), LlamaIndex's OpenAIEmbedding and TextEmbeddingsInference, Haystack's
OpenAI embedders, and, in a process without HF_HUB_OFFLINE, huggingface_hub's InferenceClient and Haystack's
Hugging Face API embedders. Every vector must equal the library's for the same texts and prompts (<= 1e-5).

The server runs all-MiniLM-L6-v2's real weights under the instruct prompt scheme (see conftest), fp32.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from e5rt import Embedder
from tests.support.serving import Server

ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-5
TEXTS = [
    "Kimchi is a traditional Korean side dish of fermented vegetables.",
    "김치는 한국의 전통 발효 음식이다.",
    "Paris is the capital of France. " * 60,  # longer than the model's 256 tokens
    "emoji 🌶️ and tabs\tand new\nlines",
]


@pytest.fixture(scope="module")
def server(instruct_minilm: Path) -> Iterator[Server]:
    s = Server(str(instruct_minilm), "--variant", "fp32", "--log-level", "warning")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def lib(instruct_minilm: Path) -> Embedder:
    return Embedder.load(instruct_minilm, variant="fp32")


def many(n: int) -> list[str]:
    return [f"passage {i}: {TEXTS[i % len(TEXTS)][:120]}" for i in range(n)]


def close(got: Any, want: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), want, atol=ATOL)


# --- openai ----------------------------------------------------------------------------------------------
def test_openai_client_2048_inputs_base64_and_e5_fields(server: Server, lib: Embedder) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    texts = many(2048)
    res = client.embeddings.create(model="e5rt", input=texts)  # base64 on the wire, the client's default
    close([d.embedding for d in res.data], lib.encode(texts))
    assert res.usage.prompt_tokens == lib.embed(texts).stats.tokens
    q = client.embeddings.create(
        model="e5rt", input=["what is kimchi?"], extra_body={"input_type": "query", "task": "qa"}
    )
    close([q.data[0].embedding], lib.encode_queries(["what is kimchi?"], task="qa"))
    long = client.embeddings.create(model="e5rt", input=TEXTS, extra_body={"long_text": "chunk"})
    close([d.embedding for d in long.data], lib.encode(TEXTS, long_text="chunk"))


def test_async_openai_client(server: Server, lib: Embedder) -> None:
    from openai import AsyncOpenAI

    async def go() -> list[list[float]]:
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        results = await asyncio.gather(*(client.embeddings.create(model="e5rt", input=[t]) for t in TEXTS))
        await client.close()
        return [r.data[0].embedding for r in results]

    close(asyncio.run(go()), lib.encode(TEXTS))


# --- LangChain -------------------------------------------------------------------------------------------
def test_langchain_default_token_ids_get_a_422_that_names_the_fix(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LangChain's default tokenizes with tiktoken (cl100k_base) and posts the ids. tiktoken downloads that
    vocabulary; llama-index-core ships the same file in its package, so LangChain's real default runs offline
    here and sends what it sends in production."""
    import llama_index.core
    import openai
    import tiktoken
    from langchain_openai import OpenAIEmbeddings

    cache = Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    ids = tiktoken.get_encoding("cl100k_base").encode_ordinary(TEXTS[1])
    assert max(ids) < 250_002  # every one a valid XLM-R id: without the 422 they would embed another text
    emb = OpenAIEmbeddings(base_url=server.url + "/v1", api_key="unused", model="text-embedding-3-small", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        emb.embed_documents(TEXTS[:2])
    message = str(info.value)
    assert "check_embedding_ctx_length=False" in message and "token ids" in message
    with pytest.raises(openai.UnprocessableEntityError):
        emb.embed_query("what is kimchi?")


def test_langchain_openai_embeddings_1000_per_request(server: Server, lib: Embedder) -> None:
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(
        base_url=server.url + "/v1", api_key="unused", model="e5rt", check_embedding_ctx_length=False, max_retries=0
    )
    assert emb.chunk_size == 1000
    texts = many(1300)  # two requests: 1,000 and 300
    close(emb.embed_documents(texts), lib.encode(texts))
    close([emb.embed_query("what is kimchi?")], lib.encode(["what is kimchi?"]))  # sent as a plain text
    queries = OpenAIEmbeddings(
        base_url=server.url + "/v1",
        api_key="unused",
        model="e5rt",
        check_embedding_ctx_length=False,
        model_kwargs={"extra_body": {"input_type": "query", "task": "web_search"}},
    )
    close([queries.embed_query("what is kimchi?")], lib.encode_queries(["what is kimchi?"], task="web_search"))
    close(asyncio.run(emb.aembed_documents(TEXTS)), lib.encode(TEXTS))


# --- LlamaIndex ------------------------------------------------------------------------------------------
def test_llama_index_openai_embedding(server: Server, lib: Embedder) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    # OpenAIEmbedding accepts only OpenAI's model names; e5rt serves its model under any name it is sent.
    emb = OpenAIEmbedding(model="text-embedding-3-small", api_base=server.url + "/v1", api_key="unused", max_retries=0)
    texts = many(250)
    close(emb.get_text_embedding_batch(texts), lib.encode(texts))
    close([emb.get_query_embedding("what is kimchi?")], lib.encode(["what is kimchi?"]))
    close(asyncio.run(emb.aget_text_embedding_batch(TEXTS)), lib.encode(TEXTS))
    # OpenAILikeEmbedding (LlamaIndex's class for OpenAI-compatible servers), queries with the E5 fields.
    like = OpenAILikeEmbedding(
        model_name="e5rt",
        api_base=server.url + "/v1",
        embed_batch_size=1000,
        additional_kwargs={"extra_body": {"input_type": "query", "task": "qa"}},
    )
    close([like.get_query_embedding("what is kimchi?")], lib.encode_queries(["what is kimchi?"], task="qa"))


def test_llama_index_text_embeddings_inference(server: Server, lib: Embedder) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    emb = TextEmbeddingsInference(model_name="e5rt", base_url=server.url, embed_batch_size=32)
    close(emb.get_text_embedding_batch(TEXTS), lib.encode(TEXTS))
    close([emb.get_query_embedding("what is kimchi?")], lib.encode(["what is kimchi?"]))
    with_prompt = TextEmbeddingsInference(model_name="e5rt", base_url=server.url, query_instruction="query: ")
    close([with_prompt.get_query_embedding("kimchi")], lib.encode(["kimchi"], prompt="query: "))


# --- Haystack (OpenAI embedders; same environment) -------------------------------------------------------
def test_haystack_openai_embedders(server: Server, lib: Embedder) -> None:
    from haystack import Document
    from haystack.components.embedders import OpenAIDocumentEmbedder, OpenAITextEmbedder
    from haystack.utils import Secret

    key = Secret.from_token("unused")
    docs = OpenAIDocumentEmbedder(
        api_key=key, api_base_url=server.url + "/v1", model="e5rt", meta_fields_to_embed=["title"]
    )
    documents = [Document(content=t, meta={"title": f"doc {i}"}) for i, t in enumerate(TEXTS)]
    out = docs.run(documents)["documents"]
    close([d.embedding for d in out], lib.encode([f"doc {i}\n{t}" for i, t in enumerate(TEXTS)]))
    assert [d.meta["title"] for d in out] == [f"doc {i}" for i in range(len(TEXTS))]
    text = OpenAITextEmbedder(api_key=key, api_base_url=server.url + "/v1", model="e5rt")
    close([text.run("what is kimchi?")["embedding"]], lib.encode(["what is kimchi?"]))


# --- huggingface_hub and Haystack's Hugging Face API embedders (their own environment) -------------------
@pytest.fixture(scope="module")
def hf_results(server: Server) -> dict[str, Any]:
    # A process of its own only for its environment: the suite sets HF_HUB_OFFLINE, with which huggingface_hub
    # refuses every URL, loopback included (the same .venv: one environment since transformers 5).
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "hf_clients.py"), server.url],
        input=json.dumps(TEXTS),
        capture_output=True,
        text=True,
        timeout=300,
        # Not HF_HUB_OFFLINE: huggingface_hub then refuses every URL, loopback included. A URL model never
        # reaches the hub.
        env={"HF_HUB_DISABLE_TELEMETRY": "1", "HAYSTACK_TELEMETRY_ENABLED": "False", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_huggingface_hub_inference_client_posts_to_the_root(hf_results: dict[str, Any], lib: Embedder) -> None:
    assert int(hf_results["versions"]["huggingface_hub"].split(".")[0]) >= 1
    close(hf_results["one"], lib.encode(TEXTS[:1]))
    close(hf_results["batch"], lib.encode(TEXTS))
    close(hf_results["query"], lib.encode_queries(TEXTS))
    close(hf_results["raw"], lib.encode(TEXTS, normalize=False))
    close(hf_results["async"], lib.encode(TEXTS))  # AsyncInferenceClient, one request per text, concurrently
    enc, _ = lib.tokenize(TEXTS, direction="left")
    close(hf_results["left"], lib.embed_tokens(enc.ids).embeddings)
    assert not np.allclose(hf_results["left"][2], hf_results["batch"][2], atol=1e-3)  # the long text differs


def test_haystack_hugging_face_api_tei_embedders(hf_results: dict[str, Any], lib: Embedder) -> None:
    # Haystack's TEI embedders ask for normalize=False and truncate=True by default.
    close(hf_results["haystack_docs"], lib.encode(TEXTS, normalize=False))
    assert hf_results["haystack_meta"] == [{"i": i} for i in range(len(TEXTS))]
    close([hf_results["haystack_text"]], lib.encode(TEXTS[:1], normalize=False))


# --- cohere embed --------------------------------------------------------------------------------------------
def _near_levels(got: Any, want: np.ndarray) -> None:
    """Quantized rows from the server against the library's: the same levels, or one apart where a value lies
    on a level's edge (the two runs' floats differ in the last bits)."""
    got_a = np.asarray(got, dtype=np.int16)
    assert got_a.shape == want.shape
    assert np.abs(got_a - want.astype(np.int16)).max() <= 1
    assert (got_a == want).mean() >= 0.98


def _near_bits(got: Any, want: np.ndarray) -> None:
    bits = np.unpackbits(np.asarray(got, dtype=np.int16).astype(np.uint8), axis=1)
    ref = np.unpackbits(want.astype(np.uint8), axis=1)
    assert bits.shape == ref.shape and (bits != ref).mean() <= 0.01


def test_cohere_embed_v2_v1_and_langchain_every_type(server: Server, lib: Embedder) -> None:
    """cohere.ClientV2.embed and cohere.Client.embed, unchanged, against the server: every embedding type, the
    input types as E5 kinds and instructions, truncate, max_tokens; and LangChain's CohereEmbeddings."""
    import base64

    import cohere
    from cohere.core.api_error import ApiError as CohereError
    from langchain_cohere import CohereEmbeddings

    v2 = cohere.ClientV2(api_key="unused", base_url=server.url)
    types = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
    res = v2.embed(texts=TEXTS, model="e5rt", input_type="search_query", embedding_types=types)
    want = lib.encode(TEXTS, "query")
    close(res.embeddings.float_, want)
    floats64 = [np.frombuffer(base64.b64decode(s), dtype="<f4") for s in res.embeddings.base64 or []]
    close(floats64, want)
    for kind in ("int8", "uint8"):
        _near_levels(getattr(res.embeddings, kind), lib.quantize(want, kind))
    _near_bits(res.embeddings.ubinary, lib.quantize(want, "ubinary"))
    _near_bits(np.asarray(res.embeddings.binary) + 128, lib.quantize(want, "ubinary"))
    assert np.asarray(res.embeddings.binary).shape == (len(TEXTS), lib.dim // 8)
    assert res.texts == TEXTS and res.meta is not None and res.meta.billed_units.input_tokens > 0

    docs = v2.embed(texts=TEXTS[:2], model="e5rt", input_type="search_document", embedding_types=["float"])
    close(docs.embeddings.float_, lib.encode(TEXTS[:2], "passage"))
    topic = v2.embed(texts=TEXTS[:2], model="e5rt", input_type="classification", embedding_types=["float"])
    close(topic.embeddings.float_, lib.encode(TEXTS[:2], "query", "classification_topic"))
    start = v2.embed(texts=TEXTS[2:3], model="e5rt", input_type="search_document", truncate="START")
    close(start.embeddings.float_, lib.run(lib.prepare(TEXTS[2:3], direction="left"))[0])
    short = v2.embed(texts=TEXTS[2:3], model="e5rt", input_type="search_document", max_tokens=8)
    close(short.embeddings.float_, lib.run(lib.prepare(TEXTS[2:3], max_tokens=8))[0])
    with pytest.raises(CohereError) as info:
        v2.embed(texts=TEXTS[2:3], model="e5rt", input_type="search_document", truncate="NONE")
    assert info.value.status_code == 413 and "truncat" in info.value.body["message"]
    with pytest.raises(CohereError) as info:
        v2.embed(texts=TEXTS[:1], model="e5rt", input_type="image")
    assert info.value.status_code == 422 and "input_type" in info.value.body["message"]
    with pytest.raises(CohereError) as info:
        v2.embed(texts=TEXTS[:1], model="e5rt", input_type="search_query", output_dimension=8, embedding_types=["int8"])
    assert info.value.status_code == 422 and "output_dimension" in info.value.body["message"]

    v1 = cohere.Client(api_key="unused", base_url=server.url)
    plain = v1.embed(texts=TEXTS, model="e5rt", input_type="search_query")
    assert plain.response_type == "embeddings_floats"
    close(plain.embeddings, want)
    typed = v1.embed(texts=TEXTS, model="e5rt", input_type="search_query", embedding_types=["int8", "float"])
    assert typed.response_type == "embeddings_by_type"
    _near_levels(typed.embeddings.int8, lib.quantize(want, "int8"))

    lc = CohereEmbeddings(model="e5rt", base_url=server.url, cohere_api_key="unused")
    close(lc.embed_documents(TEXTS[:2]), lib.encode(TEXTS[:2], "passage"))
    close([lc.embed_query(TEXTS[0])], lib.encode(TEXTS[:1], "query"))
