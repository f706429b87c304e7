"""Export stage: manifest schema and hashes, fusions, parity, error paths, idempotence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from e5rt_export import (
    DiskSpaceError,
    ExportError,
    ExportOptions,
    HubUnreachableError,
    MissingTokenizerError,
    OutputExistsError,
    OutputNotWritableError,
    ParityError,
    UnsupportedArchitectureError,
    export_model,
    parse_variants,
)
from e5rt_export.source import default_prompt_scheme, input_hashes
from e5rt_export.validate import THRESHOLDS

from e5rt.manifest import load_manifest, sha256_file, verify_files

QUIET = ExportOptions(variants=("fp32",), progress=False)


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
def test_tiny_export_manifest_schema_hashes_parity(tiny_models: dict[str, Path], kind: str) -> None:
    root = tiny_models[kind]
    m = load_manifest(root)  # strict schema parse
    assert m.schema_version == 1
    assert set(m.variants) == {"fp32", "fp16", "fp16-packed", "int8", "int8-static"}
    assert m.architecture["model_type"] == kind and m.architecture["num_layers"] == 2
    assert m.tokenizer == "tokenizer.json" and (root / m.tokenizer).is_file()
    assert m.source["kind"] == "local" and m.source["files"]
    assert m.synthetic is False
    for name, v in m.variants.items():
        verify_files(root, v)  # sizes and sha256 match the files on disk
        for f in v.files:
            assert sha256_file(root / f.path) == f.sha256
        assert v.parity.n_texts >= 64
        assert v.parity.passed and v.parity.min_cos >= THRESHOLDS[v.precision], name
        assert v.parity.min_cos <= v.parity.mean_cos <= 1.0 + 1e-6
    assert m.variants["int8"].quantization is not None and m.variants["int8"].providers == ("cpu",)
    assert m.variants["fp16-packed"].packed and m.variants["fp16-packed"].providers == ("cuda",)
    assert m.variants["fp16-packed"].raw["requires"] == "cuda"


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
def test_fusions_really_happened(tiny_models: dict[str, Path], kind: str) -> None:
    m = load_manifest(tiny_models[kind])
    for name in ("fp32", "fp16"):
        check = m.variants[name].optimizations["fusion_check"]
        assert check["complete"], (name, check)
        counts = m.variants[name].optimizations["fused_ops"]
        assert counts.get("Attention", 0) == 2
        if name == "fp32":  # the CPU graph: split into Add + LayerNormalization (faster there)
            assert counts.get("SkipLayerNormalization", 0) == 0 and counts.get("LayerNormalization", 0) >= 4
        else:
            assert counts.get("SkipLayerNormalization", 0) == 4
        assert counts.get("BiasGelu", 0) + counts.get("Gelu", 0) + counts.get("FastGelu", 0) == 2
    packed = m.variants["fp16-packed"].optimizations["fused_ops"]
    assert packed.get("PackedAttention", 0) == 2 and packed.get("RemovePadding", 0) == 1


def test_split_skip_layernorm_computes_the_same() -> None:
    """The CPU graphs' SkipLayerNormalization split into Add + Add + LayerNormalization gives the fused op's
    values, with and without its bias and beta; a node whose other outputs are used stays fused."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from e5rt_export.graph import split_skip_layernorm
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dim = 32
    weights = {n: rng.standard_normal(dim).astype(np.float32) for n in ("gamma", "beta", "bias")}
    feeds = {n: rng.standard_normal((2, 5, dim)).astype(np.float32) for n in ("x", "skip")}
    for inputs in (["x", "skip", "gamma", "beta", "bias"], ["x", "skip", "gamma", "", "bias"], ["x", "skip", "gamma"]):
        node = helper.make_node(
            "SkipLayerNormalization", inputs, ["y"], domain="com.microsoft", epsilon=1e-5, name="sln"
        )
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, dim]) for n in ("x", "skip")],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, dim])],
            [numpy_helper.from_array(v, n) for n, v in weights.items() if n in inputs],
        )
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        fused = helper.make_model(graph, opset_imports=opsets)
        split = helper.make_model(graph, opset_imports=opsets)
        assert split_skip_layernorm(split.graph) == 1
        assert [n.op_type for n in split.graph.node].count("SkipLayerNormalization") == 0

        def run(model: onnx.ModelProto) -> np.ndarray:
            session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return np.asarray(session.run(None, feeds)[0])

        np.testing.assert_allclose(run(split), run(fused), atol=2e-5, rtol=0)
    two = helper.make_node(
        "SkipLayerNormalization", ["x", "skip", "gamma"], ["y", "", "", "sum"], domain="com.microsoft"
    )
    graph = helper.make_graph([two], "g", [], [])
    assert split_skip_layernorm(graph) == 0 and graph.node[0].op_type == "SkipLayerNormalization"


