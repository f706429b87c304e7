"""`import e5rt` and an encode on a real graph load nothing heavy: no export stage, server, integration,
torch, transformers or onnxruntime at import (the dependency rules themselves: tests/unit/test_layering.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.test_layering import HEAVY


def test_import_e5rt_and_encode_load_nothing_heavy(tiny_models: dict[str, Path]) -> None:
    code = f"""
import json, sys
import e5rt
after_import = sorted(sys.modules)
emb = e5rt.Embedder.load({str(tiny_models["bert"])!r}, provider="cpu")
emb.encode(["a text", "another one"])
print(json.dumps([after_import, sorted(sys.modules)]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr
    after_import, after_encode = json.loads(proc.stdout.strip().splitlines()[-1])
    roots = (
        "e5rt_export",
        "export",
        "e5rt.bench",
        "e5rt.cli",
        "e5rt.server",
        "e5rt.integrations",
        "starlette",
        "uvicorn",
        *HEAVY,
        "langchain_core",
        "llama_index",
        "haystack",
    )
    for loaded in (after_import, after_encode):
        assert [m for m in loaded if any(m == r or m.startswith(r + ".") for r in roots)] == []
    assert "onnxruntime" not in after_import  # loaded on first Embedder.load, not by import e5rt
