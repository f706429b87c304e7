"""ONNX graph stages: raw export (torch.onnx), transformer fusions, fp16 conversion, packing, int8 quantization.

Every stage reads one file and writes a new one; none rewrites or deletes its input, because an optimizer
pass was seen deleting its source's external data.
"""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from .errors import ExportError

# Beyond this the protobuf limit (2 GB) is near: write weights as external data.
EXTERNAL_DATA_BYTES = 1_800_000_000

FUSED_KINDS = {
    "attention": ("Attention", "MultiHeadAttention", "PackedAttention", "PackedMultiHeadAttention", "QAttention"),
    "layernorm": (
        "SkipLayerNormalization",
        "LayerNormalization",
        "EmbedLayerNormalization",
        "QEmbedLayerNormalization",
    ),
    "gelu": ("BiasGelu", "Gelu", "FastGelu", "QuickGelu"),
}

# int8 targets -> (weight type, reduce_range). AVX2 and AVX-512 without VNNI multiply u8×s8 with vpmaddubsw,
# whose int16 intermediate saturates; u8×u8 weights take a widening path that does not. VNNI and Arm dot
# products accumulate in int32 directly, so signed weights with the full range are exact there.
INT8_TARGET_SETTINGS: dict[str, tuple[str, bool]] = {
    "avx2": ("QUInt8", False),
    "avx512": ("QUInt8", False),
    "avx512_vnni": ("QInt8", False),
    "arm64": ("QInt8", False),
}
# Tried in order until one meets the int8 parity threshold. The dynamic presets quantize activations per
# tensor, which outlier channels make lossy on small models; the last one quantizes weights in blocks of 32
# (MatMulNBits, 8 bits, int8 compute with per-block activation scales): far more accurate, and its speed
# depends on the CPU, which is why the export measures every variant's speed against fp32.
INT8_PRESETS = ("all", "keep-ffn-out", "ffn-in-only", "blockwise")
BLOCKWISE_BLOCK = 32


