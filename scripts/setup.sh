#!/usr/bin/env bash
# Create .venv with e5rt, its export stage, the server, the integrations, every client package and the test tools:
# one environment (transformers 5 and huggingface_hub >= 1 live together since the export moved to torch.onnx).
# Versions come from the committed lock, constraints.txt (what the suite last passed with; scripts/lock.sh
# refreshes it); pyproject.toml keeps the ranges users install from.
# torch is pinned first: 2.13.0 is the CPU build on this kind of machine; an unpinned torch pulls CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOCK=constraints.txt
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c "$LOCK" torch==2.13.0
.venv/bin/python -m pip install -q -c "$LOCK" -e '.[cpu,export,dev,bench,server,ray,langchain,llama-index,haystack,clients]'
# onnxruntime and onnxruntime-gpu overwrite each other's files; refuse an environment holding both.
.venv/bin/python - <<'PY'
import importlib.metadata as md
found = []
for dist in ("onnxruntime", "onnxruntime-gpu"):
    try:
        found.append(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        pass
if len(found) > 1:
    raise SystemExit(f"both onnxruntime builds are installed ({', '.join(found)}); keep one")
print("e5rt environment ready:", ", ".join(found), "| transformers", md.version("transformers"))
PY
