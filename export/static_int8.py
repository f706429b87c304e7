"""Batch-invariant int8: calibrated (static) activation scales with SmoothQuant-style outlier migration.

Dynamic int8 computes each activation's scale from the batch it is in, so a text's vector changes with its
neighbours (measured on me5-small-r: 1.9e-2 max abs between alone and batched). Static scales are fixed at export,
so the same text gives the same vector in any batch. Plain static scales lose accuracy on real multilingual
weights (me5-small-r min cos 0.971 against fp32) because a few activation channels are far larger than the rest;
migrating part of that range into the weights (x / s, W * s with s = max|x|^a / max|W|^(1-a)) brings it to 0.991
at a = 0.5 and 0.996 at a = 0.6 (benchmarks/int8_static_probe.py). all-MiniLM-L6-v2 stayed below 0.99 at every a
tried (0.941 / 0.950 / 0.912 at 0.5 / 0.75 / 0.85) until its FFN outputs were left fp32 (step 5); a model that
misses even then has the variant left out, and the export says so.

Recipe, the same for every model, written here rather than by onnxruntime's quantize_static (which loaded the
large model twice and peaked at 14.1 GB; this needs the fp32 model once: 5.6 GB, measured):
1. per-channel min and max of every constant-weight MatMul's and fused Attention's input over the real tokens of
   calibration texts (one run of the fp32 graph with those tensors as extra outputs);
2. smoothing (x / s, W rows * s, s = max|x|^a / max|W row|^(1-a)): the attention output's is folded into the
   value projection (free); elsewhere a Mul is inserted, only where a channel stands out (SMOOTH_MIN_RATIO);
3. each MatMul reads its input through QuantizeLinear/DequantizeLinear with one fixed uint8 scale (MinMax) and
   its weight through a per-column symmetric DequantizeLinear: ORT fuses them into MatMulIntegerToFloat;
4. each fused Attention becomes QuantizeLinear + QAttention with that fixed input scale (QAttention takes its
   scale as an input, so a constant makes it batch-invariant): measured on large (synthetic, Zen 5, 16x128)
   1,312 ms against 1,396 for the previous QKV MatMul + Split + MultiHeadAttention and 1,344 for dynamic int8;
5. if parity misses, again with the FFN output MatMuls left fp32 (their inputs, GELU outputs, have the widest
   range): all-MiniLM-L6-v2 min cos 0.98 -> 0.995 on corpus texts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import ExportError
from .graph import is_ffn_out, release_memory
from .probes import corpus_texts

SMOOTH_ALPHA = 0.6  # measured best of 0.5 / 0.6 on me5-small-r (0.991 / 0.996 min cos); see the probe results
# An input is smoothed through an inserted Mul only where a channel stands out this much (outlier_ratio): measured on
# real me5-small-r (Zen 5, 120 corpus texts, min cos against fp32), smoothing every input gave 0.99683, only those
# at >= 8x 0.99726, >= 12x 0.99747 (25 of 48), >= 16x 0.99747, >= 24x 0.99574, none 0.99227: flat inputs lose
# more from the weights' wider rows than they gain. Each Mul skipped is one pass over the activation less
# (42 ms of 1,335 per 16x128 on large). The attention output's smoothing costs nothing (fold_into_values) and is
# always done.
SMOOTH_MIN_RATIO = 12.0
CALIBRATION_TEXTS = 128
CALIBRATION_BATCH = 8


def calibration_texts(n: int = CALIBRATION_TEXTS) -> list[str]:
    """The last n texts of e5rt's benchmark corpus (15+ languages): none of them is a parity probe."""
    return corpus_texts()[-n:]


def calibration_feeds(
    ids: list[np.ndarray], input_names: list[str], pad_id: int, sep_id: int | None = None
) -> list[dict[str, np.ndarray]]:
    from e5rt.core import build_feeds

    dtypes = dict.fromkeys(input_names, np.int64)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: little padding
    feeds = []
    for start in range(0, len(order), CALIBRATION_BATCH):
        rows = [ids[i] for i in order[start : start + CALIBRATION_BATCH]]
        feeds.append(build_feeds(rows, max(len(r) for r in rows), pad_id, input_names, dtypes, sep_id))
    return feeds


