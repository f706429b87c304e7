"""The raw ONNX graph of a checkpoint, written by torch.onnx's dynamo exporter (torch.export + onnxscript).

Why this exporter (docs/export.md has the measurements): it follows the PyTorch model through torch.export, so
the attention mask stays an input on transformers 5 (the TorchScript exporter baked it in: 3.57 off on XLM-R),
it needs no package that pins transformers, and onnxruntime's transformer optimizer still fuses what it writes.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from .errors import ExportError

# The graph's input names are the runtime's feed names (e5rt.core.feeds) and its output names those the runtime
# reads: the encoder's hidden states for an embedder, the classifier's logits for a reranker or a classifier.
OUTPUT_NAMES = {"embed": "last_hidden_state", "rerank": "logits", "classify": "logits"}
# torch.export specializes a dimension whose example size is 0 or 1, so the example batch is 2 x 16.
EXAMPLE_SHAPE = (2, 16)
# The opset the graphs are written in: LayerNormalization is a standard op from 17 on; onnxruntime's transformer
# optimizer and every onnxruntime the runtime accepts (>= 1.20) read 18.
OPSET = 18
# How the export process (graph.export_raw runs this module) reports an ExportError on stderr.
ERROR_MARK = "e5rt-export-error: "


def uses_token_types(config: dict[str, Any]) -> bool:
    """A model with two token types (BERT) takes token_type_ids; XLM-R and RoBERTa have one and do not."""
    return int(config.get("type_vocab_size", 1) or 1) >= 2


def load_module(checkpoint: Path, task: str) -> Any:
    """The checkpoint as a PyTorch module in eval mode with eager attention, whose matmul-softmax pattern is the
    one onnxruntime's attention fusion recognizes (SDPA exports as one op it does not fuse)."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    common: dict[str, Any] = {"dtype": torch.float32, "attn_implementation": "eager", "local_files_only": True}
    if task == "embed":
        model = AutoModel.from_pretrained(str(checkpoint), add_pooling_layer=False, **common)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint), **common)
    return model.eval()


def _wrapper(model: Any, output: str, token_types: bool) -> Any:
    """A module with positional tensor inputs and one named output, the signature torch.export traces.

    It hands the model the additive (B, 1, 1, L) mask itself, built as BERT did before transformers 5:
    Unsqueeze, Cast, Sub from 1, Mul by the lowest float. transformers passes a 4-D mask through as it is, and
    this is the pattern onnxruntime's attention fusion matches; transformers 5's own mask (arange, GatherND,
    Where) is not: without this, no Attention is fused at all (docs/export.md)."""
    import torch

    lowest = torch.finfo(torch.float32).min

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            extended = (1.0 - attention_mask.unsqueeze(1).unsqueeze(2).to(torch.float32)) * lowest
            kwargs = {"input_ids": input_ids, "attention_mask": extended}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return getattr(self.model(**kwargs, return_dict=True), output)

    return Graph()


