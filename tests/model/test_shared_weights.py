"""A server's sessions of one graph map its weights from the model file: the runtime's own rewriting of the
graph against the onnx package's reading, and the worker sessions' embeddings against encode on real weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from e5rt_export.probes import probe_texts

from e5rt import Embedder
from e5rt.backends.weights import MIN_MAPPED_BYTES, by_reference
from e5rt.errors import IntegrityError

TEXTS = probe_texts()


def _outputs(graph: str | bytes, folder: Path) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
    sess = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    out = []
    for batch, width in ((1, 5), (3, 17), (8, 40)):
        ids = rng.integers(5, 200, (batch, width)).astype(np.int64)
        feeds = {
            i.name: ids if i.name == "input_ids" else (np.zeros_like(ids) if "type" in i.name else np.ones_like(ids))
            for i in sess.get_inputs()
        }
        out.append(sess.run(None, feeds)[0])
    return out


def _assert_maps_what_it_embeds(path: Path) -> None:
    """Every embedded weight of MIN_MAPPED_BYTES or more becomes a reference to its own bytes in the file, the
    rest of the graph is unchanged, and ONNX Runtime computes bit-identical outputs from it."""
    mapped = by_reference(path)
    before, after = onnx.load(str(path), load_external_data=False), onnx.load_from_string(mapped)
    assert [n.SerializeToString() for n in before.graph.node] == [n.SerializeToString() for n in after.graph.node]
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in after.graph.initializer)
    for old, new in zip(before.graph.initializer, after.graph.initializer, strict=True):
        assert (old.name, list(old.dims), old.data_type) == (new.name, list(new.dims), new.data_type)
        if old.raw_data and len(old.raw_data) >= MIN_MAPPED_BYTES:
            assert new.data_location == onnx.TensorProto.EXTERNAL and not new.raw_data
            where = {e.key: e.value for e in new.external_data}
            assert where["location"] == path.name
            start, length = int(where["offset"]), int(where["length"])
            assert path.read_bytes()[start : start + length] == old.raw_data
        else:
            assert old.SerializeToString() == new.SerializeToString()
    for a, b in zip(_outputs(str(path), path.parent), _outputs(mapped, path.parent), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8", "int8-static"])
def test_weights_mapped_from_the_file(tiny_models: dict[str, Path], variant: str) -> None:
    _assert_maps_what_it_embeds(tiny_models["xlm-roberta"] / variant / "model.onnx")


def test_weights_already_in_an_external_data_file_stay_there(minilm_model: Path, tmp_path: Path) -> None:
    """Graphs over 2 GB (multilingual-e5-large in fp32) keep their weights in a file beside the graph."""
    model = onnx.load(str(minilm_model / "fp32" / "model.onnx"))
    out = tmp_path / "model.onnx"
    onnx.save_model(model, str(out), save_as_external_data=True, location="model.onnx.data", size_threshold=1024)
    assert (tmp_path / "model.onnx.data").stat().st_size > 10_000_000
    mapped = by_reference(out)
    assert mapped == onnx.load(str(out), load_external_data=False).SerializeToString()
    for a, b in zip(_outputs(str(out), tmp_path), _outputs(mapped, tmp_path), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_file_that_is_not_a_graph_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x3a\xff\xff\xff\x0f" + b"\x00" * 64)  # a graph field claiming 4 GB, the file cut short
    with pytest.raises(IntegrityError, match="cannot read the graph"):
        by_reference(bad)


@pytest.mark.parametrize("share", [True, False])
def test_worker_sessions_hold_one_copy_and_embed_like_encode(minilm_model: Path, share: bool) -> None:
    """Served on two threads: two one-thread worker sessions plus the two-thread one for a lone text, all
    mapping the weights from the file (share_weights at load, or a reload so at queue()), and every path gives
    encode's vectors: a lone text (wide session), a lone batch split between the workers, many requests."""
    emb = Embedder.load(minilm_model, variant="fp32", provider="cpu", threads=2, share_weights=share)
    assert (emb.backend._mapped is not None) is share
    expected = emb.encode(TEXTS)
    queue = emb.queue()
    try:
        assert queue.workers == 2 and queue.wide is emb.backend
        assert queue.backend.threads == 1 and emb.backend.threads == 2
        assert emb.backend._mapped is not None and queue.backend._mapped is emb.backend._mapped

        def served(texts: list[str]) -> np.ndarray:  # what the server does: the library's prepare, queued
            work = emb.prepare(texts)
            return np.asarray(work.finish(emb.submit(queue, work))[0])

        np.testing.assert_allclose(served(TEXTS[:1]), expected[:1], atol=1e-6)
        np.testing.assert_allclose(served(TEXTS), expected, atol=1e-6)
        several = [emb.prepare(TEXTS[i : i + 3]) for i in range(0, len(TEXTS), 3)]
        submitted = [emb.submit(queue, w) for w in several]  # all queued before any is awaited
        got = np.concatenate([w.finish(s)[0] for w, s in zip(several, submitted, strict=True)])
        np.testing.assert_allclose(got, expected, atol=1e-6)
    finally:
        assert queue.close(timeout=30)
    np.testing.assert_allclose(emb.encode(TEXTS), expected, atol=1e-6)  # encode still runs on its session


def test_a_graph_onnxruntime_cannot_map_is_loaded_as_a_copy(
    tiny_models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """An onnxruntime that refuses the mapped graph (one without the folder config entry) still serves."""
    from e5rt.backends.ort import OrtBackend

    backend = OrtBackend(tiny_models["xlm-roberta"] / "fp32" / "model.onnx", "cpu", threads=1, share_weights=True)
    assert backend._mapped is not None
    backend._mapped = b"\x08\x07 not a graph"
    with caplog.at_level("WARNING", logger="e5rt"):
        session = backend._session(1)
    assert backend._mapped is None and "cannot map" in caplog.text
    assert [i.name for i in session.get_inputs()] == list(backend.input_names)
