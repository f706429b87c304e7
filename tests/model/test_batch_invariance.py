"""A text's vector alone against inside a batch of other texts, for every CPU variant of the tiny exports: the
variants the manifest calls batch-invariant must be (≤ 1e-5), and the ones it calls batch-dependent must really
move (so the label is measured, not assumed). `variant="auto"` must pick a batch-invariant variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from e5rt import Embedder
from e5rt.manifest import load_manifest

TARGET = "서울의 오늘 날씨는 맑고 따뜻합니다."
NEIGHBOURS = [
    "ok",
    "The quick brown fox jumps over the lazy dog. " * 12,  # long: sets the batch's width
    "東京の天気は晴れです。",
    "Москва — столица России, крупнейший по численности населения город страны.",
    "données très été 🙂 " * 5,
    "def f(x):\n    return x * 2",
]


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
def test_every_variant_alone_equals_in_a_batch_or_is_marked(tiny_models: dict[str, Path], kind: str) -> None:
    manifest = load_manifest(tiny_models[kind])
    checked = []
    for name, variant in manifest.variants.items():
        if "cpu" not in variant.providers:
            continue
        # min_efficiency=0: the planner must not split these mixed lengths into batches of their own.
        emb = Embedder.load(tiny_models[kind], variant=name, provider="cpu", min_efficiency=0.0)
        texts = [TARGET, *NEIGHBOURS]
        alone = np.stack([emb.encode([t])[0] for t in texts])
        diffs = [float(np.abs(emb.encode(texts) - alone).max())]
        diffs.append(float(np.abs(emb.encode(texts[::-1])[::-1] - alone).max()))
        for k in range(len(NEIGHBOURS) + 1):  # the target at every position, next to short and long texts
            batch = NEIGHBOURS[:k] + [TARGET] + NEIGHBOURS[k:]
            diffs.append(float(np.abs(emb.encode(batch)[k] - alone[0]).max()))
        worst = max(diffs)
        label = variant.raw.get("batch_invariant")
        assert isinstance(label, bool), f"{kind}/{name}: the manifest does not say whether it is batch-invariant"
        if label:
            assert worst <= 1e-5, f"{kind}/{name} is marked batch-invariant but moved {worst:.2e}"
        else:
            assert worst > 1e-5, f"{kind}/{name} is marked batch-dependent but moved only {worst:.2e}"
        checked.append((name, label))
    assert ("int8-static", True) in checked and ("fp32", True) in checked
    auto = Embedder.load(tiny_models[kind], provider="cpu").variant
    assert manifest.variants[auto].raw["batch_invariant"] is True


def test_static_int8_manifest_records_method_and_both_parities(tiny_models: dict[str, Path]) -> None:
    v = load_manifest(tiny_models["xlm-roberta"]).variants["int8-static"]
    q = v.quantization or {}
    assert q["method"] == "static" and q["format"] == "QDQ + QAttention" and q["smoothed_matmuls"] > 0
    # the attention output's smoothing is folded into the value projection in every layer, no Mul inserted
    assert q["smoothing_folded_into_values"] == q["attention_qattention"] == 2
    assert q["calibration_texts"] > 0 and "disjoint" in q["calibration_source"]
    p = v.raw["parity"]
    assert p["min_cos_alone"] >= 0.99 and p["min_cos"] >= 0.99 and p["batch_invariance_max_abs"] <= 1e-5
    dyn = load_manifest(tiny_models["xlm-roberta"]).variants["int8"]
    assert dyn.raw["parity"]["batch_invariance_max_abs"] is not None


def test_static_int8_really_quantizes_activations(tiny_models: dict[str, Path]) -> None:
    """Every MatMul reads int8 activations and every attention runs as QAttention on a constant input scale:
    the export must not ship weight-only int8 or a batch-dependent scale."""
    import onnx

    path = tiny_models["bert"] / "int8-static" / "model.onnx"
    graph = onnx.load(str(path)).graph
    nodes, consts = graph.node, {i.name for i in graph.initializer}
    producer = {o: n.op_type for n in nodes for o in n.output}
    matmuls = [n for n in nodes if n.op_type == "MatMul"]
    assert matmuls and all(producer.get(n.input[0]) == "DequantizeLinear" for n in matmuls)
    attention = [n for n in nodes if n.op_type in ("Attention", "QAttention", "MultiHeadAttention")]
    assert attention and all(n.op_type == "QAttention" for n in attention)
    # input (from QuantizeLinear), weight, bias, input scale, weight scale, mask, input zero point, weight zero point
    assert all(producer.get(n.input[0]) == "QuantizeLinear" for n in attention)
    assert all({n.input[i] for i in (1, 2, 3, 4, 6, 7)} <= consts for n in attention)


def test_exact_int8_mode_is_chosen_from_the_serving_cpu(tiny_models: dict[str, Path]) -> None:
    from e5rt.cpu import detect_int8_target, exact_int8_needed

    # s8 weights saturate only on x86 without VNNI; u8 weights and dot-product CPUs need nothing.
    assert exact_int8_needed("QInt8", "avx2") and exact_int8_needed("QInt8", "avx512")
    assert not exact_int8_needed("QInt8", "avx512_vnni") and not exact_int8_needed("QInt8", "arm64")
    assert not exact_int8_needed("QUInt8", "avx2") and not exact_int8_needed(None, "avx2")
    for name in ("int8", "int8-static", "fp32"):
        emb = Embedder.load(tiny_models["bert"], variant=name, provider="cpu")
        v = emb.manifest.variants[name]
        wt = (v.quantization or {}).get("weight_type") if v.precision == "int8" else None
        assert emb.backend.exact_int8 == exact_int8_needed(wt, detect_int8_target())


def test_vnni_export_served_on_this_cpu(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """An int8 model exported for a VNNI CPU (s8 weights) loads here with the mode this CPU needs and stays
    accurate: the exporter's CPU does not decide how it runs."""
    from e5rt_export import ExportOptions, export_model

    from e5rt.cpu import detect_int8_target

    out = tmp_path / "vnni"
    export_model(
        str(tiny_checkpoints["bert"]),
        out,
        ExportOptions(variants=("fp32", "int8"), int8_target="avx512_vnni", progress=False),
    )
    assert load_manifest(out).variants["int8"].quantization["weight_type"] == "QInt8"
    int8 = Embedder.load(out, variant="int8", provider="cpu")
    assert int8.backend.exact_int8 == (detect_int8_target() in ("avx2", "avx512"))
    texts = [TARGET, *NEIGHBOURS]
    cos = np.sum(int8.encode(texts) * Embedder.load(out, variant="fp32").encode(texts), axis=1)
    assert cos.min() >= 0.99
