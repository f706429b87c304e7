"""Batch-invariant int8: calibrated (static) activation scales with SmoothQuant-style outlier migration.

Dynamic int8 computes each activation's scale from the batch it is in, so a text's vector changes with its
neighbours (measured on me5-small-r: 1.9e-2 max abs between alone and batched). Static scales are fixed at export,
so the same text gives the same vector in any batch. Plain static scales lose accuracy on real multilingual
weights (me5-small-r min cos 0.971 against fp32) because a few activation channels are far larger than the rest;
migrating part of that range into the weights (x / s, W * s with s = max|x|^a / max|W|^(1-a)) brings it to 0.991
at a = 0.5 and 0.996 at a = 0.6 (benchmarks/int8_static_probe.py). all-MiniLM-L6-v2 stayed below 0.99 at every a
tried (0.941 / 0.950 / 0.912 at 0.5 / 0.75 / 0.85) until its FFN outputs were left fp32 (step 4); a model that
misses even then has the variant left out, and the export says so.

Recipe, the same for every model:
1. ORT symbolic shape inference (the fused graph's contrib ops defeat ONNX's own; without types quantize_static
   silently leaves every activation in fp32 and only the weights become int8);
2. per-channel max |x| of every constant-weight MatMul's input on calibration texts, then an inserted Mul (x / s)
   and rows of W scaled by s;
3. quantize_static, QDQ, MinMax calibration on the same texts, per-channel symmetric weights, asymmetric uint8
   activations, MatMul inputs only (outputs stay fp32: their consumers, LayerNorm and Gelu, are fp32 anyway).
   ORT has no static-scale Attention kernel, so each fused Attention is first rewritten as its QKV projection (a
   MatMul, quantized like the others) feeding MultiHeadAttention: measured on me5-small-r (Zen 5, 2 threads,
   16x128) 1.83x fp32 against 1.51x with the projection left fp32 and 1.46x for dynamic int8; min cos 0.9978.
4. If parity misses, again with the FFN output MatMuls left fp32 (their inputs, GELU outputs, have the widest
   range): all-MiniLM-L6-v2 min cos 0.981 -> 0.995 on corpus texts, at 1.32x fp32 instead of 1.68x.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import ExportError
from .graph import is_ffn_out, weightless

SMOOTH_ALPHA = 0.6  # measured best of 0.5 / 0.6 on me5-small-r (0.991 / 0.996 min cos); see the probe results
CALIBRATION_TEXTS = 128
CALIBRATION_BATCH = 8


def calibration_texts(n: int = CALIBRATION_TEXTS) -> list[str]:
    """The last n texts of e5rt's benchmark corpus (15+ languages): none of them is a parity probe."""
    import e5rt

    path = Path(e5rt.__file__).parent / "bench" / "data" / "corpus.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows[-n:]]


def calibration_feeds(ids: list[np.ndarray], input_names: list[str], pad_id: int) -> list[dict[str, np.ndarray]]:
    from e5rt.core import build_feeds

    dtypes = dict.fromkeys(input_names, np.int64)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: little padding
    feeds = []
    for start in range(0, len(order), CALIBRATION_BATCH):
        rows = [ids[i] for i in order[start : start + CALIBRATION_BATCH]]
        feeds.append(build_feeds(rows, max(len(r) for r in rows), pad_id, input_names, dtypes))
    return feeds


