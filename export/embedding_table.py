"""Block-quantize the word-embedding table of a fused encoder graph.

The table is most of an XLM-R file (250,002 rows: 1 GB of the large model's 2.2 GB in fp32, 384 MB of
me5-small-r's 470 MB) and every byte of it is resident while serving, yet a batch reads only its own rows. Stored
as uint8 in blocks of 32 columns with a scale and zero point per block (GatherBlockQuantized), it shrinks to
~28 % and a row comes back with cosine >= 0.9999 to the original.

Where the embedding is not fused (the transformer optimizer leaves graphs over 2 GB unfused: measured on
XLM-R-large), the table's Gather becomes a GatherBlockQuantized with the same inputs. Where it is fused,
EmbedLayerNormalization reads the table itself and cannot take gathered rows, so the rewrite replaces it with
the computation it fuses: gathered word rows + position rows (0..L-1, as the fused op uses) + token-type rows,
then LayerNormalization; and its mask-index output (tokens per row, which the Attention nodes read) with a
ReduceSum of the same mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import graph as stages
from .errors import ExportError

BLOCK = 32
PREFIX = "e5rt_table"  # names of the nodes and initializers the rewrite adds


class TableNotRewritable(ExportError):
    """The graph has no fused embedding this rewrite understands; the variant keeps its table as exported."""


def block_for(width: int) -> int | None:
    """The quantization block for a table WIDTH wide: 32, else 16 (the kernel's smallest), else None."""
    return next((b for b in (BLOCK, 16) if width % b == 0), None)


def quantize_block_rows(table: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric uint8 per (row, block of columns): returns (q [V,H] uint8, scales [V,H/block], zero points)."""
    rows, cols = table.shape
    if cols % block:
        raise TableNotRewritable(f"embedding width {cols} is not a multiple of the quantization block {block}")
    blocks = table.reshape(rows, cols // block, block).astype(np.float32)
    lo = np.minimum(blocks.min(axis=2), 0.0)  # the range holds 0 so that 0 is exact
    hi = np.maximum(blocks.max(axis=2), 0.0)
    scale = (hi - lo) / 255.0
    scale[scale == 0] = 1.0  # an all-zero block (padding rows): any scale reproduces it
    zero = np.clip(np.round(-lo / scale), 0, 255)
    q = np.clip(np.round(blocks / scale[..., None]) + zero[..., None], 0, 255)
    return q.astype(np.uint8).reshape(rows, cols), scale.astype(np.float32), zero.astype(np.uint8)


def dequantize_block_rows(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    rows, cols = q.shape
    blocks = q.reshape(rows, scale.shape[1], -1).astype(np.float32) - zero[..., None].astype(np.float32)
    return (blocks * scale[..., None]).reshape(rows, cols)


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def quantize_embedding_table(src: Path, dest: Path, vocab_size: int) -> dict[str, Any]:
    """Write SRC's graph to DEST with its VOCAB_SIZE-row word-embedding table block-quantized; returns manifest
    facts. Raises TableNotRewritable (before writing anything) when no such constant table is read by one fused
    embedding or one Gather, or its width does not suit the kernel."""
    model = onnx.load(str(src))  # with external data: the table is rewritten
    graph = model.graph
    inits = _initializers(graph)
    fused = [n for n in graph.node if n.op_type == "EmbedLayerNormalization"]
    if not fused:
        return _rewrite_gather(model, inits, dest, vocab_size)
    if len(fused) != 1:
        raise TableNotRewritable(f"expected one fused EmbedLayerNormalization, found {len(fused)}")
    eln = fused[0]
    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < 17:
        raise TableNotRewritable("the rewrite needs LayerNormalization (opset 17 or newer)")
    ins = list(eln.input) + [""] * (9 - len(eln.input))
    ids, segment, word, position, segment_table, gamma, beta, mask, position_ids = ins[:9]
    if word not in inits or list(inits[word].dims)[:1] != [vocab_size]:
        raise TableNotRewritable(f"the fused embedding's table {word!r} is not a constant with {vocab_size} rows")
    if len(eln.output) > 2 and eln.output[2]:
        raise TableNotRewritable("the fused embedding's third output (embedding sum) is used")
    if len(eln.output) > 1 and eln.output[1] and not mask:
        raise TableNotRewritable("the fused embedding has a mask-index output but no mask input")
    quant = _Quantized.of(inits[word])
    eps = next((a.f for a in eln.attribute if a.name == "epsilon"), 1e-12)
    new_inits = quant.initializers()
    nodes = [quant.gather(ids, f"{PREFIX}_words")]
    if position_ids:
        nodes.append(helper.make_node("Gather", [position, position_ids], [f"{PREFIX}_pos"], name=f"{PREFIX}_pos"))
    else:
        # Positions 0..L-1, what the fused op uses when no position ids are given.
        new_inits += [
            numpy_helper.from_array(np.array([0], dtype=np.int64), f"{PREFIX}_zero"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), f"{PREFIX}_one"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), f"{PREFIX}_two"),
        ]
        nodes += [
            helper.make_node("Shape", [ids], [f"{PREFIX}_shape"], name=f"{PREFIX}_shape"),
            helper.make_node(
                "Slice", [f"{PREFIX}_shape", f"{PREFIX}_one", f"{PREFIX}_two"], [f"{PREFIX}_len"], name=f"{PREFIX}_len"
            ),
            helper.make_node(
                "Slice",
                [position, f"{PREFIX}_zero", f"{PREFIX}_len", f"{PREFIX}_zero"],
                [f"{PREFIX}_pos"],
                name=f"{PREFIX}_pos",
            ),
        ]
    total = f"{PREFIX}_words_pos"
    nodes.append(helper.make_node("Add", [f"{PREFIX}_words", f"{PREFIX}_pos"], [total], name=f"{PREFIX}_add_pos"))
    if segment and segment_table:
        nodes += [
            helper.make_node("Gather", [segment_table, segment], [f"{PREFIX}_seg"], name=f"{PREFIX}_seg"),
            helper.make_node("Add", [total, f"{PREFIX}_seg"], [f"{PREFIX}_sum"], name=f"{PREFIX}_add_seg"),
        ]
        total = f"{PREFIX}_sum"
    nodes.append(
        helper.make_node(
            "LayerNormalization", [total, gamma, beta], [eln.output[0]], name=f"{PREFIX}_norm", axis=-1, epsilon=eps
        )
    )
    if len(eln.output) > 1 and eln.output[1]:
        # Tokens per row, as int32: what the fused op hands the Attention nodes for right-padded batches.
        nodes.append(
            helper.make_node(
                "ReduceSum", [mask, f"{PREFIX}_axis1"], [eln.output[1]], name=f"{PREFIX}_mask_index", keepdims=0
            )
        )
        new_inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), f"{PREFIX}_axis1"))

    position_in_graph = list(graph.node).index(eln)
    kept = [n for n in graph.node if n is not eln]
    del graph.node[:]
    graph.node.extend(kept[:position_in_graph] + nodes + kept[position_in_graph:])
    return _finish(model, word, new_inits, quant, dest)


@dataclass
class _Quantized:
    """A table and its uint8 blocks, and the graph pieces that read them."""

    table: np.ndarray
    block: int
    q: np.ndarray
    scale: np.ndarray
    zero: np.ndarray

    @classmethod
    def of(cls, init: onnx.TensorProto) -> _Quantized:
        table = numpy_helper.to_array(init)
        if table.ndim != 2 or table.dtype != np.float32:
            raise TableNotRewritable(f"the table is {table.dtype} {list(table.shape)}, not a float32 matrix")
        block = block_for(table.shape[1])
        if block is None:
            raise TableNotRewritable(f"embedding width {table.shape[1]} is not a multiple of 16")
        return cls(table, block, *quantize_block_rows(table, block))

    def initializers(self) -> list[onnx.TensorProto]:
        return [
            numpy_helper.from_array(self.q, f"{PREFIX}_q"),
            numpy_helper.from_array(self.scale, f"{PREFIX}_scales"),
            numpy_helper.from_array(self.zero, f"{PREFIX}_zero_points"),
        ]

    def gather(self, ids: str, output: str) -> onnx.NodeProto:
        return helper.make_node(
            "GatherBlockQuantized",
            [f"{PREFIX}_q", ids, f"{PREFIX}_scales", f"{PREFIX}_zero_points"],
            [output],
            name=f"{PREFIX}_gather",
            domain="com.microsoft",
            gather_axis=0,
            quantize_axis=1,
            block_size=self.block,
            bits=8,
        )


def _rewrite_gather(
    model: onnx.ModelProto, inits: dict[str, onnx.TensorProto], dest: Path, vocab_size: int
) -> dict[str, Any]:
    """The unfused graph: the Gather that reads the constant [vocab_size, H] matrix is the word-embedding lookup."""
    graph = model.graph
    gathers = [
        n
        for n in graph.node
        if n.op_type == "Gather" and n.input[0] in inits and list(inits[n.input[0]].dims)[:1] == [vocab_size]
    ]
    if len(gathers) != 1:
        raise TableNotRewritable(
            f"no fused EmbedLayerNormalization, and {len(gathers)} Gathers read a constant table of {vocab_size} rows"
        )
    node = gathers[0]
    word = node.input[0]
    if sum(1 for n in graph.node for i in n.input if i == word) != 1:
        raise TableNotRewritable(f"the table {word!r} has readers besides its Gather")
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if axis != 0:
        raise TableNotRewritable(f"the table's Gather reads axis {axis}, not rows")
    quant = _Quantized.of(inits[word])
    replacement = quant.gather(node.input[1], node.output[0])
    nodes = [replacement if n is node else n for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return _finish(model, word, quant.initializers(), quant, dest)


def _finish(
    model: onnx.ModelProto,
    word: str,
    new_inits: list[onnx.TensorProto],
    quant: _Quantized,
    dest: Path,
) -> dict[str, Any]:
    """Drop the fp32 table, add the quantized one, save (external data only when still over the proto limit)."""
    graph = model.graph
    kept_inits = [t for t in graph.initializer if t.name != word]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = sum(t.ByteSize() for t in graph.initializer)
    if size > stages.EXTERNAL_DATA_BYTES:  # read at call time: one limit for every stage
        onnx.save_model(model, str(dest), save_as_external_data=True, location=dest.name + ".data")
    else:
        onnx.save_model(model, str(dest))
    table = quant.table
    deq = dequantize_block_rows(quant.q, quant.scale, quant.zero)
    row_cos = np.sum(deq * table, axis=1) / np.maximum(
        np.linalg.norm(deq, axis=1) * np.linalg.norm(table, axis=1), 1e-12
    )
    nonzero = np.linalg.norm(table, axis=1) > 0
    return {
        "method": "GatherBlockQuantized uint8, asymmetric, per row and block of columns",
        "block_size": quant.block,
        "rows": int(table.shape[0]),
        "fp32_bytes": int(table.nbytes),
        "bytes": int(quant.q.nbytes + quant.scale.nbytes + quant.zero.nbytes),
        "min_row_cos": round(float(row_cos[nonzero].min()), 6),
    }