def export_onnx(checkpoint: Path, out_dir: Path, task: str, config: dict[str, Any], opset: int | None = None) -> Path:
    """Write out_dir/model.onnx (weights in model.onnx.data beside it) with dynamic batch and sequence axes."""
    import torch

    from .graph import _quiet

    _quiet()  # in the export's own process (graph.export_raw) too
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out_dir.mkdir(parents=True, exist_ok=False)
    token_types = uses_token_types(config)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    batch, length = EXAMPLE_SHAPE
    ids = torch.full((batch, length), 5, dtype=torch.long)
    mask = torch.ones((batch, length), dtype=torch.long)
    mask[1, length // 2 :] = 0  # a padded row, so nothing about the mask is taken as constant
    example = (ids, mask) + ((torch.zeros_like(ids),) if token_types else ())
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    dynamic = {name: axes for name in names}
    dest = out_dir / "model.onnx"
    try:
        model = load_module(checkpoint, task)
        with torch.no_grad():
            program = torch.onnx.export(
                _wrapper(model, OUTPUT_NAMES[task], token_types),
                example,
                dynamo=True,
                input_names=names,
                output_names=[OUTPUT_NAMES[task]],
                dynamic_shapes=dynamic,
                opset_version=opset or OPSET,
                external_data=True,
                optimize=True,
                verbose=False,
            )
        del model
        if program is None:  # only without dynamo=True
            raise ExportError("torch.onnx.export returned no ONNX program")
        name_by_scope(program.model)
        program.save(str(dest), external_data=True)
        del program
        fusable_attention(dest)
    except Exception as exc:
        raise ExportError(f"ONNX export of {checkpoint} failed: {type(exc).__name__}: {exc}") from exc
    if not dest.is_file():
        raise ExportError(f"ONNX export of {checkpoint} wrote no model.onnx")
    return dest


def scope_path(scopes: str) -> str:
    """'/encoder/layer.0/output/dense' from the exporter's name-scope list ("['', 'model', 'model.encoder', ...,
    'model.encoder.layer.0.output.dense', 'linear_5']": each module's full dotted path, then the traced call's
    own name): the innermost module, one segment per attribute, a list index kept with its list ('layer.0'), as
    the TorchScript exporter named scopes. The wrapper's own attribute ('model') is no part of the checkpoint's
    module tree."""
    try:
        entries = [s for s in ast.literal_eval(scopes) if isinstance(s, str) and s]
    except (ValueError, SyntaxError):
        return ""
    modules = entries[:-1]  # the last entry names the traced call (linear_5), not a module
    if not modules or modules[-1].startswith("_"):  # the exporter's own scopes (shape helpers): no module
        return ""
    parts: list[str] = []
    for part in modules[-1].split("."):
        if part.isdigit() and parts:
            parts[-1] = f"{parts[-1]}.{part}"
        else:
            parts.append(part)
    if parts and parts[0] == "model":
        parts = parts[1:]
    return "/" + "/".join(parts) if parts else ""


def name_by_scope(model: Any) -> int:
    """Rename each node after the module that produced it ('/encoder/layer.0/output/dense/MatMul'): the int8
    writers pick the FFN projections by these paths (graph.is_ffn_out), and a profile reads like the model.
    The exporter's debugging metadata (stack traces with this machine's paths) is dropped from the graph.
    Returns how many nodes were renamed."""
    seen: dict[str, int] = {}
    renamed = 0
    for node in model.graph.all_nodes():
        path = scope_path(node.metadata_props.get("pkg.torch.onnx.name_scopes", ""))
        node.metadata_props.clear()
        if not path:
            continue
        base = f"{path}/{node.op_type}"
        k = seen.get(base, 0)
        seen[base] = k + 1
        node.name = base if k == 0 else f"{base}_{k}"
        renamed += 1
    return renamed


def fusable_attention(path: Path) -> dict[str, int]:
    """Rewrite the saved graph (its weights are not read) into the shapes onnxruntime's attention fusion matches;
    returns how many of each rewrite were made.

    - The exporter's optimizer merges the mask's two Unsqueezes into one with axes [1, 2]; the fusion matches
      only the pair, so it is split back.
    - transformers 5 scales the scores by a Mul (QK^T * d^-0.5). The fusion finds the mask's Mul and the scores'
      scaling by op type alone, first match wins: with both a Mul it takes the wrong one and gives up. The
      scaling becomes a Div by sqrt(d), the form transformers 4 wrote (the same value to one float rounding)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    consts = {t.name: t for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
    producer = {o: n for n in g.node for o in n.output}
    softmax_inputs = {n.input[0] for n in g.node if n.op_type == "Softmax"}
    nodes: list[Any] = []
    counts = {"mask_unsqueeze_split": 0, "score_scale_as_div": 0}

    def scalar(name: str) -> float | None:
        t = consts.get(name)
        if t is None:
            return None
        values = numpy_helper.to_array(t)
        return float(values.ravel()[0]) if values.size == 1 else None

    scale_muls: set[str] = set()
    for node in g.node:
        if node.op_type == "Add" and node.output[0] in softmax_inputs:
            for inp in node.input:
                mul = producer.get(inp)
                if (
                    mul is not None
                    and mul.op_type == "Mul"
                    and getattr(producer.get(mul.input[0]), "op_type", "") == "MatMul"
                ):
                    if scalar(mul.input[1]) not in (None, 0.0):
                        scale_muls.add(mul.output[0])
    for node in g.node:
        if node.op_type == "Mul" and node.output[0] in scale_muls:
            c = scalar(node.input[1])
            assert c is not None
            name = f"{node.name or 'score_scale'}_as_div"
            g.initializer.append(numpy_helper.from_array(np.array(1.0 / c, dtype=np.float32), f"{name}_divisor"))
            nodes.append(helper.make_node("Div", [node.input[0], f"{name}_divisor"], [node.output[0]], name=name))
            counts["score_scale_as_div"] += 1
            continue
        axes = consts.get(node.input[1]) if node.op_type == "Unsqueeze" and len(node.input) > 1 else None
        values = [] if axes is None else [int(a) for a in numpy_helper.to_array(axes).ravel()]
        if node.input[0] != "attention_mask" or len(values) < 2:
            nodes.append(node)
            continue
        current = node.input[0]
        for k, axis in enumerate(sorted(values)):
            name = f"{node.name or 'mask_unsqueeze'}_{k}"
            g.initializer.append(helper.make_tensor(f"{name}_axes", onnx.TensorProto.INT64, [1], [axis]))
            out = node.output[0] if k == len(values) - 1 else f"{name}_out"
            nodes.append(helper.make_node("Unsqueeze", [current, f"{name}_axes"], [out], name=name))
            current = out
        counts["mask_unsqueeze_split"] += 1
    if any(counts.values()):
        del g.node[:]
        g.node.extend(nodes)
        onnx.save(model, str(path))
    return counts


def main(argv: list[str]) -> int:
    """`python -m e5rt_export.torch_export CHECKPOINT OUT_DIR TASK OPSET` with the config as JSON on stdin: the
    export in a process of its own (graph.export_raw). An ExportError is one marked line on stderr, exit 1."""
    import json
    import sys

    checkpoint, out_dir, task, opset = argv
    try:
        export_onnx(Path(checkpoint), Path(out_dir), task, json.load(sys.stdin), int(opset) or None)
    except ExportError as exc:
        print(f"{ERROR_MARK}{exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
