"""Pure stages: prompts, planning (with hypothesis), pooling, similarity/search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e5rt.config import BatchOptions, default_pad_allowance
from e5rt.core.plan import CostRule, padded_length, plan, plan_batches
from e5rt.core.pool import cls_pool, l2_normalize, mean_pool, pool_sum
from e5rt.core.prompts import TASKS, format_texts, resolve_task
from e5rt.errors import ConfigError
from e5rt.ops import search, similarity


def test_instruct_prompts() -> None:
    q = format_texts(["AI 윤리"], "instruct", "query", "sts")
    assert q == ["Instruct: Retrieve semantically similar text.\nQuery: AI 윤리"]
    assert format_texts(["doc"], "instruct", "passage", "sts") == ["doc"]
    default = format_texts(["x"], "instruct", "query")[0]
    assert default == f"Instruct: {TASKS['web_search']}\nQuery: x"
    assert format_texts(["x"], "instruct", "query", "Find recipes")[0] == "Instruct: Find recipes\nQuery: x"


def test_query_passage_and_none_prompts() -> None:
    assert format_texts(["a", "b"], "query-passage", "query") == ["query: a", "query: b"]
    assert format_texts(["a"], "query-passage", "passage") == ["passage: a"]
    assert format_texts(["a"], "none", "query") == ["a"]
    with pytest.raises(ValueError, match="kind"):
        format_texts(["a"], "none", "document")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt scheme"):
        format_texts(["a"], "weird", "query")


def test_task_table_covers_e5_tasks() -> None:
    assert resolve_task("sts") == "Retrieve semantically similar text."
    assert resolve_task("bitext") == "Retrieve parallel sentences."
    for name in ("web_search", "qa", "summarization", "classification_sentiment", "clustering_topic"):
        assert name in TASKS
    with pytest.raises(ValueError):
        resolve_task("  ")


lengths_strategy = st.lists(st.integers(min_value=1, max_value=600), min_size=0, max_size=200)


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_strategy, budget=st.integers(min_value=1, max_value=5000), mult=st.sampled_from([1, 8]))
def test_plan_invariants(lengths: list[int], budget: int, mult: int) -> None:
    batches = plan_batches(lengths, budget, pad_multiple=mult)
    seen = [i for b in batches for i in b.indices]
    assert sorted(seen) == list(range(len(lengths)))  # every input exactly once
    for b in batches:
        assert b.width == max(padded_length(lengths[i], mult) for i in b.indices)
        # Budget kept, except a single text that alone exceeds it.
        assert b.padded_tokens <= budget or len(b.indices) == 1


@settings(max_examples=100, deadline=None)
@given(lengths=lengths_strategy, budget=st.integers(min_value=1, max_value=5000))
def test_packed_plan_budgets_real_tokens(lengths: list[int], budget: int) -> None:
    for b in plan_batches(lengths, budget, packed=True):
        assert sum(lengths[i] for i in b.indices) <= budget or len(b.indices) == 1


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=60),
    budget=st.integers(min_value=1, max_value=300),
)
def test_order_restored_through_plan(lengths: list[int], budget: int) -> None:
    """Scattering per-batch results back by index reproduces input order for any list."""
    values = np.arange(len(lengths), dtype=np.float32) * 3 + 1
    out = np.zeros_like(values)
    for b in plan_batches(lengths, budget):
        rows = list(b.indices)
        out[rows] = values[rows]
    np.testing.assert_array_equal(out, values)


def test_plan_sorts_by_length_and_caps_size() -> None:
    batches = plan_batches([5, 1, 3, 2], 100, max_batch_size=2)
    assert [b.indices for b in batches] == [(1, 3), (2, 0)]
    with pytest.raises(ValueError):
        plan_batches([1], 0)


def test_mean_pool_against_hand_computed() -> None:
    hidden = np.array(
        [[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], dtype=np.float32
    )
    mask = np.array([[1, 1, 0], [1, 0, 0]], dtype=np.int64)
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 3.0], [2.0, 0.0]])
    sums, counts = pool_sum(hidden, mask)
    np.testing.assert_allclose(sums, [[4.0, 6.0], [2.0, 0.0]])
    np.testing.assert_allclose(counts, [2.0, 1.0])
    np.testing.assert_allclose(cls_pool(hidden), [[1.0, 2.0], [2.0, 0.0]])


def test_pool_accumulates_fp16_in_fp32() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 40, 8)).astype(np.float16)
    mask = (rng.random((3, 40)) > 0.3).astype(np.int64)
    mask[:, 0] = 1
    expected = (hidden.astype(np.float64) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    got = mean_pool(hidden, mask)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_l2_normalize_and_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])


def test_similarity_and_search() -> None:
    corpus = np.array([[1, 0, 0], [0, 1, 0], [0.7, 0.7, 0], [0, 0, 1]], dtype=np.float32)
    q = np.array([[1, 0.1, 0]], dtype=np.float32)
    sim = similarity(q, corpus)
    assert sim.shape == (1, 4)
    idx, scores = search(q, corpus, k=2)
    assert idx.tolist() == [[0, 2]]
    assert scores[0, 0] >= scores[0, 1]
    idx_all, _ = search(q, corpus, k=10)
    assert idx_all.shape == (1, 4)
    np.testing.assert_allclose(similarity(corpus)[np.arange(4), np.arange(4)], 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="dimension mismatch"):
        similarity(q, np.ones((2, 5)))


@settings(max_examples=150, deadline=None)
@given(
    lengths=lengths_strategy, budget=st.integers(min_value=1, max_value=5000), min_eff=st.sampled_from([0.5, 0.9, 0.95])
)
def test_min_efficiency_cut(lengths: list[int], budget: int, min_eff: float) -> None:
    batches = plan_batches(lengths, budget, min_efficiency=min_eff)
    assert sorted(i for b in batches for i in b.indices) == list(range(len(lengths)))
    for b in batches:
        real = sum(lengths[i] for i in b.indices)
        assert len(b.indices) == 1 or real >= min_eff * b.padded_tokens
        assert b.padded_tokens <= budget or len(b.indices) == 1


@settings(max_examples=150, deadline=None)
@given(lengths=lengths_strategy, budget=st.integers(min_value=1, max_value=5000), allowance=st.integers(0, 64))
def test_pad_allowance_bounds_the_waste_of_a_batch_below_min_efficiency(
    lengths: list[int], budget: int, allowance: int
) -> None:
    batches = plan(lengths, CostRule(budget, min_efficiency=0.95, pad_allowance=allowance))
    assert sorted(i for b in batches for i in b.indices) == list(range(len(lengths)))
    for b in batches:
        real = sum(lengths[i] for i in b.indices)
        waste = b.padded_tokens - real
        assert len(b.indices) == 1 or real >= 0.95 * b.padded_tokens or waste <= allowance
        assert b.padded_tokens <= budget or len(b.indices) == 1


def test_pad_allowance_joins_queries_of_near_lengths() -> None:
    # 13- and 14-token queries: 13/14 = 93 % real, under the 95 % rule, so without an allowance two runs
    lengths = [13] * 4 + [14] * 4
    assert len(plan(lengths, CostRule(4096, min_efficiency=0.95))) == 2
    assert len(plan(lengths, CostRule(4096, min_efficiency=0.95, pad_allowance=4))) == 1


def test_default_pad_allowance_scales_with_width_on_cpu_only() -> None:
    assert default_pad_allowance("cpu", 384) == 16
    assert default_pad_allowance("cpu", 1024) == 2  # a token costs ~7x more
    assert default_pad_allowance("cpu", 16) == 16  # never above the measured value
    assert default_pad_allowance("cuda", 384) == 0
    assert BatchOptions().resolved("cpu", hidden=1024).pad_allowance == 2
    assert BatchOptions(pad_allowance=0).resolved("cpu", hidden=384).pad_allowance == 0
    with pytest.raises(ConfigError, match="pad_allowance"):
        BatchOptions(pad_allowance=-1)
    with pytest.raises(ConfigError, match="pad_allowance"):
        CostRule(512, pad_allowance=-1)
