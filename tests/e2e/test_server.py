"""`e5rt serve` over real HTTP on 127.0.0.1: the official openai client, 64 concurrent clients against
Embedder.encode, overload, disconnects, SIGTERM drain, environment variables. The routes, bodies, errors and the
API key are checked in-process (tests/unit/test_protocol.py).

The fake model (no files, deterministic, batch-invariant) covers the protocol; real MiniLM covers parity.
"""

from __future__ import annotations

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


def test_env_variables_set_flags() -> None:
    env = {"E5RT_MAX_CLIENT_BATCH_SIZE": "3", "E5RT_ACCEPT_TOKEN_IDS": "1", "E5RT_LOG_LEVEL": "warning"}
    server = Server(f"fake:{FAKE_DIM}", env=env)
    try:
        limits = httpx.get(server.url + "/info").json()["limits"]
        assert limits["max_client_batch_size"] == 3 and limits["accept_token_ids"] is True
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
