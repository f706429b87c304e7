"""Static (calibrated) int8 against dynamic int8: accuracy per text, accuracy in batches, batch invariance, speed.

    .venv/bin/python benchmarks/int8_static_probe.py models/me5-small-r --json benchmarks/results/int8-static-probe.json

Calibration uses corpus texts kept apart from the evaluated ones (the export's probe texts plus other corpus texts,
all with the model's passage prefix). Every graph is compared with the fp32 ONNX graph of the same model directory
(a) each text alone, (b) in e5rt's length-sorted batches, and (c) alone against batched (batch invariance).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def calibration_reader(emb: Any, texts: list[str], batch: int = 8) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    from e5rt.core.feeds import build_feeds

    enc, _ = emb.tokenize(texts, kind="passage")
    names = [i.name for i in emb.backend.session.get_inputs()]
    dtypes = dict.fromkeys(names, np.int64)
    pad = emb.spec.pad_token_id

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(range(0, len(enc.ids), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.items, None)
            if start is None:
                return None
            rows = enc.ids[start : start + batch]
            return build_feeds(rows, max(len(r) for r in rows), pad, names, dtypes)

    return Reader()


def quantize_static_graph(
    fp32: Path, dest: Path, reader: Any, weight_type: str, ops: list[str], method: str = "MinMax"
) -> float:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    t0 = time.perf_counter()
    # The fused graph's contrib ops (Attention, SkipLayerNormalization, BiasGelu) defeat ONNX's own type
    # inference; without types quantize_static silently skips every activation and only the weights end up
    # int8 (dequantized back to fp32 at run time). ORT's symbolic shape inference knows those ops.
    shaped = dest.with_name("shaped.onnx")
    onnx.save(
        SymbolicShapeInference.infer_shapes(onnx.load(str(fp32)), auto_merge=True, guess_output_rank=True), shaped
    )
    quantize_static(
        str(shaped),
        str(dest),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=ops,
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=getattr(QuantType, weight_type),
        calibrate_method=getattr(CalibrationMethod, method),
        extra_options={
            "DefaultTensorType": 1,
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            # Quantize what a MatMul reads, not what it writes: a Q/DQ pair on its output only adds rounding
            # (its consumers, LayerNorm and Gelu, run in fp32 anyway).
            "OpTypesToExcludeOutputQuantization": ["MatMul"],
            "MatMulConstBOnly": True,
        },
    )
    shaped.unlink()
    return time.perf_counter() - t0


def smooth(fp32: Path, dest: Path, emb: Any, texts: list[str], alpha: float) -> int:
    """SmoothQuant-style migration: for each MatMul with a constant weight W (in x out), measure the per-channel
    max |x| of its input on calibration texts, then scale: x / s (an inserted Mul), W * s (rows), with
    s = max|x|^alpha / max|W row|^(1 - alpha). Returns how many MatMuls were smoothed."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    targets = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for n in targets:
        if n.input[0] not in known:
            probe.graph.output.append(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
            known.add(n.input[0])
    tmp = dest.with_name("probe.onnx")
    onnx.save(probe, tmp)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    names = [n.input[0] for n in targets]
    amax = {name: None for name in names}
    reader = calibration_reader(emb, texts)
    while (feeds := reader.get_next()) is not None:
        outs = sess.run(names, feeds)
        mask = feeds["attention_mask"].astype(bool)
        for name, value in zip(names, outs):
            m = np.abs(value[mask]).max(axis=0)
            amax[name] = m if amax[name] is None else np.maximum(amax[name], m)
    tmp.unlink()
    for k, n in enumerate(targets):
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        s = np.power(np.maximum(amax[n.input[0]], 1e-5), alpha) / np.power(
            np.maximum(np.abs(w).max(axis=1), 1e-5), 1 - alpha
        )
        s = np.clip(s, 1e-2, 1e2).astype(np.float32)
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], n.input[1]))
        inv = f"{n.name}_smooth_inv"
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        out = f"{n.input[0]}_smoothed_{k}"
        graph.node.append(helper.make_node("Mul", [n.input[0], inv], [out], name=f"{n.name}_smooth"))
        n.input[0] = out
    onnx.save(_toposort(model), dest)
    return len(targets)


