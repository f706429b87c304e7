"""The engine's per-call results, token-id input, configuration, and the queue it hands to servers, on the
deterministic fake model (no model files)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from e5rt import BatchOptions, Embedder, InputError, LoadOptions
from e5rt.config import environment
from e5rt.errors import ConfigError, QueueFullError

TEXTS = ["short", "a somewhat longer sentence here", "서울의 날씨는 맑음", "x" * 40, "", "tab\tand\nnewline"] * 5


@pytest.fixture(scope="module")
def fake() -> Embedder:
    return Embedder.fake(dim=16, max_length=64, batching=BatchOptions(max_batch_tokens=256))


def test_embed_returns_this_calls_stats(fake: Embedder) -> None:
    res = fake.embed(TEXTS)
    np.testing.assert_allclose(res.embeddings, fake.encode(TEXTS), atol=1e-7)
    s = res.stats
    lengths = fake.tokenizer.encode([f"passage: {t}" for t in TEXTS]).lengths
    assert s.texts == len(TEXTS) and s.tokens == sum(lengths)
    assert s.padded_tokens >= s.tokens and s.batches >= 2 and s.total_ms >= s.inference_ms >= 0
    assert s.tokenize_ms > 0 and s.queue_ms >= 0


def test_stats_are_per_call_and_last_stats_per_thread(fake: Embedder) -> None:
    barrier = threading.Barrier(8)

    def job(n: int) -> tuple[int, int, int]:
        texts = [f"thread text {n} number {i}" for i in range(n + 1)]
        barrier.wait(timeout=10)
        res = fake.embed(texts)
        return n + 1, res.stats.texts, fake.last_stats.texts

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(job, range(8)))
    assert all(want == got == last for want, got, last in results)


def test_encode_single_empty_and_batch_invariance(fake: Embedder) -> None:
    assert fake.encode("one").shape == (16,)
    assert fake.encode([]).shape == (0, 16)
    alone = np.stack([fake.encode(t) for t in TEXTS[:6]])
    np.testing.assert_allclose(fake.encode(TEXTS[:6]), alone, atol=1e-6)


def test_embed_tokens_validates_ids(fake: Embedder) -> None:
    ids = fake.tokenizer.encode(["passage: hello"]).ids  # complete model inputs: prompt included
    np.testing.assert_allclose(fake.embed_tokens([x.tolist() for x in ids]).embeddings, fake.encode("hello")[None])
    with pytest.raises(InputError, match="outside the vocabulary"):
        fake.embed_tokens([[0, 5, 10_000]])
    with pytest.raises(InputError, match="at most 64"):
        fake.embed_tokens([[5] * 65])
    with pytest.raises(InputError, match="non-empty list of int"):
        fake.embed_tokens([[]])
    with pytest.raises(InputError, match="non-empty list of int"):
        fake.embed_tokens([[1.5, 2.0]])


def test_queue_gives_each_caller_what_encode_gives(fake: Embedder) -> None:
    queue = fake.queue(max_queued_texts=10_000)
    try:
        jobs = [TEXTS[i : i + 1 + i % 7] for i in range(len(TEXTS))]

        def one(texts: list[str]) -> np.ndarray:
            work = fake.prepare(texts)  # what a server does with a request: the library's own prepare step
            vectors, _ = work.finish(fake.submit(queue, work))
            return vectors

        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(one, jobs))
        for texts, vecs in zip(jobs, got, strict=True):
            np.testing.assert_allclose(vecs, fake.encode(texts), atol=1e-5)
    finally:
        queue.close(timeout=10)


def test_queue_limit(fake: Embedder) -> None:
    slow = Embedder.fake(dim=8, delay_s=0.2)
    queue = slow.queue(max_queued_texts=4)
    try:
        queue.submit(slow.tokenize(["a", "b", "c"])[0].ids)
        with pytest.raises(QueueFullError):
            queue.submit(slow.tokenize(["d", "e"])[0].ids)
    finally:
        queue.close(timeout=10)


def test_options_are_validated_once() -> None:
    with pytest.raises(ConfigError, match="max_batch_tokens must be a positive integer"):
        BatchOptions(max_batch_tokens=0)
    with pytest.raises(ConfigError, match="min_efficiency"):
        BatchOptions(min_efficiency=1.5)
    with pytest.raises(ConfigError, match="unknown provider"):
        LoadOptions(provider="tpu")
    with pytest.raises(ConfigError, match="unknown load option"):
        LoadOptions.build(max_batch_token=5)
    opts = LoadOptions.build(provider="cpu", max_batch_tokens=1024, threads=2)
    assert opts.batching.max_batch_tokens == 1024 and opts.threads == 2
    assert opts.batching.resolved("cpu").pad_multiple == 1
    assert (
        BatchOptions().resolved("cuda").pad_multiple == 8
        and BatchOptions().resolved("cuda", packed=True).pad_multiple == 1
    )
    assert BatchOptions().resolved("cpu").max_batch_tokens == 4096


def test_environment_is_read_in_one_place(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = environment({"E5RT_CACHE": str(tmp_path), "E5RT_ASSUME_GPU": "1", "E5RT_MAX_BATCH_TOKENS": "2048"})
    assert env.cache_dir == tmp_path and env.assume_gpu
    assert env.flag_default("--max-batch-tokens") == "2048" and env.flag_default("--port") is None
    assert not environment({}).assume_gpu