def _quiet() -> None:
    for name in (
        "onnxruntime",
        "onnxruntime.transformers",
        "onnxruntime.quantization",
        "root",
        "transformers",
        "torch.onnx",
        "onnxscript",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def export_raw(
    checkpoint: Path, out_dir: Path, config: dict[str, Any], opset: int | None = None, task: str = "embed"
) -> Path:
    """Plain ONNX export with torch.onnx (dynamo), into a fresh directory: the encoder (last_hidden_state output)
    for an embedder, the whole classifier (logits output) for a reranker or a classifier.

    It runs in a process of its own (`python -m e5rt_export.torch_export`): after torch.export ~3 GB of the large
    model stayed resident in the exporting process (its parameters held by tracing state that `del` does not
    reach), and every later stage peaked that much higher (int8-static at 8.4 GB instead of 6.7). A new
    interpreter rather than multiprocessing: spawn re-runs the caller's script, which breaks any script that calls
    export_model without an `if __name__ == "__main__"` guard."""
    import json
    import subprocess
    import sys

    from .torch_export import ERROR_MARK

    cmd = [sys.executable, "-m", "e5rt_export.torch_export", str(checkpoint), str(out_dir), task, str(opset or 0)]
    proc = subprocess.run(cmd, input=json.dumps(config), capture_output=True, text=True)
    if proc.returncode != 0:
        said = [line[len(ERROR_MARK) :] for line in proc.stderr.splitlines() if line.startswith(ERROR_MARK)]
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        reason = said[-1] if said else f"the export process exited with {proc.returncode} ({tail})"
        raise ExportError(reason)
    return out_dir / "model.onnx"


def release_memory() -> None:
    """Free what the last stage left behind before the next one starts.

    onnxruntime.transformers' model objects sit in reference cycles, so `del` alone keeps a whole graph alive
    until the cycle collector runs (measured: 3.3 GB held after fp16 conversion of a 470 MB model, 0.6 GB after
    gc.collect()), and glibc keeps freed heap mapped unless asked to return it (0.1 GB after malloc_trim)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc and "libc.so" in libc:
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
            pass


def _save(model: Any, dest: Path, external: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    model.save_model_to_file(str(dest), use_external_data_format=external, all_tensors_to_one_file=True)


# Initializers up to this many elements keep their values in shape inference's copy of the model: shape-like
# constants (Reshape targets, axes, slice bounds) are what it reads; weight matrices it needs only the dims of.
_SHAPE_VALUE_ELEMENTS = 4096


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with large initializers reduced to name, type and dims: what shape inference needs of them.
    Built field by field, so the weights are never copied even for a moment."""
    out = onnx.ModelProto(
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
    )
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    g, src = out.graph, model.graph
    g.name = src.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(g, field).extend(getattr(src, field))
    for t in src.initializer:
        if math.prod(t.dims) <= _SHAPE_VALUE_ELEMENTS:
            g.initializer.append(t)
        else:
            g.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    return out


def _weightless_shape_helper() -> Any:
    """Make onnxruntime's fusions infer shapes on a weightless copy; returns the undo function.

    Each fusion class builds a SymbolicShapeInferenceHelper, whose _preprocess copies the whole ModelProto,
    weights included, and several stay alive at once: the large model's fusion stage peaked at 13.9 GB for a
    2.2 GB model. They read only the weights' dims and small shape constants, so the copy leaves the rest out."""
    import sys

    helper_mod = sys.modules.get("shape_infer_helper")  # imported by onnxruntime.transformers under this name
    cls = getattr(helper_mod, "SymbolicShapeInferenceHelper", None)
    original = getattr(cls, "_preprocess", None)
    if cls is None or original is None:  # another onnxruntime layout: fuse as it is, with its own memory use
        return lambda: None

    def preprocess(self: Any, in_mp: onnx.ModelProto) -> None:
        original(self, weightless(in_mp))

    own = "_preprocess" in vars(cls)
    cls._preprocess = preprocess
    return lambda: setattr(cls, "_preprocess", original) if own else delattr(cls, "_preprocess")


def optimize(raw: Path, num_heads: int, hidden_size: int, use_gpu: bool) -> Any:
    """onnxruntime's transformer fusions (attention, LayerNorm, GELU), for the CPU or the CUDA provider."""
    _quiet()
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_gelu_approximation = False  # exact GELU: approximation costs parity for little speed
    undo = _weightless_shape_helper()
    try:
        model = optimizer.optimize_model(
            str(raw),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            optimization_options=options,
            opt_level=0,  # python fusions only; no ORT session rewrites the file on disk
            use_gpu=use_gpu,
        )
    finally:
        undo()
    return model


def split_skip_layernorm(graph: onnx.GraphProto) -> int:
    """Rewrite each SkipLayerNormalization whose only used output is the normalized one as Add (its bias), Add
    (the residual) and LayerNormalization, in place; returns how many. For the CPU graphs: onnxruntime's CPU
    SkipLayerNormalization kernel took 84 ms per 16x128 batch of me5-small-r int8-static where the three plain
    ops took 36 (the same values to 3e-6; benchmarks/graph_ab.py --profile, 2-core Zen 1). A session's own
    SkipLayerNormFusion would put them back wherever shapes are known, so e5rt's CPU sessions run without it
    (e5rt.backends.ort.CPU_DISABLED_OPTIMIZERS). The CUDA graphs keep the fused kernel."""
    from onnx import helper

    nodes: list[onnx.NodeProto] = []
    split = 0
    for node in graph.node:
        if node.op_type != "SkipLayerNormalization" or len([o for o in node.output if o]) != 1 or not node.output[0]:
            nodes.append(node)
            continue
        x, skip, gamma, *rest = node.input
        beta = rest[0] if rest else ""
        bias = rest[1] if len(rest) > 1 else ""
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        name = node.name or f"SkipLayerNormalization_{split}"
        current = x
        if bias:
            nodes.append(helper.make_node("Add", [x, bias], [f"{name}_biased"], name=f"{name}_bias"))
            current = f"{name}_biased"
        nodes.append(helper.make_node("Add", [current, skip], [f"{name}_sum"], name=f"{name}_residual"))
        ln_inputs = [f"{name}_sum", gamma] + ([beta] if beta else [])
        nodes.append(
            helper.make_node(
                "LayerNormalization", ln_inputs, [node.output[0]], name=f"{name}_norm", axis=-1, epsilon=epsilon
            )
        )
        split += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return split


def save_fp32(model: Any, dest: Path, big: bool) -> None:
    _save(model, dest, external=big)


def to_fp16(model: Any, dest: Path, keep_fp32_ops: list[str], big: bool) -> None:
    """Convert a CUDA-fused graph to fp16. Inputs stay int64; the hidden-state output becomes fp16, halving
    the device-to-host copy of B×L×H that pooling needs (the runtime pools it in fp32)."""
    kwargs: dict[str, Any] = {"keep_io_types": False}
    if keep_fp32_ops:
        kwargs["op_block_list"] = keep_fp32_ops
    model.convert_float_to_float16(use_symbolic_shape_infer=True, **kwargs)
    _save(model, dest, external=big)


def to_packed(fp16_path: Path, dest: Path, big: bool) -> None:
    """RemovePadding + PackedAttention rewrite: no compute on padding. CUDA kernels only."""
    _quiet()
    from onnxruntime.transformers.convert_to_packing_mode import PackingMode
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp16_path)))
    PackingMode(model).convert()
    if not model.get_nodes_by_op_type("RemovePadding"):
        raise ExportError("packing mode found no fused attention to rewrite; the packed variant needs a fused graph")
    _save(model, dest, external=big)


