#!/usr/bin/env bash
# Create .venv with e5rt, its export stage and the test tools.
# torch is pinned first: 2.13.0 is the CPU build on this kind of machine; an unpinned torch pulls CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[cpu,export,dev,bench,server,ray,langchain,llama-index,haystack,clients]'
# huggingface_hub >= 1 clashes with the export stage's transformers pin: its clients get their own venv, which
# the client tests drive as a subprocess (tests/support/hf_clients.py).
[ -x .venv-hf/bin/python ] || "$PY" -m venv .venv-hf
.venv-hf/bin/python -m pip install -q --upgrade pip
.venv-hf/bin/python -m pip install -q -e '.[hf-clients]'
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
print("e5rt environment ready:", ", ".join(found))
PY