def test_fusions_infer_shapes_on_a_weightless_copy() -> None:
    """The fusion stage's shape inference runs on a copy without the weight data (export memory): the shapes
    it infers are the ones the full model gives, and the copy is a fraction of the model's bytes."""
    import numpy as np
    from e5rt_export.graph import weightless
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    w = numpy_helper.from_array(np.ones((256, 512), dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, -1, 2, 256], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    light = weightless(model)
    assert light.ByteSize() < model.ByteSize() / 100
    assert {t.name: list(t.dims) for t in light.graph.initializer} == {"w": [256, 512], "shape": [4]}

    def shapes(m: object) -> dict[str, list[object]]:
        out = SymbolicShapeInference.infer_shapes(m, auto_merge=True)
        return {
            v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*out.graph.value_info, *out.graph.output]
        }

    assert shapes(light) == shapes(model) and shapes(model)["y"] == ["batch", "seq", 2, 256]


def test_fp16_graph_runs_on_cpu_provider(tiny_models: dict[str, Path]) -> None:
    import numpy as np
    import onnxruntime as ort

    path = tiny_models["xlm-roberta"] / "fp16" / "model.onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 5, 6, 7, 2]], dtype=np.int64)
    feeds = {i.name: (ids if i.name == "input_ids" else np.ones_like(ids)) for i in sess.get_inputs()}
    out = sess.run(None, feeds)[0]
    assert out.dtype == np.float16 and np.isfinite(out).all()