def _targets(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    consts = {i.name for i in graph.initializer}
    return [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in consts]


def _attentions(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Fused Attentions that QAttention can replace: constant QKV weight and bias, no past state, no
    unidirectional or per-part hidden sizes (the attributes QAttention does not share)."""
    consts = {i.name for i in graph.initializer}
    out = []
    for node in graph.node:
        attrs = {a.name for a in node.attribute}
        if (
            node.op_type == "Attention"
            and node.domain == "com.microsoft"
            and len(node.input) >= 3
            and node.input[1] in consts
            and node.input[2] in consts
            and attrs <= {"num_heads", "mask_filter_value"}
            and all(i == "" for i in node.input[4:])
            and len(node.output) == 1
        ):
            out.append(node)
    return out


Ranges = dict[str, tuple[np.ndarray, np.ndarray]]


def input_ranges(model_path: Path, feeds: list[dict[str, np.ndarray]]) -> Ranges:
    """Per-channel (min, max) of each constant-weight MatMul's and fused Attention's input over the real
    (unpadded) tokens: the static activation ranges, and the outlier profile smoothing needs."""
    import onnxruntime as ort
    from onnx import helper

    # The graph only, weights left on disk: the probe is written beside the source so that its external-data
    # references (a model over 2 GB) still resolve, and a 2 GB graph is neither copied nor re-serialized.
    model = onnx.load(str(model_path), load_external_data=False)
    names = list(dict.fromkeys(n.input[0] for n in [*_targets(model.graph), *_attentions(model.graph)]))
    outputs = {o.name for o in model.graph.output}
    for name in names:
        if name not in outputs:
            model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    probe = model_path.parent / f".ranges-probe-{os.getpid()}.onnx"
    ranges: Ranges = {}
    try:
        onnx.save(model, str(probe))
        del model
        sess = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
        for feed in feeds:
            mask = feed["attention_mask"].astype(bool)
            for name, value in zip(names, sess.run(names, feed), strict=True):
                real = value[mask]
                lo, hi = real.min(axis=0), real.max(axis=0)
                if name in ranges:
                    lo, hi = np.minimum(ranges[name][0], lo), np.maximum(ranges[name][1], hi)
                ranges[name] = (lo, hi)
    finally:
        probe.unlink(missing_ok=True)
    return ranges


def smoothing_factors(lo: np.ndarray, hi: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-input-channel s = max|x|^a / max|W row|^(1-a): x / s and W * s compute the same
    product with the activation's outlier channels tamed."""
    act = np.maximum(np.maximum(-lo, hi), 1e-5)
    wmax = np.maximum(np.abs(weight).max(axis=1), 1e-5)
    return np.clip(act**alpha / wmax ** (1 - alpha), 1e-2, 1e2).astype(np.float32)


def outlier_ratio(lo: np.ndarray, hi: np.ndarray) -> float:
    """How far an activation's widest channel stands out: its max |x| over the median channel's."""
    amax = np.maximum(-lo, hi)
    return float(amax.max()) / max(float(np.median(amax)), 1e-12)


def activation_qparams(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One asymmetric uint8 (scale, zero point) for a whole activation tensor, its range including 0 (the
    MinMax rule)."""
    rmin, rmax = min(0.0, float(lo.min())), max(0.0, float(hi.max()))
    scale = (rmax - rmin) / 255.0 or 1.0
    zero = int(np.clip(np.rint(-rmin / scale), 0, 255))
    return np.array(scale, dtype=np.float32), np.array(zero, dtype=np.uint8)


def quantize_weight(weight: np.ndarray, weight_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric per-column (output channel) int8 of a MatMul's [K, N] weight: (values, scales, zero points).
    QUInt8 (the AVX2 / AVX-512-without-VNNI targets, see graph.INT8_TARGET_SETTINGS) centres on 128."""
    absmax = np.abs(weight).max(axis=0).astype(np.float32)
    absmax = np.where(absmax > 0, absmax, 1.0).astype(np.float32)
    if weight_type == "QInt8":
        scale = absmax / 127.0
        q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        return q, scale.astype(np.float32), np.zeros_like(scale, dtype=np.int8)
    if weight_type == "QUInt8":
        scale = 2.0 * absmax / 255.0
        q = np.clip(np.rint(weight / scale) + 128, 0, 255).astype(np.uint8)
        return q, scale.astype(np.float32), np.full(scale.shape, 128, dtype=np.uint8)
    raise ExportError(f"unknown int8 weight type {weight_type!r}")


class _Writer:
    """Rewrites a fused fp32 graph in place into static int8: every constant-weight MatMul reads its input
    through QuantizeLinear/DequantizeLinear with a fixed scale and its weight through a per-column
    DequantizeLinear (ORT fuses both into MatMulIntegerToFloat at load), and each fused Attention becomes
    QuantizeLinear + QAttention with that fixed scale."""

    def __init__(self, model: onnx.ModelProto, ranges: Ranges, weight_type: str, alpha: float | None) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.ranges = ranges
        self.weight_type = weight_type
        self.alpha = alpha
        self.inits = {i.name: i for i in self.graph.initializer}
        self.users: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.users[name] = self.users.get(name, 0) + 1
        self.array = lambda name: numpy_helper.to_array(self.inits[name]).astype(np.float32)
        self.new_nodes: list[onnx.NodeProto] = []
        self.smoothed = self.folded = self.matmuls = self.attentions = 0

    def _init(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(value, name)
        if name in self.inits:
            self.inits[name].CopyFrom(tensor)
        else:
            self.graph.initializer.append(tensor)
            self.inits[name] = self.graph.initializer[-1]
        return name

    def _own(self, name: str) -> bool:
        """Whether a weight initializer is read by one node only, so it may be rewritten in place."""
        return self.users.get(name, 0) == 1

    def _smooth(self, key: str, x: str, weight: np.ndarray) -> tuple[str, np.ndarray, tuple[np.ndarray, ...]]:
        """x / s through an inserted Mul and W * s; returns (the node's new input, weight, input range)."""
        lo, hi = self.ranges[x]
        if self.alpha is None or outlier_ratio(lo, hi) < SMOOTH_MIN_RATIO:
            return x, weight, (lo, hi)
        s = smoothing_factors(lo, hi, weight, self.alpha)
        inv = self._init(f"{key}_smooth_inv", (1.0 / s).astype(np.float32))
        out = f"{key}_smoothed"
        self.new_nodes.append(onnx.helper.make_node("Mul", [x, inv], [out], name=f"{key}_smooth"))
        self.smoothed += 1
        return out, weight * s[:, None], (lo / s, hi / s)

    def _quantize_input(self, key: str, x: str, lo: np.ndarray, hi: np.ndarray) -> tuple[str, str, str]:
        scale, zero = activation_qparams(lo, hi)
        sc, zp = self._init(f"{key}_x_scale", scale), self._init(f"{key}_x_zero", zero)
        q = f"{key}_x_q"
        self.new_nodes.append(onnx.helper.make_node("QuantizeLinear", [x, sc, zp], [q], name=f"{key}_x_quant"))
        return q, sc, zp

    def _quantize_weight(self, key: str, weight: np.ndarray) -> tuple[str, str, str]:
        q, scale, zero = quantize_weight(weight, self.weight_type)
        return (
            self._init(f"{key}_w_q", q),
            self._init(f"{key}_w_scale", scale),
            self._init(f"{key}_w_zero", zero),
        )

    def fold_into_values(self, attention: onnx.NodeProto, consumer: onnx.NodeProto) -> bool:
        """Smooth the attention-output projection for free: its input (the attention's context) is linear in
        the value projection, per channel, so x / s is folded into V's weight columns and bias (W_o * s as
        usual) instead of an inserted Mul. Its range is then that of x / s. Returns whether it was folded."""
        if self.alpha is None or not (self._own(attention.input[1]) and self._own(attention.input[2])):
            return False
        x = attention.output[0]
        lo, hi = self.ranges[x]
        w_out = self.array(consumer.input[1])
        s = smoothing_factors(lo, hi, w_out, self.alpha)
        qkv, bias = self.array(attention.input[1]), self.array(attention.input[2])
        hidden = qkv.shape[1] // 3
        qkv[:, 2 * hidden :] /= s
        bias[2 * hidden :] /= s
        self._init(attention.input[1], qkv)
        self._init(attention.input[2], bias)
        self._init(consumer.input[1], w_out * s[:, None])
        self.ranges[x] = (lo / s, hi / s)
        self.folded += 1
        return True

    def matmul(self, node: onnx.NodeProto, smooth: bool) -> None:
        key = f"{node.name}_{self.matmuls}"
        weight = self.array(node.input[1])
        x = node.input[0]
        if smooth:
            x, weight, (lo, hi) = self._smooth(key, x, weight)
        else:
            lo, hi = self.ranges[x]
        q, sc, zp = self._quantize_input(key, x, lo, hi)
        xd = f"{key}_x_dq"
        self.new_nodes.append(onnx.helper.make_node("DequantizeLinear", [q, sc, zp], [xd], name=f"{key}_x_dequant"))
        wq, wsc, wzp = self._quantize_weight(key, weight)
        wd = f"{key}_w_dq"
        self.new_nodes.append(
            onnx.helper.make_node("DequantizeLinear", [wq, wsc, wzp], [wd], name=f"{key}_w_dequant", axis=1)
        )
        node.input[0], node.input[1] = xd, wd
        self.matmuls += 1

    def attention(self, node: onnx.NodeProto) -> onnx.NodeProto:
        """The QAttention that replaces a fused Attention: same bias, padding mask and attributes; its input
        quantized with a fixed scale, its QKV weight per column."""
        key = f"{node.name}_{self.attentions}"
        x, weight, (lo, hi) = self._smooth(key, node.input[0], self.array(node.input[1]))
        q, sc, zp = self._quantize_input(key, x, lo, hi)
        wq, wsc, wzp = self._quantize_weight(key, weight)
        mask = node.input[3] if len(node.input) > 3 else ""
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self.attentions += 1
        return onnx.helper.make_node(
            "QAttention",
            # input, weight, bias, input_scale, weight_scale, mask_index, input_zero_point, weight_zero_point
            [q, wq, node.input[2], sc, wsc, mask, zp, wzp],
            list(node.output),
            name=f"{node.name}_qattention",
            domain="com.microsoft",
            **attrs,
        )

    def drop_unused(self) -> None:
        used = {i for n in self.graph.node for i in n.input}
        keep = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)


def write_static_int8(
    model: onnx.ModelProto, ranges: Ranges, weight_type: str, alpha: float | None, exclude: tuple[str, ...] = ()
) -> dict[str, int]:
    """Rewrite a fused fp32 model in place as static int8 (see _Writer); returns what was done, by count."""
    writer = _Writer(model, ranges, weight_type, alpha)
    graph = model.graph
    skip = set(exclude)
    attentions = {n.name: n for n in _attentions(graph)}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded: set[str] = set()
    for node in attentions.values():
        users = consumers.get(node.output[0], [])
        out = users[0] if len(users) == 1 else None
        if out is None or out.op_type != "MatMul" or out.name in skip or not writer._own(out.input[1]):
            continue
        if writer.fold_into_values(node, out):
            folded.add(out.name)
    replaced: dict[str, onnx.NodeProto] = {}
    for node in _targets(graph):
        if node.name not in skip and writer._own(node.input[1]):
            writer.matmul(node, smooth=node.name not in folded)
    for name, node in attentions.items():
        replaced[name] = writer.attention(node)
    nodes = [replaced.get(n.name, n) for n in graph.node]
    del graph.node[:]
    graph.node.extend([*nodes, *writer.new_nodes])
    _toposort(graph)
    writer.drop_unused()
    return {
        "matmuls": writer.matmuls,
        "attentions": writer.attentions,
        "smoothed": writer.smoothed,
        "folded_into_values": writer.folded,
        "excluded": len(skip),
    }


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
            raise ExportError("graph has a cycle or a missing input after static quantization")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def int8_activation_matmuls(path: Path) -> tuple[int, int]:
    """(MatMuls whose activation input comes from a DequantizeLinear, all MatMuls): proof of int8 compute."""
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    producer = {o: n.op_type for n in nodes for o in n.output}
    matmuls = [n for n in nodes if n.op_type == "MatMul"]
    return sum(producer.get(n.input[0]) == "DequantizeLinear" for n in matmuls), len(matmuls)


def quantize_static_int8(
    fp32_path: Path,
    dest: Path,
    feeds: list[dict[str, np.ndarray]],
    weight_type: str,
    big: bool,
    alpha: float | None = SMOOTH_ALPHA,
    exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    """fp32 graph -> smoothed (alpha None: not), calibrated static int8 graph at dest; returns the manifest's
    quantization record."""
    ranges = input_ranges(fp32_path, feeds)
    release_memory()  # the probe session's weights (5.9 GB at its peak on large), before the model is loaded
    model = onnx.load(str(fp32_path))
    done = write_static_int8(model, ranges, weight_type, alpha, exclude)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if big:
        onnx.save(model, str(dest), save_as_external_data=True, location=dest.name + ".data")
    else:
        onnx.save(model, str(dest))
    # The next step (the embedding table) loads the file again: measured on large, the 5.1 GB this held until
    # then took the stage's peak to 10.6 GB; returned first, 6.5 GB.
    del model
    release_memory()
    return {
        "method": "static",
        "format": "QDQ + QAttention",
        "batch_invariant": True,
        "calibration": "MinMax over real tokens",
        "calibration_texts": len(feeds) and sum(len(f["input_ids"]) for f in feeds),
        "calibration_source": "e5rt benchmark corpus (disjoint from the parity probes)",
        "smoothquant_alpha": alpha,
        "smoothed_matmuls": done["smoothed"] + done["folded_into_values"],
        "smoothing_folded_into_values": done["folded_into_values"],
        "per_channel": True,
        "weight_type": weight_type,
        "activation_type": "QUInt8",
        "quantized_ops": "MatMul inputs (constant weights) and every fused Attention's QKV projection",
        "attention": f"{done['attentions']} fused Attention as QAttention with a static input scale",
        "attention_qattention": done["attentions"],
        "excluded_nodes": done["excluded"],
    }


def ffn_out_matmuls(path: Path) -> tuple[str, ...]:
    """The FFN output projections of a fused BERT-family graph, by node name."""
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return tuple(n.name for n in nodes if n.op_type == "MatMul" and is_ffn_out(n.name))
