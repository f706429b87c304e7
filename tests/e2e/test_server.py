"""`e5rt serve` over real HTTP on 127.0.0.1: every route, the official openai client, 64 concurrent clients
against Embedder.encode, overload, malformed bodies, disconnects, SIGTERM drain and the API key.

The fake model (no files, deterministic, batch-invariant) covers the protocol; real MiniLM covers parity.
"""

from __future__ import annotations

import base64
import json
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from e5rt import Embedder
from tests.support.serving import Server

FAKE_DIM = 16


@pytest.fixture(scope="module")
def fake_server() -> Iterator[Server]:
    server = Server(f"fake:{FAKE_DIM}", "--max-client-batch-size", "64", "--accept-token-ids", "--log-level", "warning")
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def fake_model() -> Embedder:
    return Embedder.fake(FAKE_DIM)  # the same deterministic model the server runs


@pytest.fixture(scope="module")
def client(fake_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_server.url, timeout=30) as c:
        yield c


def test_openai_route_every_input_shape_and_field(client: httpx.Client, fake_model: Embedder) -> None:
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


def test_tei_routes(client: httpx.Client, fake_model: Embedder) -> None:
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


def test_info_health_models_metrics_docs(client: httpx.Client) -> None:
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


def test_official_openai_client(fake_server: Server, fake_model: Embedder) -> None:
    from openai import OpenAI

    oa = OpenAI(base_url=fake_server.url + "/v1", api_key="unused", max_retries=0)
    texts = ["서울", "Paris is in France"]
    default = oa.embeddings.create(model="fake", input=texts)  # the client asks for base64 and decodes it
    floats = oa.embeddings.create(model="fake", input=texts, encoding_format="float")
    want = fake_model.encode(texts)
    for resp in (default, floats):
        np.testing.assert_allclose([d.embedding for d in resp.data], want, atol=1e-6)
    assert default.usage.total_tokens > 0
    from openai import UnprocessableEntityError

    with pytest.raises(UnprocessableEntityError, match="empty"):
        oa.embeddings.create(model="fake", input=[])


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


def test_malformed_requests_get_4xx_and_the_server_stays_healthy(client: httpx.Client, fake_model: Embedder) -> None:
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


def test_wrong_method_and_route(client: httpx.Client) -> None:
    not_allowed = client.get("/v1/embeddings")
    assert not_allowed.status_code == 405 and not_allowed.headers["Allow"] == "POST"  # RFC 9110
    assert client.post("/v2/nothing", json={}).json()["error"]["code"] == "not_found"


def test_api_key() -> None:
    server = Server(f"fake:{FAKE_DIM}", "--api-key", "s3cret", "--log-level", "warning")
    try:
        url = server.url + "/v1/embeddings"
        assert httpx.post(url, json={"input": "x"}).status_code == 401
        assert httpx.post(url, json={"input": "x"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(url, json={"input": "x"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(server.url + "/health").status_code == 200  # probes need no key
        assert httpx.get(server.url + "/info").status_code == 401
    finally:
        assert server.stop() == 0


def test_env_variables_set_flags() -> None:
    server = Server(f"fake:{FAKE_DIM}", env={"E5RT_MAX_CLIENT_BATCH_SIZE": "3", "E5RT_LOG_LEVEL": "warning"})
    try:
        assert httpx.get(server.url + "/info").json()["limits"]["max_client_batch_size"] == 3
        assert httpx.post(server.url + "/v1/embeddings", json={"input": ["a"] * 4}).status_code == 413
    finally:
        assert server.stop() == 0


def test_overload_gives_429_with_retry_after_then_recovers() -> None:
    # 200 ms per batch; at most 4 texts queued; a batch holds one text (budget 8 tokens)
    server = Server(
        f"fake:{FAKE_DIM}:200", "--max-concurrent-requests", "4", "--max-client-batch-size", "4",
        "--max-batch-tokens", "8", "--log-level", "warning",
    )  # fmt: skip
    try:
        url = server.url + "/v1/embeddings"
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: httpx.post(url, json={"input": ["abc"] * 2}, timeout=30), range(8)))
        statuses = [r.status_code for r in codes]
        assert 429 in statuses and 200 in statuses, statuses
        limited = next(r for r in codes if r.status_code == 429)
        assert int(limited.headers["Retry-After"]) >= 1 and limited.json()["error"]["code"] == "overloaded"
        deadline = time.monotonic() + 20
        while httpx.get(server.url + "/metrics").text.count("e5rt_queue_texts 0.0") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert httpx.post(url, json={"input": ["abc"]}, timeout=30).status_code == 200
    finally:
        assert server.stop() == 0


def _dropped(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("e5rt_dropped_texts_total"):
            return float(line.split()[-1])
    return 0.0


def test_client_disconnect_drops_its_queued_texts() -> None:
    server = Server(f"fake:{FAKE_DIM}:100", "--max-batch-tokens", "8", "--log-level", "warning")
    try:
        body = json.dumps({"input": [f"t{i}" for i in range(30)]}).encode()  # 30 batches of 100 ms
        request = (
            f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request)
            time.sleep(0.5)  # a few batches run, then the client leaves
        deadline = time.monotonic() + 10
        while _dropped(server.url) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        dropped = _dropped(server.url)
        assert 10 <= dropped <= 29, dropped
        assert httpx.get(server.url + "/health").status_code == 200
    finally:
        assert server.stop() == 0


def test_sigterm_finishes_requests_in_flight_then_exits_0() -> None:
    server = Server(f"fake:{FAKE_DIM}:300", "--max-batch-tokens", "8", "--log-level", "warning")
    result: dict[str, object] = {}

    def slow_request() -> None:
        r = httpx.post(server.url + "/v1/embeddings", json={"input": ["aa", "bb", "cc"]}, timeout=30)
        result["status"] = r.status_code
        result["rows"] = len(r.json()["data"])

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.3)  # the request is in the queue (3 batches of 300 ms)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert result == {"status": 200, "rows": 3}
    assert server.stop() == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url + "/health", timeout=1)


def test_a_stop_never_outlives_the_shutdown_timeout_by_much() -> None:
    """Work that cannot finish within --shutdown-timeout is dropped when it passes: the process exits 0 soon
    after, not after the queue's own wait on top (a supervisor would SIGKILL it)."""
    server = Server(f"fake:{FAKE_DIM}:200", "--max-batch-tokens", "8", "--shutdown-timeout", "2")
    result: dict[str, object] = {}

    def long_request() -> None:  # 100 batches of 200 ms: 20 s of work
        try:
            result["status"] = httpx.post(server.url + "/v1/embeddings", json={"input": ["aa"] * 100}, timeout=60)
        except httpx.HTTPError as exc:
            result["status"] = type(exc).__name__

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=30)
    thread.join(timeout=30)
    assert code == 0 and time.monotonic() - started < 6, (code, time.monotonic() - started, server.output())
    assert "passed with work queued; dropping it" in server.output()
    server.stop()


