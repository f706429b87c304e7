"""A server's sessions of one graph share its weights: the runtime's own protobuf reading against the onnx
package's, and the worker sessions' embeddings against the library's encode on real weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from e5rt_export.probes import probe_texts
from onnx import numpy_helper

from e5rt import Embedder
from e5rt.backends.weights import MIN_SHARED_BYTES, read_initializers
from e5rt.errors import IntegrityError

TEXTS = probe_texts()


def _reference(path: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(path)).graph
    return {t.name: numpy_helper.to_array(t, base_dir=str(path.parent)) for t in graph.initializer}


def _assert_read_like_onnx(path: Path) -> None:
    mine, ref = read_initializers(path), _reference(path)
    assert mine, "no weights read"
    for name, array in mine.items():
        assert array.dtype == ref[name].dtype and array.shape == ref[name].shape, name
        np.testing.assert_array_equal(array, ref[name])
        assert array.flags.c_contiguous and array.flags.aligned
    # what is left out is small, or a tensor stored in typed fields (ONNX Runtime loads those itself)
    assert all(ref[n].nbytes < MIN_SHARED_BYTES or n in mine for n in ref if ref[n].nbytes >= 1 << 16)


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8", "int8-static"])
def test_weights_read_like_the_onnx_package(tiny_models: dict[str, Path], variant: str) -> None:
    _assert_read_like_onnx(tiny_models["xlm-roberta"] / variant / "model.onnx")


def test_weights_in_an_external_data_file(minilm_model: Path, tmp_path: Path) -> None:
    """Graphs over 2 GB (multilingual-e5-large in fp32) keep their weights in a file beside the graph."""
    model = onnx.load(str(minilm_model / "fp32" / "model.onnx"))
    out = tmp_path / "model.onnx"
    onnx.save_model(model, str(out), save_as_external_data=True, location="model.onnx.data", size_threshold=1024)
    assert (tmp_path / "model.onnx.data").stat().st_size > 10_000_000
    _assert_read_like_onnx(out)


def test_a_file_that_is_not_a_graph_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x3a\xff\xff\xff\x0f" + b"\x00" * 64)  # graph field claiming 4 GB, file cut short
    with pytest.raises(IntegrityError, match="cannot read the graph's weights"):
        read_initializers(bad)


@pytest.mark.parametrize("share", [True, False])
def test_worker_sessions_hold_one_copy_and_embed_like_encode(minilm_model: Path, share: bool) -> None:
    """Served on two threads: two one-thread worker sessions plus the two-thread one for a lone text, all on
    the same arrays (share_weights at load, or a reload on them at queue()), and every path gives encode's
    vectors: a lone text (wide session), a lone batch split between the workers, and many requests at once."""
    emb = Embedder.load(minilm_model, variant="fp32", provider="cpu", threads=2, share_weights=share)
    assert bool(emb.backend._shared) is share
    expected = emb.encode(TEXTS)
    queue = emb.queue()
    try:
        assert queue.workers == 2 and queue.wide is emb.backend
        assert queue.backend.threads == 1 and emb.backend.threads == 2
        shared = emb.backend._shared
        assert shared and queue.backend._shared is shared
        ids = emb.tokenize(TEXTS, "passage")[0].ids
        one = emb.result(queue.submit(ids[:1]))
        np.testing.assert_allclose(one.embeddings, expected[:1], atol=1e-6)
        whole = emb.result(queue.submit(ids))
        np.testing.assert_allclose(whole.embeddings, expected, atol=1e-6)
        several = [queue.submit(ids[i : i + 3]) for i in range(0, len(ids), 3)]
        got = np.concatenate([emb.result(s).embeddings for s in several])
        np.testing.assert_allclose(got, expected, atol=1e-6)
    finally:
        assert queue.close(timeout=30)
    np.testing.assert_allclose(emb.encode(TEXTS), expected, atol=1e-6)  # encode still runs on its session
