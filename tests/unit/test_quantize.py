"""Quantized output vectors (e5rt.core.quantize): the byte layouts of sentence-transformers' quantize_embeddings
and Cohere's embedding types, the calibration's thresholds, and the errors a caller can meet."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e5rt import Embedder
from e5rt.core.quantize import Calibration, calibrate, quantize, quantize_embeddings
from e5rt.errors import InvalidInputError


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32) + 0.3  # a shared direction
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.model  # imports sentence-transformers (torch)
def test_layouts_match_sentence_transformers() -> None:
    """With the same ranges and zero thresholds, every precision is byte for byte what
    sentence_transformers.quantize_embeddings gives."""
    st_quant = pytest.importorskip("sentence_transformers.quantization").quantize_embeddings
    calib, vecs = _vectors(300, 64, 1), _vectors(40, 64, 2)
    ranges = np.vstack([calib.min(axis=0), calib.max(axis=0)])
    for precision in ("int8", "uint8"):
        ours = quantize_embeddings(vecs, precision, ranges=ranges)
        theirs = st_quant(vecs, precision, ranges=ranges)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), precision
    for precision in ("binary", "ubinary"):
        ours = quantize_embeddings(vecs, precision, thresholds=0.0)
        theirs = st_quant(vecs, precision)
        assert ours.dtype == theirs.dtype and ours.shape == (40, 8) and np.array_equal(ours, theirs), precision
    assert np.array_equal(quantize(vecs, "binary-sign"), st_quant(vecs, "binary"))
    assert np.array_equal(quantize(vecs, "ubinary-sign"), st_quant(vecs, "ubinary"))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 20), dim=st.sampled_from([8, 16, 24, 384]), seed=st.integers(0, 10_000))
def test_bits_and_levels_follow_the_calibration(n: int, dim: int, seed: int) -> None:
    vecs = _vectors(n, dim, seed)
    cal = calibrate(_vectors(200, dim, seed + 1), 200, "test")
    ub = quantize(vecs, "ubinary", cal)
    assert ub.shape == (n, dim // 8) and ub.dtype == np.uint8
    assert np.array_equal(np.unpackbits(ub, axis=1)[:, :dim].astype(bool), vecs > cal.thresholds)
    assert np.array_equal(quantize(vecs, "binary", cal).astype(np.int16), ub.astype(np.int16) - 128)
    u8, i8 = quantize(vecs, "uint8", cal), quantize(vecs, "int8", cal)
    assert u8.dtype == np.uint8 and i8.dtype == np.int8
    assert np.array_equal(i8.astype(np.int16), u8.astype(np.int16) - 128)
    # a level stands for its part of the range: the value lies within one step of it (ends clipped)
    step = (cal.high - cal.low) / 255.0
    inside = (vecs >= cal.low) & (vecs <= cal.high)
    back = cal.low + u8 * step
    assert np.all(np.abs(back - vecs)[inside] <= step.repeat(n).reshape(dim, n).T[inside] + 1e-6)
    assert np.all(u8[vecs < cal.low] == 0) and np.all(u8[vecs > cal.high] == 255)


def test_calibration_round_trips_through_the_manifest_record() -> None:
    cal = calibrate(_vectors(100, 16), 100, "test")
    again = Calibration.from_manifest(cal.as_manifest())
    vecs = _vectors(5, 16, 3)
    for precision in ("int8", "ubinary"):
        assert np.array_equal(quantize(vecs, precision, cal), quantize(vecs, precision, again))
    assert again.method["texts"] == 100 and "median" in again.method["binary"]


def test_errors_say_what_to_do() -> None:
    vecs = _vectors(2, 16)
    with pytest.raises(InvalidInputError, match="e5rt export"):
        quantize(vecs, "int8", None)
    with pytest.raises(InvalidInputError, match="precision must be one of"):
        quantize(vecs, "int4", None)
    with pytest.raises(InvalidInputError, match="ranges must have shape"):
        quantize_embeddings(vecs, "int8", ranges=np.zeros((2, 8)))
    with pytest.raises(InvalidInputError, match="thresholds"):
        quantize_embeddings(vecs, "binary")
    with pytest.raises(InvalidInputError, match="full dimensions"):
        quantize(vecs[:, :8], "int8", calibrate(vecs, 2, "x"))


def test_the_library_gives_each_precision() -> None:
    emb = Embedder.fake(32)
    texts = ["a query about kimchi", "Paris is the capital of France.", "서울은 한국의 수도입니다."]
    floats = emb.encode(texts)
    cal = emb.calibration
    assert cal is not None and cal.dim == 32
    for precision in ("int8", "uint8", "binary", "ubinary", "binary-sign", "ubinary-sign"):
        got = emb.encode(texts, precision=precision)
        assert np.array_equal(got, quantize(floats, precision, cal)), precision
    assert emb.encode(texts[0], precision="ubinary").shape == (4,)
    assert emb.embed(texts, precision="int8").embeddings.dtype == np.int8
    with pytest.raises(InvalidInputError, match="normalize"):
        emb.encode(texts, normalize=False, precision="int8")
    with pytest.raises(InvalidInputError, match="full dimensions"):
        emb.encode(texts, dimensions=16, precision="int8")