def _toposort(model: Any) -> Any:
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError("graph has a cycle or a missing input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return model


def activation_quantized(path: Path) -> tuple[int, int]:
    """(MatMuls whose activation input comes from a DequantizeLinear, all MatMuls): proof of int8 compute."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    producer = {o: n.op_type for n in nodes for o in n.output}
    mm = [n for n in nodes if n.op_type == "MatMul"]
    return sum(producer.get(n.input[0]) == "DequantizeLinear" for n in mm), len(mm)


def evaluate(model: Path, tok: Path, spec: Any, texts: list[str], ref: np.ndarray, threads: int) -> dict[str, Any]:
    from e5rt import Embedder
    from e5rt.config import BatchOptions

    emb = Embedder.from_onnx(model, tok, spec, batching=BatchOptions(max_batch_tokens=4096), threads=threads)
    alone = np.stack([emb.encode([t], kind="passage")[0] for t in texts])
    emb.encode(texts[:16], kind="passage")
    t0 = time.perf_counter()
    batched = emb.encode(texts, kind="passage")
    seconds = time.perf_counter() - t0
    cos = lambda a, b: float(np.min(np.sum(a.astype(np.float64) * b, axis=1)))  # noqa: E731
    return {
        "min_cos_alone": cos(alone, ref),
        "min_cos_batched": cos(batched, ref),
        "alone_vs_batched_max_abs": float(np.abs(alone - batched).max()),
        "bulk_s": seconds,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--eval", type=int, default=200, help="corpus texts evaluated (besides the probes)")
    ap.add_argument("--calib", type=int, default=128, help="corpus texts for calibration (disjoint from --eval)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weight-type", default="QInt8")
    ap.add_argument("--calibrate", default="MinMax", help="MinMax, Percentile or Entropy")
    ap.add_argument("--alpha", type=float, default=None, help="SmoothQuant migration strength (default: none)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from e5rt import Embedder
    from e5rt.bench.corpus import DEFAULT_CORPUS, read_rows
    from e5rt.bench.report import machine
    from e5rt_export.probes import probe_texts

    corpus = [r["text"] for r in read_rows(DEFAULT_CORPUS)]
    evaluated = probe_texts() + corpus[: args.eval]
    calib = corpus[-args.calib :]
    fp32_dir = args.model_dir / "fp32"
    base = Embedder.load(args.model_dir, variant="fp32", threads=args.threads)
    tok = args.model_dir / "tokenizer.json"
    spec = base.spec
    ref = np.stack([base.encode([t], kind="passage")[0] for t in evaluated])
    result: dict[str, Any] = {"machine": machine(), "model": str(args.model_dir), "texts": len(evaluated), "rows": {}}
    print(result["machine"], f"{len(evaluated)} evaluated texts, {len(calib)} calibration texts")
    graphs = {"fp32": fp32_dir / "model.onnx"}
    if (args.model_dir / "int8" / "model.onnx").exists():
        graphs["int8 (exported dynamic)"] = args.model_dir / "int8" / "model.onnx"
    with tempfile.TemporaryDirectory() as d:
        static = Path(d) / "static.onnx"
        source = graphs["fp32"]
        if args.alpha is not None:
            source = Path(d) / "smoothed.onnx"
            print(f"smoothed {smooth(graphs['fp32'], source, base, calib, args.alpha)} MatMuls (alpha {args.alpha})")
        reader = calibration_reader(base, calib)
        q_s = quantize_static_graph(source, static, reader, args.weight_type, ["MatMul"], args.calibrate)
        print(f"calibration: {args.calibrate}, {len(calib)} texts; weights {args.weight_type}")
        label = f"static QDQ MatMul ({args.weight_type}, {args.calibrate}" + (
            f", smooth {args.alpha})" if args.alpha is not None else ")"
        )
        graphs[label] = static
        print(f"quantize_static: {q_s:.1f} s")
        for name, path in graphs.items():
            row = evaluate(path, tok, spec, evaluated, ref, args.threads)
            row["file_mb"] = path.stat().st_size / 2**20
            row["matmuls_int8_activations"] = "%d/%d" % activation_quantized(path)
            result["rows"][name] = row
            print(
                f"{name:40s} alone {row['min_cos_alone']:.5f}  batched {row['min_cos_batched']:.5f}  "
                f"alone-vs-batched {row['alone_vs_batched_max_abs']:.2e}  bulk {row['bulk_s']:.2f} s"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