def is_ffn_out(node_name: str) -> bool:
    """Whether a fused BERT-family graph's node is an FFN output projection (its input: GELU outputs, the widest
    activation range; both int8 variants' keep-ffn-out presets leave these in fp32)."""
    return "/output/dense" in node_name and "attention" not in node_name


def quantize_int8(fp32_path: Path, dest: Path, target: str, preset: str, big: bool) -> dict[str, Any]:
    """Dynamic int8 quantization of the MatMuls and Attention with per-channel weights; returns the settings for
    the manifest. The word-embedding table is not touched here (export/embedding_table.py block-quantizes it:
    quantize_dynamic's per-tensor Gather cost every dynamic preset parity)."""
    _quiet()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type, reduce_range = INT8_TARGET_SETTINGS[target]
    if preset == "blockwise":
        return _quantize_blockwise(fp32_path, dest, target, big)
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    exclude = [n.name for n in graph.node if n.op_type in ("Gather", "EmbedLayerNormalization")]
    for node in graph.node:
        if node.op_type not in ("MatMul", "Attention"):
            continue
        name = node.name
        ffn_in = "intermediate/dense" in name
        if preset == "keep-ffn-out" and is_ffn_out(name):
            exclude.append(name)
        elif preset == "ffn-in-only" and not ffn_in:
            exclude.append(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(fp32_path),
        str(dest),
        per_channel=True,
        reduce_range=reduce_range,
        weight_type=getattr(QuantType, weight_type),
        nodes_to_exclude=exclude,
        use_external_data_format=big,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused com.microsoft ops lack type info
    )
    return {
        "method": "dynamic",
        "per_channel": True,
        "weight_type": weight_type,
        "activation_type": "QUInt8",
        "reduce_range": reduce_range,
        "target": target,
        "preset": preset,
        "excluded_nodes": len(exclude),
    }


def _quantize_blockwise(fp32_path: Path, dest: Path, target: str, big: bool) -> dict[str, Any]:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    cfg = DefaultWeightOnlyQuantConfig(block_size=BLOCKWISE_BLOCK, is_symmetric=True, accuracy_level=4, bits=8)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(fp32_path)),
        bits=8,
        block_size=BLOCKWISE_BLOCK,
        is_symmetric=True,
        accuracy_level=4,
        algo_config=cfg,
    )
    quantizer.process()
    dest.parent.mkdir(parents=True, exist_ok=True)
    quantizer.model.save_model_to_file(str(dest), big)
    return {
        "method": "weight-only blockwise (MatMulNBits)",
        "bits": 8,
        "block_size": BLOCKWISE_BLOCK,
        "symmetric": True,
        "accuracy_level": 4,
        "target": target,
        "preset": "blockwise",
        # MatMulNBits covers MatMul only: the fused Attention stays fp32.
    }


def op_counts(path: Path) -> dict[str, int]:
    """Counts of the fused / contrib op types actually present in a saved graph."""
    graph = onnx.load(str(path), load_external_data=False).graph
    counts = Counter(n.op_type for n in graph.node if n.domain == "com.microsoft" or n.op_type == "LayerNormalization")
    for quant_op in ("MatMulInteger", "DynamicQuantizeLinear", "ConvInteger", "MatMulNBits"):
        n = sum(1 for node in graph.node if node.op_type == quant_op)
        if n:
            counts[quant_op] = n
    return dict(sorted(counts.items()))


def fusion_report(counts: dict[str, int], num_layers: int) -> dict[str, Any]:
    """Did each fusion happen once per layer? (LayerNorm twice per layer.)"""
    report: dict[str, Any] = {}
    for kind, ops in FUSED_KINDS.items():
        report[kind] = sum(counts.get(op, 0) for op in ops)
    report["expected_per_layer"] = {"attention": 1, "layernorm": 2, "gelu": 1}
    report["complete"] = (
        report["attention"] >= num_layers and report["layernorm"] >= 2 * num_layers and report["gelu"] >= num_layers
    )
    return report


def variant_files(variant_dir: Path, model_name: str = "model.onnx") -> list[Path]:
    """The .onnx file first, then its external data files."""
    files = [variant_dir / model_name]
    files += sorted(p for p in variant_dir.iterdir() if p.is_file() and p.name != model_name)
    return files


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
