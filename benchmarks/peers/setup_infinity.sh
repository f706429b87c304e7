#!/usr/bin/env bash
# Infinity in its own virtualenv (its pins: numpy<2, sentence-transformers<4, uvicorn 0.32): .venv-infinity/
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv-infinity/bin/python ] || "$PY" -m venv .venv-infinity
.venv-infinity/bin/python -m pip install -q --upgrade pip
.venv-infinity/bin/python -m pip install -q torch==2.13.0
.venv-infinity/bin/python -m pip install -q "infinity-emb[server,torch]"
.venv-infinity/bin/python -c "import infinity_emb; print('infinity', infinity_emb.__version__)"