def _targets(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    consts = {i.name for i in graph.initializer}
    return [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in consts]


def input_absmax(model_path: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel max |x| of each constant-weight MatMul's input over the real (unpadded) tokens."""
    import onnxruntime as ort
    from onnx import helper

    # The graph only, weights left on disk: the probe is written beside the source so that its external-data
    # references (a model over 2 GB) still resolve, and a 2 GB graph is neither copied nor re-serialized.
    model = onnx.load(str(model_path), load_external_data=False)
    # A fused Attention's input is what its QKV projection reads once unfuse_attention() has run: measured here,
    # on the fused graph, it needs no second copy of the model on disk or in memory.
    attention_inputs = [n.input[0] for n in model.graph.node if n.op_type == "Attention"]
    names = list(dict.fromkeys([*(n.input[0] for n in _targets(model.graph)), *attention_inputs]))
    outputs = {o.name for o in model.graph.output}
    for name in names:
        if name not in outputs:
            model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    probe = model_path.parent / f".absmax-probe-{os.getpid()}.onnx"
    amax: dict[str, np.ndarray] = {}
    try:
        onnx.save(model, str(probe))
        del model
        sess = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
        for feed in feeds:
            mask = feed["attention_mask"].astype(bool)
            for name, value in zip(names, sess.run(names, feed), strict=True):
                m = np.abs(value[mask]).max(axis=0)
                amax[name] = np.maximum(amax[name], m) if name in amax else m
    finally:
        probe.unlink(missing_ok=True)
    return amax


def smooth(model: onnx.ModelProto, amax: dict[str, np.ndarray], alpha: float = SMOOTH_ALPHA) -> int:
    """Migrate activation range into weights in place; returns how many MatMuls were smoothed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    targets = _targets(graph)
    for k, node in enumerate(targets):
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        act = np.maximum(amax[node.input[0]], 1e-5)
        wmax = np.maximum(np.abs(weight).max(axis=1), 1e-5)
        s = np.clip(act**alpha / wmax ** (1 - alpha), 1e-2, 1e2).astype(np.float32)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(weight * s[:, None], node.input[1]))
        inv = f"{node.name}_smooth_inv_{k}"
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        out = f"{node.input[0]}_smoothed_{k}"
        graph.node.append(helper.make_node("Mul", [node.input[0], inv], [out], name=f"{node.name}_smooth_{k}"))
        node.input[0] = out
    _toposort(graph)
    return len(targets)


def unfuse_attention(model: onnx.ModelProto) -> int:
    """Rewrite each fused Attention as its QKV projection (a plain MatMul with a constant weight, which static
    quantization then covers) feeding MultiHeadAttention, which takes the bias and the padding mask as Attention
    did. Returns how many were rewritten. ORT has no static-scale Attention kernel, so without this the QKV
    projection (a quarter of the linear FLOPs) stayed fp32 in int8-static."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    rewritten = 0
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        usable = (
            node.op_type == "Attention"
            and node.domain == "com.microsoft"
            and len(node.input) >= 3
            and node.input[1] in inits
            and set(attrs) <= {"num_heads", "mask_filter_value"}  # no past state, no unidirectional, no qkv sizes
            and all(i == "" for i in node.input[4:])
        )
        if not usable:
            nodes.append(node)
            continue
        weight = inits[node.input[1]]
        hidden = int(weight.dims[1]) // 3
        k = rewritten
        qkv, parts = f"{node.name}_qkv_{k}", [f"{node.name}_{x}_{k}" for x in ("q", "k", "v")]
        split = f"{node.name}_split_sizes_{k}"
        graph.initializer.append(numpy_helper.from_array(np.array([hidden] * 3, dtype=np.int64), split))
        nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [qkv], name=f"{node.name}_qkv_proj"))
        nodes.append(helper.make_node("Split", [qkv, split], parts, name=f"{node.name}_split", axis=-1))
        mask = node.input[3] if len(node.input) > 3 else ""
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                [*parts, node.input[2], mask],  # query, key, value, bias (q|k|v), key_padding_mask
                list(node.output[:1]),
                name=f"{node.name}_mha",
                domain="com.microsoft",
                **attrs,
            )
        )
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def _toposort(graph: onnx.GraphProto) -> None:
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError("graph has a cycle or a missing input after smoothing")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def int8_activation_matmuls(path: Path) -> tuple[int, int]:
    """(MatMuls whose activation input comes from a DequantizeLinear, all MatMuls): proof of int8 compute."""
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    producer = {o: n.op_type for n in nodes for o in n.output}
    matmuls = [n for n in nodes if n.op_type == "MatMul"]
    return sum(producer.get(n.input[0]) == "DequantizeLinear" for n in matmuls), len(matmuls)


class _Reader:
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # not needed by MinMax; kept for the CalibrationDataReader protocol
        pass


def quantize_static_int8(
    fp32_path: Path,
    dest: Path,
    feeds: list[dict[str, np.ndarray]],
    weight_type: str,
    big: bool,
    alpha: float | None = SMOOTH_ALPHA,
    exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    """fp32 graph -> smoothed (alpha None: not), calibrated QDQ int8 graph at dest; returns the manifest's
    quantization record."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    work = dest.parent / "_static_work"
    work.mkdir(parents=True, exist_ok=True)
    amax = None if alpha is None else input_absmax(fp32_path, feeds)
    model = onnx.load(str(fp32_path))
    attention = unfuse_attention(model)
    n = 0 if amax is None or alpha is None else smooth(model, amax, alpha)
    # Shapes inferred on a weightless copy (export/graph.py): infer_shapes copies the whole model it is given,
    # 2.2 GB more at the large model's peak; the value_info it finds is all quantize_static needs from it.
    shaped = SymbolicShapeInference.infer_shapes(weightless(model), auto_merge=True, guess_output_rank=True)
    known = {v.name for v in model.graph.value_info}
    model.graph.value_info.extend(v for v in shaped.graph.value_info if v.name not in known)
    del shaped
    smoothed = work / "smoothed.onnx"
    onnx.save(model, str(smoothed), save_as_external_data=big)
    del model  # quantize_static reads it from disk; a 2.2 GB copy held here would add to its own peak
    gc.collect()

    class Reader(_Reader, CalibrationDataReader):
        pass

    quantize_static(
        str(smoothed),
        str(dest),
        Reader(feeds),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=getattr(QuantType, weight_type),
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=big,
        nodes_to_exclude=list(exclude),
        extra_options={
            "DefaultTensorType": onnx.TensorProto.FLOAT,
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": ["MatMul"],
            "MatMulConstBOnly": True,
        },
    )
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    return {
        "method": "static",
        "format": "QDQ",
        "batch_invariant": True,
        "calibration": "MinMax",
        "calibration_texts": len(feeds) and sum(len(f["input_ids"]) for f in feeds),
        "calibration_source": "e5rt benchmark corpus (disjoint from the parity probes)",
        "smoothquant_alpha": alpha,
        "smoothed_matmuls": n,
        "per_channel": True,
        "weight_type": weight_type,
        "activation_type": "QUInt8",
        "quantized_ops": "MatMul inputs (constant weights), the attention's QKV projection included",
        "attention": f"{attention} fused Attention rewritten as an int8 QKV MatMul + MultiHeadAttention",
        "attention_rewritten": attention,
        "excluded_nodes": len(exclude),
    }


def ffn_out_matmuls(path: Path) -> tuple[str, ...]:
    """The FFN output projections of a fused BERT-family graph, by node name."""
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return tuple(n.name for n in nodes if n.op_type == "MatMul" and is_ffn_out(n.name))