def test_bad_model_path_is_one_line_error(tmp_path: Path) -> None:
    import subprocess

    from tests.support.serving import E5RT

    proc = subprocess.run([str(E5RT), "serve", str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("e5rt: error: ") and "Traceback" not in proc.stderr


# --- real weights: parity under load -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_server(minilm_model: Path) -> Iterator[Server]:
    server = Server(str(minilm_model), "--variant", "fp32", "--provider", "cpu", "--log-level", "warning")
    yield server
    assert server.stop() == 0


def test_64_concurrent_clients_each_get_what_encode_gives(minilm_server: Server, minilm_model: Path) -> None:
    from e5rt_export.probes import probe_texts

    pool_texts = probe_texts()
    rng = random.Random(11)
    jobs = [rng.sample(pool_texts, rng.randint(1, 6)) for _ in range(192)]
    emb = Embedder.load(minilm_model, variant="fp32", provider="cpu")
    expected = {t: v for t, v in zip(pool_texts, emb.encode(pool_texts), strict=True)}

    def one(texts: list[str]) -> tuple[list[str], np.ndarray]:
        r = httpx.post(minilm_server.url + "/v1/embeddings", json={"input": texts}, timeout=120)
        assert r.status_code == 200, r.text
        return texts, np.asarray([d["embedding"] for d in r.json()["data"]], dtype=np.float32)

    t0 = time.monotonic()
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, jobs))
    assert time.monotonic() - t0 < 300
    worst = 0.0
    for texts, got in results:
        want = np.stack([expected[t] for t in texts])
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= 1e-5, worst


def test_openai_client_on_real_weights(minilm_server: Server, minilm_model: Path) -> None:
    from openai import OpenAI

    oa = OpenAI(base_url=minilm_server.url + "/v1", api_key="unused", max_retries=0)
    texts = ["The cat sits on the mat.", "고양이가 매트 위에 앉아 있다."]
    got = np.asarray([d.embedding for d in oa.embeddings.create(model="m", input=texts).data])
    want = Embedder.load(minilm_model, variant="fp32", provider="cpu").encode(texts)
    assert np.abs(got - want).max() <= 1e-5


def test_info_says_which_variants_are_batch_invariant(tiny_models: dict[str, Path]) -> None:
    """Dynamic int8 quantizes activations per batch, so behind a batching server its vectors follow the traffic."""
    fp32 = Embedder.load(tiny_models["bert"], variant="fp32", provider="cpu", warmup=False)
    int8 = Embedder.load(tiny_models["bert"], variant="int8", provider="cpu", warmup=False)
    assert fp32.batch_invariant is True and int8.batch_invariant is False
