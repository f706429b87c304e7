"""The block-quantized word-embedding table: the quantizer's error bound, the graph rewrite against the fused
graph it replaces (padded batches, every position), and what the export records and publishes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from e5rt_export.embedding_table import (
    TableNotRewritable,
    block_for,
    dequantize_block_rows,
    quantize_block_rows,
    quantize_embedding_table,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from e5rt import Embedder
from e5rt.manifest import load_manifest

TEXTS = [
    "서울의 오늘 날씨는 맑고 따뜻합니다.",
    "ok",
    "The quick brown fox jumps over the lazy dog. " * 6,
    "東京の天気は晴れです。",
    "Москва — столица России.",
]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 12),
    blocks=st.integers(1, 4),
    block=st.sampled_from([16, 32]),
    scale=st.floats(1e-4, 10.0),
    seed=st.integers(0, 2**16),
)
def test_block_quantization_error_is_within_half_a_step(
    rows: int, blocks: int, block: int, scale: float, seed: int
) -> None:
    table = (np.random.default_rng(seed).standard_normal((rows, blocks * block)) * scale).astype(np.float32)
    table[0] = 0.0  # padding rows are all zero and must stay exactly zero
    q, s, z = quantize_block_rows(table, block)
    assert q.dtype == np.uint8 and s.shape == z.shape == (rows, blocks)
    back = dequantize_block_rows(q, s, z)
    step = np.repeat(s, block, axis=1)
    assert np.all(np.abs(back - table) <= step * 0.5 + 1e-6 * scale)
    assert np.all(back[0] == 0.0)


def test_block_size_follows_the_width() -> None:
    assert block_for(1024) == 32 and block_for(384) == 32 and block_for(48) == 16 and block_for(40) is None


def test_rewrite_matches_the_fused_graph_on_padded_batches(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """fp32 graph vs the same graph with its table rewritten: every text alone and in a mixed padded batch."""
    model_dir = tiny_models["xlm-roberta"]
    manifest = load_manifest(model_dir)
    src = model_dir / "fp32" / "model.onnx"
    dest = tmp_path / "model.onnx"
    info = quantize_embedding_table(src, dest, manifest.raw["architecture"]["vocab_size"])
    assert info["bytes"] < info["fp32_bytes"] / 3 and info["min_row_cos"] >= 0.9999
    ops = [n.op_type for n in onnx.load(str(dest)).graph.node]
    assert "GatherBlockQuantized" in ops and "EmbedLayerNormalization" not in ops
    from e5rt.engine import ModelSpec

    spec = ModelSpec(dim=manifest.dim, pad_token_id=manifest.pad_token_id, max_length=manifest.max_length)
    tok = model_dir / manifest.tokenizer
    ref = Embedder.from_onnx(src, tok, spec).encode(TEXTS)
    new = Embedder.from_onnx(dest, tok, spec)
    got = new.encode(TEXTS)
    assert np.sum(ref * got, axis=1).min() >= 0.9999
    alone = np.stack([new.encode([t])[0] for t in TEXTS])
    assert np.abs(alone - got).max() <= 1e-5


def test_rewrite_refuses_a_graph_without_the_fused_embedding(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    src = tiny_models["bert"] / "int8-static" / "model.onnx"  # already rewritten: no EmbedLayerNormalization
    vocab = load_manifest(tiny_models["bert"]).raw["architecture"]["vocab_size"]
    with pytest.raises(TableNotRewritable, match=f"0 Gathers read a constant table of {vocab} rows"):
        quantize_embedding_table(src, tmp_path / "again.onnx", vocab)
    assert not (tmp_path / "again.onnx").exists()


def test_int8_variants_publish_the_quantized_table(tiny_models: dict[str, Path]) -> None:
    manifest = load_manifest(tiny_models["xlm-roberta"])
    for name in ("int8", "int8-static"):
        table = manifest.variants[name].raw["embedding_table"]
        assert table["method"].startswith("GatherBlockQuantized") and table["bytes"] < table["fp32_bytes"]
    assert manifest.variants["fp32"].raw["embedding_table"]["method"] == "fp32 (as exported)"


def test_embedding_table_int8_applies_to_fp32_too(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from e5rt_export import ExportOptions, export_model

    out = tmp_path / "qt"
    export_model(
        str(tiny_checkpoints["bert"]),
        out,
        ExportOptions(variants=("fp32",), embedding_table="int8", progress=False),
    )
    v = load_manifest(out).variants["fp32"]
    assert v.raw["embedding_table"]["method"].startswith("GatherBlockQuantized")
    assert v.parity.passed and v.raw["batch_invariant"] is True


def test_unknown_embedding_table_choice_is_one_clear_error(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from e5rt_export import ExportOptions, export_model
    from e5rt_export.errors import ExportOptionError

    with pytest.raises(ExportOptionError, match="--embedding-table"):
        export_model(str(tiny_checkpoints["bert"]), tmp_path / "x", ExportOptions(embedding_table="int4"))
    assert not (tmp_path / "x").exists()


def test_unfused_graph_gets_its_gather_replaced(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """Graphs the optimizer leaves unfused (XLM-R-large over 2 GB) keep a plain Gather from the table."""
    import onnxruntime as ort
    from e5rt_export import graph

    config = json.loads((tiny_checkpoints["xlm-roberta"] / "config.json").read_text())
    raw = graph.export_raw(tiny_checkpoints["xlm-roberta"], tmp_path / "raw", config)
    dest = tmp_path / "q" / "model.onnx"
    vocab = json.loads((tiny_checkpoints["xlm-roberta"] / "config.json").read_text())["vocab_size"]
    info = quantize_embedding_table(raw, dest, vocab)
    assert info["min_row_cos"] >= 0.9999
    ops = [n.op_type for n in onnx.load(str(dest)).graph.node]
    assert "GatherBlockQuantized" in ops
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 200, size=(3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    names = [i.name for i in ort.InferenceSession(str(raw)).get_inputs()]
    feeds = {k: v for k, v in {**feeds, "token_type_ids": np.zeros_like(ids)}.items() if k in names}
    a = ort.InferenceSession(str(raw)).run(None, feeds)[0]
    b = ort.InferenceSession(str(dest)).run(None, feeds)[0]
    cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert cos.min() >= 0.999