def test_export_leaves_inputs_untouched(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tiny_checkpoints["bert"]
    before = input_hashes(ckpt)
    manifest = export_model(str(ckpt), tmp_path / "out", QUIET)
    assert input_hashes(ckpt) == before
    assert manifest["source"]["files"] == before
    assert not list(tmp_path.glob(".out.partial-*")), "staging directory left behind"


def test_existing_output_needs_force_and_is_replaced_only_on_success(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier output")
    with pytest.raises(OutputExistsError, match="--force"):
        export_model(str(tiny_checkpoints["bert"]), out, QUIET)
    # A failing forced export must not destroy the earlier output.
    with pytest.raises(ExportError):
        export_model(
            str(tiny_checkpoints["bert"]),
            out,
            ExportOptions(variants=("fp32",), max_length=10_000, force=True, progress=False),
        )
    assert (out / "keep.txt").read_text() == "earlier output"
    export_model(str(tiny_checkpoints["bert"]), out, ExportOptions(variants=("fp32",), force=True, progress=False))
    assert (out / "manifest.json").is_file() and not (out / "keep.txt").exists()


def test_unsupported_architecture_lists_supported(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tmp_path / "gpt"
    shutil.copytree(tiny_checkpoints["bert"], ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match="gpt2.*supported: bert, roberta, xlm-roberta"):
        export_model(str(ckpt), tmp_path / "out", QUIET)


def test_missing_tokenizer(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tmp_path / "notok"
    ckpt.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_checkpoints["bert"] / name, ckpt / name)
    with pytest.raises(MissingTokenizerError, match="no tokenizer"):
        export_model(str(ckpt), tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


def test_unwritable_output(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError, match="is a file"):
        export_model(str(tiny_checkpoints["bert"]), blocker / "sub" / "out", QUIET)
    # /proc refuses new directories even for root.
    with pytest.raises(OutputNotWritableError, match="not writable"):
        export_model(str(tiny_checkpoints["bert"]), Path("/proc/e5rt-test/out"), QUIET)


def test_disk_too_small(tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("e5rt_export.pipeline.shutil.disk_usage", lambda _p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskSpaceError, match="GB free, the export needs about"):
        export_model(str(tiny_checkpoints["bert"]), tmp_path / "out", QUIET)


def test_hub_unreachable_says_how_to_pass_a_local_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(HubUnreachableError, match="pass its local directory"):
        export_model("intfloat/multilingual-e5-large-instruct", tmp_path / "out", QUIET)


def test_hub_unreachable_over_the_network_through_the_cli(tmp_path: Path) -> None:
    """Network on, but the hub endpoint refuses connections (a closed port on loopback)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HUB_CACHE": str(tmp_path / "cache"),
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "2",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "e5rt.cli",
            "export",
            "intfloat/multilingual-e5-large-instruct",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "cannot reach the Hugging Face hub" in proc.stderr
    assert "e5rt export /path/to/checkpoint --out DIR" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_hub_id_code_path_from_local_cache(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id resolves through huggingface_hub; offline, a populated cache stands in for the network."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--e5rt-test--tiny-bert"
    shutil.copytree(tiny_checkpoints["bert"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manifest = export_model("e5rt-test/tiny-bert", tmp_path / "out", QUIET)
    assert manifest["source"]["kind"] == "hub"
    assert manifest["source"]["id"] == "e5rt-test/tiny-bert"
    assert manifest["source"]["revision"] == commit
    assert manifest["name"] == "tiny-bert"


def test_parity_failure_names_variant_and_text(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(THRESHOLDS, "fp32", 1.01)  # unreachable: every export must fail
    with pytest.raises(ParityError, match=r"variant fp32 failed parity: min cos .* < 1.01 on probe text #\d+"):
        export_model(str(tiny_checkpoints["bert"]), tmp_path / "out", QUIET)
    opts = ExportOptions(variants=("fp32",), allow_failed_parity=True, progress=False)
    manifest = export_model(str(tiny_checkpoints["bert"]), tmp_path / "out2", opts)
    assert manifest["variants"]["fp32"]["parity"]["passed"] is False


def test_variant_spec_parsing() -> None:
    assert parse_variants("fp32,int8") == ("fp32", "int8")
    assert parse_variants("fp16-packed") == ("fp16-packed", "fp16")
    with pytest.raises(ExportError, match="unknown variant"):
        parse_variants("fp8")


def test_prompt_scheme_defaults_from_name() -> None:
    assert default_prompt_scheme("multilingual-e5-large-instruct") == "instruct"
    assert default_prompt_scheme("multilingual-e5-small") == "query-passage"
    assert default_prompt_scheme("e5-base-v2") == "query-passage"
    assert default_prompt_scheme("all-MiniLM-L6-v2") == "none"


def test_external_data_path(tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints over the protobuf limit write weights as external data; force that path on a tiny model."""
    import numpy as np

    from e5rt import Embedder

    monkeypatch.setattr("e5rt_export.graph.EXTERNAL_DATA_BYTES", 0)
    ckpt = tiny_checkpoints["bert"]
    before = input_hashes(ckpt)
    out = tmp_path / "out"
    export_model(str(ckpt), out, ExportOptions(variants=("fp32", "fp16", "int8", "int8-static"), progress=False))
    m = load_manifest(out)
    for name in ("fp32", "fp16", "int8", "int8-static"):
        files = [f.path for f in m.variants[name].files]
        assert files[0] == f"{name}/model.onnx" and len(files) >= 2, (name, files)
        verify_files(out, m.variants[name])
    assert input_hashes(ckpt) == before
    emb = Embedder.load(out, variant="fp32", provider="cpu")
    assert np.isfinite(emb.encode(["external data works"])).all()


def test_static_int8_writer_quantizes_and_smooths_only_outlier_inputs() -> None:
    """export/static_int8.py's writer on a two-MatMul graph: the result stays close to fp32, every MatMul reads a
    DequantizeLinear, a smoothing Mul goes only before the input with an outlier channel, and it helps."""
    import numpy as np
    import onnxruntime as ort
    from e5rt_export.static_int8 import SMOOTH_MIN_RATIO, outlier_ratio, quantize_weight, write_static_int8
    from onnx import TensorProto, helper, numpy_helper

    from e5rt.cpu import exact_int8_needed

    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(32, 48)).astype(np.float32)
    w2 = rng.normal(size=(48, 16)).astype(np.float32) / 7
    x = rng.normal(size=(256, 32)).astype(np.float32)
    x[:, 5] *= 40  # one outlier channel, as LayerNorm outputs of real models have
    h = x @ w1
    ranges = {"x": (x.min(0), x.max(0)), "h": (h.min(0), h.max(0))}
    assert outlier_ratio(*ranges["x"]) >= SMOOTH_MIN_RATIO > outlier_ratio(*ranges["h"])
    ref = x @ w1 @ w2

    def quantized(alpha: float | None) -> tuple[dict[str, int], list[str], float]:
        graph = helper.make_graph(
            [
                helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
                helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2"),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
            [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        done = write_static_int8(model, dict(ranges), "QInt8", alpha=alpha)
        so = ort.SessionOptions()
        if exact_int8_needed("QInt8"):  # as the runtime loads s8 weights on x86 without VNNI (e5rt.cpu)
            so.add_session_config_entry("session.x64quantprecision", "1")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": x})[0]
        return done, [n.op_type for n in model.graph.node], float(np.linalg.norm(got - ref) / np.linalg.norm(ref))

    done, ops, err = quantized(0.6)
    assert done == {"matmuls": 2, "attentions": 0, "smoothed": 1, "folded_into_values": 0, "excluded": 0}
    assert ops.count("Mul") == 1 and ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 4
    _, plain_ops, plain_err = quantized(None)
    assert "Mul" not in plain_ops and err < 0.02 and plain_err > 1.5 * err, (err, plain_err)

    for wtype, dtype, zero in (("QInt8", np.int8, 0), ("QUInt8", np.uint8, 128)):
        q, scale, zp = quantize_weight(w1, wtype)
        assert q.dtype == dtype and zp.dtype == dtype and (zp == zero).all() and scale.shape == (48,)
        back = (q.astype(np.float32) - zero) * scale
        assert np.abs(back - w1).max() <= scale.max() / 2 + 1e-6  # per column, within half a step
