"""The dependency rules of docs/architecture.md, enforced: who may import whom, and what `import e5rt` loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "e5rt"
HEAVY = ("torch", "transformers", "optimum", "onnx", "sentence_transformers", "fastembed", "matplotlib", "ray")
# Modules of the runtime a stage outside it (the export stage) may import: the public surface.
PUBLIC = {
    "e5rt",
    "e5rt.errors",
    "e5rt.config",
    "e5rt.manifest",
    "e5rt.core",
    "e5rt.backends",
    "e5rt.engine",
    "e5rt.cpu",
    "e5rt.pull",  # what a source is (hub id, generated) and the variant names the cache and the export share
    "e5rt.progress",  # progress lines and the process's own memory figures: the CLI, bench and export share them
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Absolute names of every module a file imports (relative imports resolved), at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.append(mod)
            names.extend(f"{mod}.{alias.name}" for alias in node.names)
    return names


def _imports_of(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules one import statement of a module directly in e5rt/ names (relative ones resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [("e5rt." if node.level else "") + (node.module or "")]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for f in files:
        for name in _imports(f):
            if any(name == x or name.startswith(x + ".") for x in forbidden):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    return bad


def test_core_never_imports_onnxruntime_or_the_rooms_above() -> None:
    forbidden = ("onnxruntime", "e5rt.backends", "e5rt.batching", "e5rt.engine", "e5rt.cli", "e5rt.bench", *HEAVY)
    assert _violations(_files(RUNTIME / "core"), forbidden) == []


def test_backends_import_only_core() -> None:
    forbidden = ("e5rt.batching", "e5rt.engine", "e5rt.cli", "e5rt.bench", "e5rt.server", *HEAVY)
    assert _violations(_files(RUNTIME / "backends"), forbidden) == []


def test_batching_never_imports_the_engine_or_interfaces() -> None:
    forbidden = ("onnxruntime", "e5rt.engine", "e5rt.cli", "e5rt.bench", "e5rt.server", *HEAVY)
    assert _violations(_files(RUNTIME / "batching"), forbidden) == []


def test_runtime_never_imports_export_bench_or_heavy_libraries() -> None:
    """Everything in e5rt/ except the benchmark runner itself and the CLI's lazy export/bench dispatch."""
    runtime = [f for f in _files(RUNTIME) if "bench" not in f.relative_to(RUNTIME).parts]
    lazy = (RUNTIME / "cli.py", RUNTIME / "pull.py")  # the commands that may export or benchmark
    bad = _violations([f for f in runtime if f not in lazy], ("e5rt_export", "export", "e5rt.bench", *HEAVY))
    # e5rt/ray.py is the Ray extra's integration: it imports ray, and nothing else may (test below). The
    # sentence-transformers stand-in imports torch only for convert_to_tensor=True (test below).
    allowed = ("e5rt/ray.py imports ray", "e5rt/integrations/sentence_transformers.py imports torch")
    assert [b for b in bad if not b.startswith(allowed)] == []
    # The CLI and the model cache import them only inside the functions that export or benchmark.
    for path in lazy:
        assert _violations([path], HEAVY) == []
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = _imports_of(node)
                assert not any(n == "export" or n.startswith(("e5rt_export", "e5rt.bench")) for n in names), path


def test_nothing_imports_the_server_but_the_cli() -> None:
    others = [f for f in _files(RUNTIME) if "server" not in f.relative_to(RUNTIME).parts and f.name != "cli.py"]
    assert _violations(others, ("e5rt.server", "starlette", "uvicorn", "prometheus_client")) == []


def test_export_stage_uses_only_public_runtime_names() -> None:
    bad = []
    for f in _files(ROOT / "export"):
        for name in _imports(f):
            if name == "e5rt" or name.startswith("e5rt."):
                module = name if name in PUBLIC else name.rsplit(".", 1)[0]
                leaf = name.rsplit(".", 1)[-1]
                private = leaf.startswith("_") and not leaf.startswith("__")
                if module not in PUBLIC or private:
                    bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_export_package_does_not_leak_its_folder_name() -> None:
    """Installed, the export stage is e5rt_export; a bare `import export` must not find it."""
    code = "import importlib.util, e5rt_export; print(importlib.util.find_spec('export'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None"


def test_every_error_belongs_to_the_tree() -> None:
    import inspect

    import e5rt_export.errors as export_errors

    import e5rt.errors as runtime_errors
    from e5rt.errors import HTTP_STATUS, E5rtError

    classes = [
        obj
        for mod in (runtime_errors, export_errors)
        for _, obj in inspect.getmembers(mod, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == mod.__name__
    ]
    assert len(classes) >= 20
    for cls in classes:
        assert issubclass(cls, E5rtError), cls
        assert cls.kind in HTTP_STATUS, cls


@pytest.mark.parametrize("folder", ["e5rt", "export"])
def test_no_module_raises_bare_builtin_errors_on_purpose(folder: str) -> None:
    """Errors raised on purpose use the tree (a bare ValueError cannot be mapped to a status or exit code)."""
    bad = []
    for f in _files(ROOT / folder):
        if "bench" in f.relative_to(ROOT).parts or f.name == "fake.py":
            continue  # the benchmark runner is a tool; the fake backend imitates a foreign library's failure
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
                if node.exc.func.id in ("ValueError", "TypeError", "RuntimeError", "Exception"):
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno} raises {node.exc.func.id}")
    assert bad == []


def test_only_the_ray_module_imports_ray_and_only_corpus_output_imports_pyarrow() -> None:
    files = list(_files(RUNTIME))
    not_ray = [f for f in files if f.name != "ray.py"]
    assert _violations(not_ray, ("ray",)) == []
    no_arrow = [f for f in not_ray if "corpus" not in f.relative_to(RUNTIME).parts]
    assert _violations(no_arrow, ("pyarrow",)) == []


FRAMEWORKS = ("langchain_core", "langchain", "llama_index", "haystack", "haystack_integrations")


def test_only_integrations_import_frameworks_and_each_only_its_own() -> None:
    others = [f for f in _files(RUNTIME) if "integrations" not in f.relative_to(RUNTIME).parts]
    assert _violations(others, ("e5rt.integrations", *FRAMEWORKS)) == []
    own = {"langchain.py": "langchain_core", "llama_index.py": "llama_index", "haystack.py": "haystack"}
    for f in _files(RUNTIME / "integrations"):
        mine = own.get(f.name)
        assert _violations([f], tuple(x for x in FRAMEWORKS if x != mine and not (mine or "").startswith(x))) == []
    # torch only inside the function that converts to a tensor, never at import
    shim = RUNTIME / "integrations" / "sentence_transformers.py"
    top = [n for n in ast.parse(shim.read_text(encoding="utf-8")).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any("torch" in ast.unparse(n) for n in top)


def test_the_serving_core_has_no_http_in_it() -> None:
    """Only the HTTP adapter (app.py) and the runner (main.py) import Starlette or uvicorn."""
    core = [f for f in _files(RUNTIME / "server") if f.name not in ("app.py", "main.py")]
    assert _violations(core, ("starlette", "uvicorn", "e5rt.server.app", "e5rt.server.main")) == []
