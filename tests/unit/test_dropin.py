"""What clients send that e5rt used to get wrong: foreign token ids (422 by default, --accept-token-ids to
embed them), OpenAI-sized requests (2,048 inputs), TEI's root route, truncation_direction, and long texts
embedded whole on the server (long_text / overlap). Through the server's own app in-process
(tests/support/inprocess.py) against the fake model, compared with the library's own vectors; the protocol rules
also as pure functions. The client packages that send these are driven over HTTP in tests/e2e/test_clients.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from e5rt import Embedder
from e5rt.server.protocol import TOKEN_IDS_REFUSED, ApiError, parse_openai, parse_tei_embed
from tests.support.inprocess import app_client

DIM = 16


@pytest.fixture(scope="module")
def model() -> Embedder:
    return Embedder.fake(DIM)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """The app with every default limit (nothing raised by options)."""
    with app_client([f"fake:{DIM}"]) as c:
        yield c


# --- token ids --------------------------------------------------------------------------------------------
def test_token_ids_are_refused_by_default_with_the_langchain_fix(client: Any) -> None:
    # What LangChain's OpenAIEmbeddings posts by default: tiktoken (cl100k) ids, one list per text.
    for body in ({"input": [[57668, 53901, 374]]}, {"input": [9906, 1917]}):
        r = client.post("/v1/embeddings", json=body)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "token_ids_not_accepted" and err["param"] == "input"
        assert "check_embedding_ctx_length=False" in err["message"] and "--accept-token-ids" in err["message"]
    assert client.get("/info").json()["limits"]["accept_token_ids"] is False
    # texts still work on the same server
    assert client.post("/v1/embeddings", json={"input": ["hello"]}).status_code == 200


def test_accept_token_ids_embeds_this_models_ids(model: Embedder) -> None:
    # (E5RT_ACCEPT_TOKEN_IDS and the flag reach this option: tests/e2e/test_server.py's environment test)
    with app_client([f"fake:{DIM}"], accept_token_ids=True) as c:
        assert c.get("/info").json()["limits"]["accept_token_ids"] is True
        # complete model inputs, special tokens included: this model's own ids give the text's vector
        ids = model.tokenizer.encode(["passage: hello"]).ids[0].tolist()
        r = c.post("/v1/embeddings", json={"input": [ids]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["data"][0]["embedding"], model.encode("hello"), atol=1e-6)
        # ids are never cut (they are what the model gets): past max_length they are a 413, either direction
        long = model.tokenizer.encode_content(["passage: " + "word " * 60])[0]
        assert len(long) > model.spec.max_length
        for direction in ("right", "left"):
            body = {"input": [long.tolist()], "truncation_direction": direction}
            refused = c.post("/v1/embeddings", json=body)
            assert refused.status_code == 413 and refused.json()["error"]["code"] == "input_too_long"
            assert "complete model input" in refused.json()["error"]["message"]


def test_parse_openai_refuses_ids_unless_accepted() -> None:
    with pytest.raises(ApiError) as info:
        parse_openai({"input": [[1, 2, 3]]}, DIM, 2048, True)
    assert info.value.status == 422 and info.value.message == TOKEN_IDS_REFUSED
    call = parse_openai({"input": [[1, 2, 3]]}, DIM, 2048, True, accept_token_ids=True)
    assert call.token_ids == [[1, 2, 3]] and call.texts is None


# --- request sizes ----------------------------------------------------------------------------------------
def test_2048_inputs_in_one_request_are_served(client: Any, model: Embedder) -> None:
    texts = [f"text number {i} about kimchi" for i in range(2048)]
    r = client.post("/v1/embeddings", json={"input": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 2048 and [d["index"] for d in body["data"]] == list(range(2048))
    got = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, model.encode(texts), atol=1e-6)
    over = client.post("/v1/embeddings", json={"input": ["x"] * 2049})
    assert over.status_code == 413 and over.json()["error"]["code"] == "too_many_inputs"
    limits = client.get("/info").json()["limits"]
    assert limits["max_client_batch_size"] == 2048 and limits["max_concurrent_requests"] >= 2048


# --- TEI's root route and truncation_direction ------------------------------------------------------------
def test_root_route_is_tei_embed(client: Any) -> None:
    for body in (
        {"inputs": "hello"},
        {"inputs": ["hello", "world"], "normalize": False, "truncate": True, "prompt_name": "query"},
        {"inputs": ["a b c"], "truncation_direction": "Left"},
    ):
        root, embed = client.post("/", json=body), client.post("/embed", json=body)
        assert root.status_code == embed.status_code == 200, root.text
        assert root.json() == embed.json()
    assert client.post("/", json={"input": "x"}).status_code == 422  # TEI's field name is 'inputs'
    assert "/" in client.get("/openapi.json").json()["paths"]


def test_truncation_direction_keeps_the_end(client: Any, model: Embedder) -> None:
    # The fake model takes 128 tokens (bytes) per text: a long text is cut, from the end or the beginning.
    text = "begin " + "middle " * 40 + "the end"
    right = client.post("/embed", json={"inputs": [text]}).json()[0]
    left = client.post("/embed", json={"inputs": [text], "truncation_direction": "left"}).json()[0]
    window = model.spec.max_length - model.tokenizer.n_special
    content = model.tokenizer.encode_content([f"passage: {text}"])[0]
    assert len(content) > window
    want_left = model.embed_tokens([model.tokenizer.wrap(content[-window:])]).embeddings[0]
    want_right = model.embed_tokens([model.tokenizer.wrap(content[:window])]).embeddings[0]
    np.testing.assert_allclose(left, want_left, atol=1e-6)
    np.testing.assert_allclose(right, want_right, atol=1e-6)
    np.testing.assert_allclose(right, model.encode(text), atol=1e-6)
    bad = client.post("/embed", json={"inputs": ["x"], "truncation_direction": "middle"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "truncation_direction"


# --- long texts -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["/v1/embeddings", "/embed"])
def test_long_text_chunk_matches_the_library_and_counts_every_token(client: Any, model: Embedder, route: str) -> None:
    texts = ["short one", "a long text " * 60, "another long passage, " * 30]
    for overlap in (0, 16):
        field = "input" if route == "/v1/embeddings" else "inputs"
        r = client.post(route, json={field: texts, "long_text": "chunk", "overlap": overlap})
        assert r.status_code == 200, r.text
        want = model.embed(texts, long_text="chunk", overlap=overlap)
        body = r.json()
        got = np.asarray([d["embedding"] for d in body["data"]] if route == "/v1/embeddings" else body)
        np.testing.assert_allclose(got, want.embeddings, atol=1e-6)
        assert int(r.headers["x-e5rt-tokens"]) == want.stats.tokens
        if route == "/v1/embeddings":
            assert body["usage"]["prompt_tokens"] == want.stats.tokens
            truncated = model.embed(texts).stats.tokens
            assert want.stats.tokens > truncated  # every window's tokens, not only the first window's
    for bad in ({"long_text": "split"}, {"overlap": 5}, {"long_text": "chunk", "overlap": 10_000}):
        r = client.post(route, json={("input" if route == "/v1/embeddings" else "inputs"): texts, **bad})
        assert r.status_code == 422, (bad, r.text)


def test_parse_tei_embed_reads_every_field_huggingface_hub_sends() -> None:
    call = parse_tei_embed(
        {
            "inputs": ["a"],
            "normalize": False,
            "prompt_name": "document",
            "truncate": False,
            "truncation_direction": "Left",
            "dimensions": 8,
            "encoding_format": "float",
        },
        DIM,
        2048,
        True,
    )
    assert (call.normalize, call.kind, call.truncate, call.direction, call.dimensions) == (
        False,
        "passage",
        False,
        "left",
        8,
    )
    with pytest.raises(ApiError):
        parse_tei_embed({"inputs": ["a"], "encoding_format": "base64"}, DIM, 2048, True)
