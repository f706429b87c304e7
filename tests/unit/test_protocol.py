"""The HTTP protocol of `e5rt serve` in-process (tests/support/inprocess.py: the server's own app, model set and
queue, without a socket): every route's input shapes and fields, the TEI routes, info / health / models /
metrics / docs, 100+ malformed bodies, wrong methods and routes, the API key. The fake model (no files,
deterministic, batch-invariant) covers the protocol; tests/e2e/test_server.py keeps what needs a process
(sockets, signals, overload, disconnects) and real weights."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from e5rt import Embedder
from tests.support.inprocess import app_client

FAKE_DIM = 16


@pytest.fixture(scope="module")
def fake_model() -> Embedder:
    return Embedder.fake(FAKE_DIM)  # the same deterministic model the app serves


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with app_client([f"fake:{FAKE_DIM}"], max_client_batch_size=64, accept_token_ids=True) as c:
        yield c


def test_openai_route_every_input_shape_and_field(client: Any, fake_model: Embedder) -> None:
    texts = ["hello", "안녕하세요", "a longer passage about kimchi"]
    r = client.post("/v1/embeddings", json={"input": texts, "model": "x", "user": "u"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "fake"
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and body["data"][0]["object"] == "embedding"
    got = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, fake_model.encode(texts), atol=1e-6)
    lengths = fake_model.tokenizer.encode([f"passage: {t}" for t in texts]).lengths
    assert body["usage"] == {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)}
    for header in ("x-e5rt-queue-ms", "x-e5rt-inference-ms", "x-e5rt-tokenize-ms", "x-e5rt-total-ms"):
        assert float(r.headers[header]) >= 0
    # a bare string, base64, queries with a task, dimensions
    one = client.post("/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, fake_model.encode("hello"), atol=1e-6)
    # JSON floats are the float32 values themselves: read back as float32, they equal the base64 bytes bit for bit
    as_float = client.post("/v1/embeddings", json={"input": "hello"}).json()["data"][0]["embedding"]
    assert np.array_equal(np.asarray(as_float, dtype=np.float32), vec)
    q = client.post("/v1/embeddings", json={"input": "hello", "input_type": "query", "task": "sts"}).json()
    np.testing.assert_allclose(q["data"][0]["embedding"], fake_model.encode_queries("hello", task="sts"), atol=1e-6)
    cut = client.post("/v1/embeddings", json={"input": "hello", "dimensions": 4}).json()["data"][0]["embedding"]
    full = fake_model.encode("hello")[:4]
    np.testing.assert_allclose(cut, full / np.linalg.norm(full), atol=1e-6)
    # token ids are the complete model input: /tokenize's ids (same input_type and task, its default special
    # tokens) posted back give exactly the text's vector; one list, or a list of lists
    for fields in ({"input_type": "passage"}, {"input_type": "query", "task": "sts"}):
        toks = client.post("/tokenize", json={"inputs": "hello", **fields}).json()[0]
        ids = [t["id"] for t in toks]
        flat = client.post("/v1/embeddings", json={"input": ids, **fields}).json()["data"]
        text = client.post("/v1/embeddings", json={"input": "hello", **fields}).json()["data"]
        assert np.abs(np.subtract(flat[0]["embedding"], text[0]["embedding"])).max() <= 1e-6
    nested = client.post("/v1/embeddings", json={"input": [ids, ids[:3]]}).json()["data"]
    assert len(nested) == 2 and nested[0]["embedding"] == flat[0]["embedding"]
    # ids without the special tokens are embedded as sent (nothing added): another vector than the text's
    bare = client.post("/v1/embeddings", json={"input": ids[1:-1]}).json()["data"][0]["embedding"]
    np.testing.assert_allclose(bare, fake_model.embed_tokens([ids[1:-1]]).embeddings[0], atol=1e-6)
    too_long = client.post("/v1/embeddings", json={"input": [[5] * (fake_model.max_length + 1)]})
    assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "input_too_long"
    chunked = client.post("/v1/embeddings", json={"input": ids, "long_text": "chunk"})
    assert chunked.status_code == 422 and chunked.json()["error"]["param"] == "long_text"


def test_tei_routes(client: Any, fake_model: Embedder) -> None:
    r = client.post("/embed", json={"inputs": ["a", "b"], "normalize": False})
    assert r.status_code == 200
    raw = fake_model.encode(["a", "b"], normalize=False)
    np.testing.assert_allclose(np.asarray(r.json()), raw, atol=1e-5)
    q = client.post("/embed", json={"inputs": "a", "prompt_name": "query"}).json()
    np.testing.assert_allclose(q[0], fake_model.encode_queries("a"), atol=1e-6)
    long = "word " * 400
    assert client.post("/embed", json={"inputs": long}).status_code == 200  # auto-truncate by default
    refused = client.post("/embed", json={"inputs": ["ok", long], "truncate": False})
    assert refused.status_code == 413 and "input 1" in refused.json()["error"]["message"]
    sim = client.post("/similarity", json={"inputs": {"source_sentence": "kimchi", "sentences": ["kimchi", "xyz"]}})
    scores = sim.json()
    src = fake_model.encode_queries("kimchi")
    np.testing.assert_allclose(scores, fake_model.encode(["kimchi", "xyz"]) @ src, atol=1e-5)
    toks = client.post("/tokenize", json={"inputs": ["hé"]}).json()
    assert [t["special"] for t in toks[0]] == [True, False, False, False, True]
    assert toks[0][1]["start"] == 0 and toks[0][-2]["stop"] == 2


def test_info_health_models_metrics_docs(client: Any) -> None:
    info = client.get("/info").json()
    assert info["dim"] == FAKE_DIM and info["batch_invariant"] is True and "Matryoshka" in info["dimensions"]
    assert info["limits"]["max_client_batch_size"] == 64 and info["version"]
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake"
    metrics = client.get("/metrics").text
    for name in (
        "e5rt_requests_total",
        "e5rt_queue_texts",
        "e5rt_batch_size_bucket",
        "e5rt_batch_padding_efficiency_bucket",
        "e5rt_tokenize_seconds_bucket",
        "e5rt_queue_seconds_bucket",
        "e5rt_inference_seconds_bucket",
        "e5rt_request_seconds_bucket",
        "e5rt_dropped_texts_total",
    ):
        assert name in metrics, name
    assert "/v1/embeddings" in client.get("/docs").text
    assert "/embed" in client.get("/openapi.json").json()["paths"]


def _malformed() -> list[tuple[str, dict[str, str], bytes]]:
    j = {"content-type": "application/json"}
    cases: list[tuple[str, dict[str, str], bytes]] = [
        ("/v1/embeddings", j, b""),
        ("/v1/embeddings", j, b"{"),
        ("/v1/embeddings", j, b"null"),
        ("/v1/embeddings", j, b"[]"),
        ("/v1/embeddings", j, b"\xff\xfe\x00"),
        ("/v1/embeddings", j, b'{"input": 1e999999}'),
        ("/v1/embeddings", j, b'{"input": ' + b"9" * 5000 + b"}"),
        ("/v1/embeddings", j, b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("/v1/embeddings", {"content-type": "application/xml"}, b"<input/>"),
        ("/v1/embeddings", j, json.dumps({"input": "x", "encoding_format": "hex"}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": "x", "dimensions": 0}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": "x", "dimensions": True}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": "x", "input_type": "document"}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": "x", "task": ""}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": ["a", 1]}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": [[1, 2], []]}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": [10**30]}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": [-1]}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": [999_999]}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": [True]}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": ["x"] * 65}).encode()),
        ("/v1/embeddings", j, json.dumps({"input": "bad \ud800 text"}).encode()),
        ("/v1/embeddings", j, json.dumps({"inputs": "x"}).encode()),
        ("/embed", j, json.dumps({"inputs": [1, 2]}).encode()),
        ("/embed", j, json.dumps({"inputs": "x", "normalize": "yes"}).encode()),
        ("/embed", j, json.dumps({"inputs": "x", "prompt_name": "nope"}).encode()),
        ("/similarity", j, json.dumps({"inputs": {"sentences": ["a"]}}).encode()),
        ("/similarity", j, json.dumps({"inputs": "x"}).encode()),
        ("/tokenize", j, json.dumps({"inputs": None}).encode()),
        ("/v1/embeddings", j, b"x" * 2_100_000),
    ]
    rng = random.Random(7)
    alphabet = b'{}[]":,0123456789abcdefinput \\u\xff'
    while len(cases) < 130:
        junk = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        cases.append((rng.choice(["/v1/embeddings", "/embed", "/similarity", "/tokenize"]), j, junk))
    return cases


def test_malformed_requests_get_4xx_and_the_server_stays_healthy(client: Any, fake_model: Embedder) -> None:
    cases = _malformed()
    assert len(cases) >= 100
    for path, headers, body in cases:
        r = client.post(path, content=body, headers=headers)
        assert 400 <= r.status_code < 500, (path, body[:60], r.status_code, r.text[:200])
        err = r.json()["error"]
        assert err["message"] and err["type"] and "code" in err and "param" in err
    assert client.get("/health").status_code == 200
    ok = client.post("/v1/embeddings", json={"input": "still fine"}).json()["data"][0]["embedding"]
    np.testing.assert_allclose(ok, fake_model.encode("still fine"), atol=1e-6)


def test_wrong_method_and_route(client: Any) -> None:
    not_allowed = client.get("/v1/embeddings")
    assert not_allowed.status_code == 405 and not_allowed.headers["Allow"] == "POST"  # RFC 9110
    assert client.post("/v2/nothing", json={}).json()["error"]["code"] == "not_found"


def test_api_key() -> None:
    body = {"input": "x"}
    with app_client([f"fake:{FAKE_DIM}"], api_key="s3cret") as c:
        assert c.post("/v1/embeddings", json=body).status_code == 401
        assert c.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200  # probes need no key
        assert c.get("/info").status_code == 401
