#!/usr/bin/env bash
# sentence-transformers' OpenVINO backend in its own virtualenv: .venv-openvino/
# optimum-intel moves optimum to a newer release than the export stage is tested with, so it stays out of .venv.
# torch is pinned (CPU build); a constraint keeps torchvision from pulling a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv-openvino/bin/python ] || "$PY" -m venv .venv-openvino
.venv-openvino/bin/python -m pip install -q --upgrade pip
.venv-openvino/bin/python -m pip install -q torch==2.13.0
CONSTRAINT=$(mktemp)
trap 'rm -f "$CONSTRAINT"' EXIT
echo "torch==2.13.0" > "$CONSTRAINT"
.venv-openvino/bin/python -m pip install -q -c "$CONSTRAINT" -e '.[cpu,bench]' "optimum-intel[openvino]" nncf sentence-transformers datasets
.venv-openvino/bin/python -c "import openvino, optimum.intel; print('openvino', openvino.__version__)"
